"""The one place TensorFlow and Keras are imported, quietly, on first use.

Everything that needs them calls ``tensorflow()`` inside the function that needs it,
so `python -m pipeline --help`, config validation, verify and bundle never pay for
(or depend on) importing TensorFlow.
"""

from __future__ import annotations

import os


def tensorflow():
    """Import and return ``(tf, keras)`` with TensorFlow's C++ and Python logging silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # Keras imports matplotlib.pyplot when it is installed; never let it pick a GUI backend.
    os.environ.setdefault("MPLBACKEND", "Agg")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    import tensorflow as tf
    import keras

    tf.get_logger().setLevel("ERROR")
    return tf, keras
