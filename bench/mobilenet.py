"""Keras Applications' MobileNetV3Small as a pipeline model, for the device-speed section of `make bench`.

``write(folder)`` writes what `make all CONFIG=folder/edge.toml` needs: 320 seeded synthetic
32x32x3 images of 4 classes (``data.npz``; each class a colour, pixel values 0..255, so the
network has something to learn in two epochs) and the config, whose builder is ``build`` below.
Nothing is downloaded (``weights=None``): the speed of the graph, not the model's accuracy, is
what is measured, so verify only warns when Keras does not beat the trivial baseline.
"""

from __future__ import annotations

from pathlib import Path

SHAPE = (32, 32, 3)
CLASSES = 4
COUNT = 320

CONFIG = f"""\
# Written by bench/mobilenet.py: Keras Applications' MobileNetV3Small, weights=None.
[data]
file = "data.npz"
standardize = false        # the model has its own Rescaling (include_preprocessing)

[task]
kind = "classification"

[model]
builder = "{Path(__file__).resolve()}:build"

[train]
epochs = 2

[verify]
baseline = "warn"          # untrained weights: only the graph's speed is measured

[bundle]
name = "mobilenet_v3_small"
"""


def build(input_shape, num_outputs):
    """MobileNetV3Small (alpha 0.75, its own Rescaling from 0..255) ending in logits, uncompiled."""
    import keras

    return keras.applications.MobileNetV3Small(input_shape=tuple(input_shape), alpha=0.75, weights=None,
                                               classes=num_outputs, include_preprocessing=True,
                                               classifier_activation=None)


def write(folder: Path) -> Path:
    """The data and the config in ``folder``; the config's path."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(COUNT) % CLASSES
    colours = rng.uniform(40, 215, (CLASSES, 3))
    x = colours[y][:, None, None, :] + rng.normal(0, 40, (COUNT, *SHAPE))
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", x=np.clip(x, 0, 255).astype(np.float32), y=y.astype(np.int64))
    (folder / "edge.toml").write_text(CONFIG)
    return folder / "edge.toml"
