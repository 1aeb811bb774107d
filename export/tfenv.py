"""The one place TensorFlow and Keras are imported, quietly, on first use.

Everything that needs them calls ``tensorflow()`` inside the function that needs it,
so `python -m pipeline --help`, config validation, verify and bundle never pay for
(or depend on) importing TensorFlow.
"""

from __future__ import annotations

import os
import sys


def tensorflow():
    """Import and return ``(tf, keras)`` with TensorFlow's C++ and Python logging silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # Keras imports matplotlib.pyplot when it is installed; never let it pick a GUI backend.
    os.environ.setdefault("MPLBACKEND", "Agg")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    # Keras imports matplotlib.pyplot at start-up when it is installed (for its image
    # gallery helpers, which nothing here uses): ~0.5 s of every TensorFlow process.
    # Hide matplotlib during the import; train imports it afterwards for the loss plot.
    hide = "matplotlib" not in sys.modules
    if hide:
        sys.modules["matplotlib"] = None
    try:
        import tensorflow as tf
        import keras
    finally:
        if hide and sys.modules.get("matplotlib", 0) is None:
            del sys.modules["matplotlib"]

    tf.get_logger().setLevel("ERROR")
    return tf, keras
