"""The PNGs: the loss curve (build/train/loss.png, from history.json) and verify's two plots
(from build/verify/plots.npz). matplotlib only, no TensorFlow.

- ``train/loss.png``: the training loss per epoch (log scale), the validation loss and metric
  beside it; a regression's least-squares line through the training rows as a dashed line
  (for mean squared error the best any linear model can do).
- ``verify/validation.png``: the float32 ONNX model on the validation rows: a classifier's
  confusion matrix; a regression's error per row against the labels (against the input when
  the model has one feature, else against the target), every model, log scale.
- ``verify/accuracy-vs-size.png``: every model's accuracy (or MAE) against its file size.

Its own step (`python -m pipeline plot`) so that make can draw them on the second core while
the next stage runs: matplotlib's import and drawing cost ~0.5 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import fsutil
from .errors import StageInputError
from .layout import Layout


def _figure(width: float = 7, cols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, cols)


def _save(fig, dest: Path, right: float = 0.97) -> None:
    fig.subplots_adjust(left=0.11, right=right, bottom=0.14, top=0.9, wspace=0.3)  # tight_layout costs 0.3 s
    with fsutil.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def plot_loss(history: dict, dest: Path) -> None:
    """Draw the loss curve into ``dest`` as a PNG (no timestamp in the file)."""
    _save(loss_figure(history), dest)


def loss_figure(history: dict):
    """Training loss per epoch, with the least-squares line if recorded; validation beside it."""
    fig, (ax, bx) = _figure(9, 2)
    if history.get("came_trained"):
        ax.set_title("The model came trained: no training ran", fontsize=10)
        return fig
    losses = np.asarray(history["loss"], np.float64)
    epochs = np.arange(1, len(losses) + 1)
    ax.plot(epochs, losses, lw=1.2, label="training")
    if len(history.get("val_loss") or []) == len(losses):
        ax.plot(epochs, history["val_loss"], lw=1.2, label="validation")
    title = f"Loss per epoch; final {losses[-1]:.6g}"
    optimum = (history.get("least_squares") or {}).get("loss")
    if optimum is not None and optimum > 0:
        ax.axhline(optimum, color="tab:red", ls="--", lw=1, label=f"least-squares line: {optimum:.6g}")
        ratio = losses[-1] / optimum  # the float32 loss may sit a rounding below the float64 optimum
        title += (f"; {ratio:.3g}x the least-squares line's" if ratio >= 1.01
                  else f"; at the least-squares line's (relative gap {ratio - 1:+.1g})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch" + (" (one full-batch step)" if history.get("batch_size") == "all" else ""))
    ax.set_ylabel(f"{history.get('loss_name', 'loss').replace('_', ' ')} (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    metric = history.get("metric", "metric")
    for key, label in ((metric, "training"), ("val_" + metric, "validation")):
        values = history.get(key) or []
        if values:
            x = epochs[-len(values):]
            bx.plot(x, values, "o" if len(values) == 1 else "-", label=label)
    bx.set_xlabel("epoch")
    bx.set_ylabel(metric)
    last = (history.get("val_" + metric) or [float("nan")])[-1]
    bx.set_title(f"{metric} per epoch; validation {last:.4g}", fontsize=9)
    bx.legend(fontsize=8)
    bx.grid(True, alpha=0.3)
    return fig


def _read(src: Path, what: str, loader):
    try:
        return loader(src)
    except FileNotFoundError:
        raise StageInputError(src, "not found", f"run `make {what}` first") from None
    except (OSError, ValueError) as e:
        raise StageInputError(src, f"unreadable: {e}", f"re-run {what}") from None


def run_loss(layout: Layout) -> Path:
    history = _read(layout.history, "train", lambda p: json.loads(p.read_text()))
    if not isinstance(history, dict) or not (history.get("loss") or history.get("came_trained")):
        raise StageInputError(layout.history, "no 'loss' list in it", "re-run train")
    plot_loss(history, layout.loss_png)
    return layout.loss_png


def _load_npz(p: Path) -> dict[str, np.ndarray]:
    with np.load(p) as z:
        return {k: z[k] for k in z.files}


def run_verify(layout: Layout) -> list[Path]:
    """validation.png and accuracy-vs-size.png from build/verify/plots.npz."""
    d = _read(layout.plots_npz, "verify", _load_npz)
    task = str(d["task"])
    fig, ax = _figure()
    if task == "classification":
        cm, labels = d["confusion"], [str(v) for v in d["labels"]]
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix, onnx-fp32 on {int(cm.sum())} validation rows "
                     f"(accuracy {np.trace(cm) / cm.sum():.2%})", fontsize=10)
        _save(fig, layout.validation_png)
    else:
        y = d["y_val"].astype(np.float64).reshape(len(d["y_val"]), -1)  # (n, targets)
        x = d["x_val"].astype(np.float64) if d["x_val"].size else y[:, 0]
        order = np.argsort(x, kind="stable")
        for key in sorted(k for k in d if k.startswith("val_")):
            err = np.abs(d[key].astype(np.float64).reshape(y.shape) - y).max(axis=1)  # the worst target's
            ax.plot(x[order], np.maximum(err[order], 1e-6), "k--" if key == "val_keras" else "-", lw=1,
                    label=key[4:])
        ax.set_yscale("log")
        ax.set_xlabel("input" if d["x_val"].size else "target" if y.shape[1] == 1 else "first target")
        ax.set_ylabel("|prediction - label| (log scale)" if y.shape[1] == 1
                      else f"largest |prediction - label| of {y.shape[1]} targets (log)")
        ax.set_title(f"Error on the {len(y)} validation rows, batch 1", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        _save(fig, layout.validation_png, right=0.75)
    metric = "accuracy" if task == "classification" else "MAE"
    fig, ax = _figure()
    for name, size, score in zip(d["names"], d["size_bytes"], d["score"]):
        ax.plot(size, score, "o", label=str(name))
    ax.axhline(float(d["keras_score"]), color="k", ls="--", lw=1, label="keras")
    ax.set_xscale("log")
    ax.set_xlabel("file size (bytes, log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} on the validation rows against model size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    _save(fig, layout.accuracy_size_png, right=0.75)
    return [layout.validation_png, layout.accuracy_size_png]
