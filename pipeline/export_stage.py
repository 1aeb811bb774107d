"""Stage 2, export: build/model.keras -> build/model.onnx, build/model.tflite, build/reference.npz.

``reference.npz`` holds the probe inputs verify uses and the Keras model's outputs for
them (the reference), computed here while TensorFlow is loaded anyway, so that verify
and everything after it run without importing TensorFlow.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import fsutil, probes
from .errors import OutputError, StageInputError
from .tfenv import tensorflow
from .train import INPUT_NAME, OUTPUT_NAME


def load_keras_model(path: Path):
    if not Path(path).is_file():
        raise StageInputError(path, "not found", "run `make train` or `python -m pipeline train` first")
    _, keras = tensorflow()
    try:
        return keras.models.load_model(path)
    except Exception as e:  # keras raises many types for a bad archive
        raise StageInputError(path, f"cannot load Keras model: {e}") from None


def keras_predict(model, x: np.ndarray) -> np.ndarray:
    """The model's float32 outputs, shape (n,), for inputs of shape (n,)."""
    tf, _ = tensorflow()
    y = model(tf.constant(np.asarray(x, np.float32).reshape(-1, 1)), training=False)
    return np.asarray(y, dtype=np.float32).reshape(-1)


def reference_arrays(cfg: dict[str, Any], model) -> dict[str, np.ndarray]:
    groups = probes.parity_probes(cfg)
    x = np.concatenate(list(groups.values()))
    group = np.concatenate([np.full(len(v), i, np.int8) for i, v in enumerate(groups.values())])
    acc_x = probes.accuracy_grid(cfg)
    return {
        "x": x,
        "group": group,
        "group_names": np.array(list(groups)),
        "keras_y": keras_predict(model, x),
        "accuracy_x": acc_x,
        "keras_accuracy_y": keras_predict(model, acc_x),
    }


def run(cfg: dict[str, Any], build: Path) -> dict[str, Any]:
    from export import keras3_savedmodel, onnx_export, tflite_export

    build = Path(build)
    keras_path = build / "model.keras"
    model = load_keras_model(keras_path)
    tf, _ = tensorflow()
    try:
        with tempfile.TemporaryDirectory(prefix=fsutil.temp_prefix("export"), dir=build) as tmp:
            saved = keras3_savedmodel.write_savedmodel(model, Path(tmp) / "savedmodel", INPUT_NAME, OUTPUT_NAME)
            onnx_model = onnx_export.convert(
                saved, INPUT_NAME, OUTPUT_NAME, cfg["export"]["opset"], cfg["export"]["ir_version"]
            )
            tflite_bytes = tflite_export.convert(saved)
    except tf.errors.OpError as e:  # TensorFlow's own I/O errors (disk full, read-only folder)
        raise OutputError(build, e.message.splitlines()[0] if e.message else type(e).__name__) from None

    ref = reference_arrays(cfg, model)
    ref["keras_sha256"] = np.array(fsutil.sha256_file(keras_path))
    buf = io.BytesIO()
    np.savez(buf, **ref)
    fsutil.write_bytes(build / "reference.npz", buf.getvalue())
    fsutil.write_bytes(build / "model.tflite", tflite_bytes)
    fsutil.write_bytes(build / "model.onnx", onnx_model.SerializeToString())
    return {
        "onnx": onnx_export.describe(onnx_model),
        "onnx_bytes": onnx_model.ByteSize(),
        "tflite_bytes": len(tflite_bytes),
        "probes": int(ref["x"].size),
    }
