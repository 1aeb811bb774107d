"""Stage 2, export: build/model.keras -> build/model.onnx, build/model.tflite, build/reference.npz.

``reference.npz`` holds the probe inputs verify uses and the Keras model's outputs for
them (the reference), computed here while TensorFlow is loaded anyway, so that verify
and everything after it run without importing TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from export.tfenv import tensorflow
from runtime.manifest import sha256_file

from . import fsutil, probes
from .errors import OutputError, StageInputError
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


def calibration_inputs(cfg: dict[str, Any]) -> np.ndarray:
    """The calibration set: the training inputs, or calibration_points over the working range."""
    from .verify import input_range

    v = cfg["variants"]
    if v["calibration"] == "training":
        return np.asarray(cfg["data"]["celsius"], np.float32)
    return np.linspace(*input_range(cfg), v["calibration_points"]).astype(np.float32)


def build_variants(cfg: dict[str, Any], saved: Path, onnx_model) -> dict[str, bytes | str]:
    """name -> the variant's bytes, or the converter's one-line reason it was not built."""
    from export import variants as V

    cal = calibration_inputs(cfg)
    out: dict[str, bytes | str] = {}
    for name in V.VARIANTS:
        if name not in cfg["variants"]:
            continue
        try:
            if V.fmt(name) == "onnx":
                out[name] = V.build_onnx(name, onnx_model, cal, INPUT_NAME).SerializeToString()
            else:
                out[name] = V.build_tflite(name, saved, cal)
        except V.VariantNotBuilt as e:
            out[name] = str(e)
    return out


def write_variants(build: Path, variants: dict[str, bytes | str], cfg: dict[str, Any]) -> dict[str, Any]:
    """build/variants/<name>.onnx|.tflite and index.json (what was built, or why not); stale files removed."""
    from export import variants as V

    folder = build / "variants"
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"calibration": cfg["variants"]["calibration"],
                             "calibration_inputs": int(calibration_inputs(cfg).size), "variants": {}}
    keep = {"index.json"}
    for name, data in variants.items():
        if isinstance(data, bytes):
            file = name + V.suffix(name)
            fsutil.write_bytes(folder / file, data)
            keep.add(file)
            index["variants"][name] = {"built": True, "file": file, "bytes": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()}
        else:
            index["variants"][name] = {"built": False, "reason": data}
    for stale in folder.iterdir():
        if stale.name not in keep and stale.is_file():
            stale.unlink()
    fsutil.write_json(folder / "index.json", index)
    return index


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
            variants = build_variants(cfg, saved, onnx_model)
    except tf.errors.OpError as e:  # TensorFlow's own I/O errors (disk full, read-only folder)
        raise OutputError(build, e.message.splitlines()[0] if e.message else type(e).__name__) from None

    ref = reference_arrays(cfg, model)
    ref["keras_sha256"] = np.array(sha256_file(keras_path))
    buf = io.BytesIO()
    np.savez(buf, **ref)
    fsutil.write_bytes(build / "reference.npz", buf.getvalue())
    fsutil.write_bytes(build / "model.tflite", tflite_bytes)
    fsutil.write_bytes(build / "model.onnx", onnx_model.SerializeToString())
    index = write_variants(build, variants, cfg)
    return {
        "variants": index["variants"],
        "onnx": onnx_export.describe(onnx_model),
        "onnx_bytes": onnx_model.ByteSize(),
        "tflite_bytes": len(tflite_bytes),
        "probes": int(ref["x"].size),
    }
