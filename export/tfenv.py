"""The one place TensorFlow and Keras are imported, quietly, on first use.

Everything that needs them calls ``tensorflow()`` inside the function that needs it,
so `python -m pipeline --help`, config validation, verify and bundle never pay for
(or depend on) importing TensorFlow.
"""

from __future__ import annotations

import os
import sys


# What the import reads, unless the environment says otherwise: TensorFlow's C++ logging
# silenced; Keras on TensorFlow; and since Keras imports matplotlib.pyplot when it is installed,
# never a GUI backend for it.
DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "MPLBACKEND": "Agg"}


def tensorflow():
    """Import and return ``(tf, keras)`` with TensorFlow's C++ and Python logging silenced."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    # Keras imports matplotlib.pyplot at start-up when it is installed (for its image
    # gallery helpers, which nothing here uses): ~0.5 s of every TensorFlow process; and
    # scikit-learn (its wrappers; the venv has it for examples/make_data.py): ~1 s more.
    # Hide both during the import; train imports matplotlib afterwards for the loss plot.
    hidden = [m for m in ("matplotlib", "sklearn") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None
    try:
        import tensorflow as tf
        import keras
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]

    tf.get_logger().setLevel("ERROR")
    return tf, keras
