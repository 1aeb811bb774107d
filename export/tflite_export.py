"""Keras SavedModel -> float32 TFLite flatbuffer, builtin ops only.

Builtin ops only: an op the device's runtime lacks fails here, at conversion, not on the
device. A model that would need Select TF ops (a loop of its own over a TensorList, a matrix
inverse) fails with one line naming the op and the layer it comes from (``converter_failure``).
Keras's recurrent layers arrive here unrolled (export/recurrent.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
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
        with _diagnostics_held():
            return converter.convert()
    except Exception as e:  # ConverterError and friends: the message is MLIR diagnostics
        raise ExportError(converter_failure(str(e))) from None


@contextlib.contextmanager
def _diagnostics_held():
    """Keep the converter's own MLIR diagnostics off fd 2 (it prints them from C++ and raises
    them in the ConverterError too, which ``converter_failure`` sums up in one line)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# 'loc(fused["TensorListReserve:", "functional_1/lstm_1/TensorArrayV2_1@__inference_..."])'
_LOC = re.compile(r'fused\["(?P<op>[A-Za-z0-9_]+):"\s*,\s*"(?P<path>[^"@]+)')
_OP = re.compile(r"'tf\.(?P<op>[A-Za-z0-9_]+)' op (?P<why>[^\n]*)")


def converter_failure(text: str) -> str:
    """One line from the TFLite converter's diagnostics: the first unsupported op, its layer, why."""
    op, loc = _OP.search(text), _LOC.search(text)
    if op:
        layer = ""
        if loc:
            parts = [p for p in loc.group("path").split("/") if p]
            name = parts[-2] if len(parts) > 1 else parts[0]  # model/.../layer/op: the op's own layer
            layer = f" in layer {re.sub(r'_[0-9]+$', '', name)!r}"
        why = op.group("why").split(": error")[0].strip().rstrip(".")
        return (f"export: TFLite needs Select TF ops for tf.{op.group('op')}{layer} ({why}), which the device's "
                "builtin-ops runtime lacks; expected a model of builtin ops only (Keras's LSTM, GRU and SimpleRNN layers "
                "are unrolled for it; a loop of the model's own is not)")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "conversion failed")
    return f"export: TFLite conversion failed: {first[:300]}"
