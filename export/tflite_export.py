"""Keras SavedModel -> float32 TFLite flatbuffer, builtin ops only.

Builtin ops only: an op the device's runtime lacks fails here, at conversion, not on the device.
"""

from __future__ import annotations

from pathlib import Path


def convert(savedmodel_dir: Path) -> bytes:
    """Return the .tflite bytes for the SavedModel's serving signature (float32, no quantization)."""
    from export.tfenv import tensorflow

    tf, _ = tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    return converter.convert()
