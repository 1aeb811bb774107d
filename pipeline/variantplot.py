"""The variants' plots, from build/verify/variants.npz (written by verify). matplotlib only.

- ``variants-error.png``: |model - F = 1.8 C + 32| in degF against the input, over the
  working range, one line per model at batch 1, log scale: a full-integer model's clamping
  outside its calibration range shows as a wall.
- ``variants-ulp.png``: for the float models (fp32 and fp16), how many float32 steps each
  output is from Keras's, against the input.

In dataset mode (``mode`` in the npz, verify_dataset.py) the same two files hold the task's
pictures: ``variants-error.png`` the confusion matrix of the float32 ONNX model on the
validation rows (classification) or its prediction against the target (regression), and
``variants-ulp.png`` every model's accuracy (or MAE) against its size in bytes.

Drawn by `python -m pipeline plot` (make draws it on the second core, as the loss plot).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import fsutil
from .errors import StageInputError
from .layout import Layout
from .numerics import ulp_distance
from .probes import fahrenheit


def _figure(title: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("input (degC)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _save(fig, dest: Path) -> None:
    fig.subplots_adjust(left=0.11, right=0.72, bottom=0.13, top=0.9)
    with fsutil.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def run(layout: Layout) -> list[Path]:
    src = layout.variants_npz
    try:
        with np.load(src) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise StageInputError(src, "not found", "run `make verify` first") from None
    except (OSError, ValueError) as e:
        raise StageInputError(src, f"unreadable: {e}", "re-run verify") from None
    if "mode" in data:
        return dataset_plots(layout, data)
    x, keras = data.pop("x"), data.pop("keras")
    exact = fahrenheit(x)
    out = []
    fig, ax = _figure("Error against F = 1.8 C + 32, batch 1", "|error| (degF, log scale)")
    for name, y in sorted(data.items()):
        ax.plot(x, np.maximum(np.abs(y.astype(np.float64) - exact), 1e-6), lw=1, label=name)
    ax.plot(x, np.maximum(np.abs(keras.astype(np.float64) - exact), 1e-6), "k--", lw=1, label="keras")
    ax.set_yscale("log")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    dest = layout.variants_error_png
    _save(fig, dest)
    out.append(dest)
    fig, ax = _figure("Float models against Keras, batch 1", "distance from Keras (float32 ulps, symlog)")
    for name, y in sorted(data.items()):
        if "int8" not in name:
            ax.plot(x, ulp_distance(y, keras), ".", ms=2, label=name)
    ax.set_yscale("symlog", linthresh=1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    dest = layout.variants_ulp_png
    _save(fig, dest)
    out.append(dest)
    return out


def dataset_plots(layout: Layout, d: dict[str, np.ndarray]) -> list[Path]:
    """Dataset mode: the task's error picture and accuracy (or MAE) against size, per model."""
    task = str(d["task"])
    fig, ax = _figure("", "")
    if task == "classification":
        cm, labels = d["confusion"], [str(v) for v in d["labels"]]
        ax.grid(False)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix, onnx-fp32 on {int(cm.sum())} validation rows "
                     f"(accuracy {np.trace(cm) / cm.sum():.2%})", fontsize=10)
    else:
        y, pred = d["y_val"].astype(np.float64), d["pred_val"].astype(np.float64)
        ax.plot(y, pred - y, ".", ms=4)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("target")
        ax.set_ylabel("prediction - target")
        ax.set_title(f"onnx-fp32 error against the target, {len(y)} validation rows "
                     f"(MAE {np.abs(pred - y).mean():.4g})", fontsize=10)
    _save(fig, layout.variants_error_png)
    metric = "accuracy" if task == "classification" else "MAE"
    fig, ax = _figure(f"{metric} on the validation rows against model size", metric)
    ax.set_xlabel("file size (bytes, log scale)")
    for name, size, score in zip(d["names"], d["size_bytes"], d["score"]):
        ax.plot(size, score, "o", label=str(name))
    ax.axhline(float(d["keras_score"]), color="k", ls="--", lw=1, label="keras")
    ax.set_xscale("log")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    _save(fig, layout.variants_ulp_png)
    return [layout.variants_error_png, layout.variants_ulp_png]
