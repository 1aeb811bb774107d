"""The variants' plots, from build/verify/variants.npz (written by verify). matplotlib only.

- ``variants-error.png``: |model - F = 1.8 C + 32| in degF against the input, over the
  working range, one line per model at batch 1, log scale: a full-integer model's clamping
  outside its calibration range shows as a wall.
- ``variants-ulp.png``: for the float models (fp32 and fp16), how many float32 steps each
  output is from Keras's, against the input.

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
