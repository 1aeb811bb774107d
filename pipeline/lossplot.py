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
from .layout import Layout


def plot_loss(history: dict, dest: Path) -> None:
    """Draw the loss curve into ``dest`` as a PNG (no timestamp in the file)."""
    fig = loss_figure(history)
    with fsutil.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def loss_figure(history: dict):
    """The loss of every step (history.json's ``loss``) on a log scale, as a matplotlib Figure.

    A dashed line marks the loss of the least-squares line through the training data:
    for mean squared error the best any line can do, so the gap between the curve's
    end and it is how far training stopped from the optimum.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "epochs" in history:
        return epoch_figure(history)
    losses = np.asarray(history["loss"], dtype=np.float64)
    name = history.get("loss_name", "loss").replace("_", " ")
    optimum = (history.get("least_squares") or {}).get("loss")
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1.2, label="training loss")
    title = f"Loss per step; final {losses[-1]:.6g}"
    if optimum is not None and optimum > 0:
        ax.axhline(optimum, color="tab:red", ls="--", lw=1, label=f"least-squares line: {optimum:.6g}")
        ratio = losses[-1] / optimum  # the float32 loss may sit a rounding below the float64 optimum
        title += (f"; {ratio:.3g}x the least-squares line's" if ratio >= 1.01
                  else f"; at the least-squares line's (relative gap {ratio - 1:+.1g})")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("step (full batch)")
    ax.set_ylabel(f"{name} (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)  # tight_layout costs 0.3 s
    return fig


def epoch_figure(history: dict):
    """Dataset mode: training and validation loss per epoch, and the validation metric beside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2)
    if history.get("came_trained"):
        ax.set_title("The model came trained: no training ran", fontsize=10)
        return fig
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label="training")
    if history.get("val_loss"):
        ax.plot(epochs, history["val_loss"], label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{history.get('loss_name', 'loss').replace('_', ' ')} (log scale)")
    ax.set_title(f"Loss per epoch; final {history['loss'][-1]:.4g}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    metric = history.get("metric", "metric")
    for key, label in ((metric, "training"), ("val_" + metric, "validation")):
        if history.get(key):
            bx.plot(epochs, history[key], label=label)
    bx.set_xlabel("epoch")
    bx.set_ylabel(metric)
    last = (history.get("val_" + metric) or [float("nan")])[-1]
    bx.set_title(f"{metric} per epoch; validation {last:.4g}", fontsize=10)
    bx.legend(fontsize=8)
    bx.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
    return fig


def run(layout: Layout) -> Path:
    src = layout.history
    try:
        history = json.loads(src.read_text())
    except FileNotFoundError:
        raise StageInputError(src, "not found", "run `make train` or `python -m pipeline train` first") from None
    except (OSError, ValueError) as e:
        raise StageInputError(src, f"unreadable: {e}", "re-run train") from None
    if not isinstance(history, dict) or not (history.get("loss") or history.get("came_trained")):
        raise StageInputError(src, "no 'loss' list in it", "re-run train")
    dest = layout.loss_png
    plot_loss(history, dest)
    return dest
