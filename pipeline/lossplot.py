"""The loss-curve PNG, from build/train/history.json. matplotlib only, no TensorFlow.

Its own step (`python -m pipeline plot`) so that make can draw it on the second core
while export runs: matplotlib's import and drawing cost ~0.5 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import fsutil
from .errors import StageInputError


def plot_loss(losses, dest: Path) -> None:
    """Draw the loss of every step on a log scale into ``dest`` (no timestamp in the file)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = np.asarray(losses, dtype=np.float64)
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step (full batch)")
    ax.set_ylabel("training loss")
    ax.set_title(f"Loss per step; final {losses[-1]:.6g}")
    ax.grid(True, which="both", alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)  # tight_layout costs 0.3 s
    with fsutil.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def run(build: Path) -> Path:
    src = Path(build) / "train" / "history.json"
    try:
        losses = json.loads(src.read_text())["loss"]
    except FileNotFoundError:
        raise StageInputError(src, "not found", "run `make train` or `python -m pipeline train` first") from None
    except (OSError, ValueError, KeyError) as e:
        raise StageInputError(src, f"unreadable: {e}", "re-run train") from None
    dest = Path(build) / "train" / "loss.png"
    plot_loss(losses, dest)
    return dest
