"""Keras SavedModel -> float32 TFLite flatbuffer, builtin ops only.

Builtin ops only: an op the device's runtime lacks fails here, at conversion, not on the
device. A model that would need Select TF ops (a Keras 3 LSTM often does) fails with one
line naming the op and the layer it comes from (``converter_failure``).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ExportError


def convert(savedmodel_dir: Path) -> bytes:
    """Return the .tflite bytes for the SavedModel's serving signature (float32, no quantization)."""
    from export.tfenv import tensorflow

    tf, _ = tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    try:
        return converter.convert()
    except Exception as e:  # ConverterError and friends: the message is MLIR diagnostics
        raise ExportError(converter_failure(str(e))) from None


# 'loc(fused["TensorListReserve:", "edge_model_1/lstm_1/TensorListReserve@__inference_..."])'
_LOC = re.compile(r'"(?P<op>[A-Za-z0-9_]+):"\s*,\s*"(?P<path>[^"@]+)')
_OPS = re.compile(r"'tf\.(?P<op>[A-Za-z0-9_]+)' op is neither a custom op nor a flex op")


def converter_failure(text: str) -> str:
    """One line from the TFLite converter's diagnostics: the first unsupported op and its layer."""
    op = _OPS.search(text)
    loc = _LOC.search(text)
    if op or "Select TF" in text or "flex op" in text:
        name = op.group("op") if op else (loc.group("op") if loc else "an op")
        layer = ""
        if loc:
            parts = [p for p in loc.group("path").split("/") if p]
            layer = f" (layer {'/'.join(parts[1:-1]) or parts[0]})" if parts else ""
        return (f"export: TFLite: op {name}{layer} needs Select TF ops, which the device's builtin-ops "
                "runtime lacks; expected a model of builtin ops only (e.g. unroll the RNN or use Conv1D/Dense)")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("<unknown>", "loc("))]
    first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "conversion failed")
    return f"export: TFLite conversion failed: {first[:300]}"
