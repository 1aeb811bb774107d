"""Stage 2, export: build/model.keras -> build/model.onnx, build/model.tflite, build/variants/,
build/reference.npz.

``reference.npz`` holds the probe inputs verify uses and the Keras model's outputs for
them (the reference, pipeline/reference.py), computed here while TensorFlow is loaded
anyway, so that verify and everything after it run without importing TensorFlow.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from export.tfenv import tensorflow
from runtime.manifest import sha256_file

from . import fsutil, probes, reference
from .errors import OutputError, StageInputError
from .layout import Layout
from .names import INPUT_NAME, OUTPUT_NAME


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


def keras_outputs(model, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The model's float32 outputs (n, *out) for inputs (n, *shape), ``chunk`` rows at a time."""
    tf, _ = tensorflow()
    parts = [np.asarray(model(tf.constant(x[i:i + chunk]), training=False), np.float32)
             for i in range(0, len(x), chunk)]
    return np.concatenate(parts)


def calibration_inputs(cfg: dict[str, Any], ds=None) -> np.ndarray:
    """The calibration set: the training inputs, or calibration_points over the working range;
    in dataset mode a seeded sample of training rows."""
    if ds is not None:
        return probes.calibration_rows(cfg, ds)
    v = cfg["variants"]
    if v["calibration"] == "training":
        return np.asarray(cfg["data"]["celsius"], np.float32)
    return np.linspace(*probes.working_range(cfg), v["calibration_points"]).astype(np.float32)


def build_variants(cfg: dict[str, Any], saved: Path, onnx_model, ds=None, input_name: str = INPUT_NAME
                   ) -> dict[str, bytes | str]:
    """name -> the variant's bytes, or the converter's one-line reason it was not built."""
    from export import variants as V

    cal = calibration_inputs(cfg, ds)
    out: dict[str, bytes | str] = {}
    for name in V.VARIANTS:
        if name not in cfg["variants"]:
            continue
        try:
            if V.fmt(name) == "onnx":
                out[name] = V.build_onnx(name, onnx_model, cal, input_name, keep_input_float=ds is not None,
                                         reduce_range=ds is not None).SerializeToString()
            else:
                out[name] = V.build_tflite(name, saved, cal)
        except V.VariantNotBuilt as e:
            out[name] = str(e)
    return out


def write_variants(layout: Layout, variants: dict[str, bytes | str], cfg: dict[str, Any], ds=None) -> dict[str, Any]:
    """build/variants/<name>.onnx|.tflite and index.json (what was built, or why not); stale files removed."""
    folder = layout.variants_dir
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"calibration": cfg["variants"].get("calibration", "training rows"),
                             "calibration_inputs": int(len(calibration_inputs(cfg, ds))), "variants": {}}
    keep = {layout.variants_index.name}
    for name, data in variants.items():
        if isinstance(data, bytes):
            path = layout.variant(name)
            file = path.name
            fsutil.write_bytes(path, data)
            keep.add(file)
            index["variants"][name] = {"built": True, "file": file, "bytes": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()}
        else:
            index["variants"][name] = {"built": False, "reason": data}
    for stale in folder.iterdir():
        if stale.name not in keep and stale.is_file():
            stale.unlink()
    fsutil.write_json(layout.variants_index, index)
    return index


def run(cfg: dict[str, Any], layout: Layout) -> dict[str, Any]:
    from export import keras3_savedmodel, onnx_export, tflite_export

    from .config import is_dataset

    ds = None
    names = (INPUT_NAME, OUTPUT_NAME)
    if is_dataset(cfg):
        from . import dataset, keras_model

        ds = dataset.load(cfg)  # before TensorFlow: bad data is refused in milliseconds
        names = (keras_model.INPUT_NAME, keras_model.OUTPUT_NAME)
    build = layout.build
    model = load_keras_model(layout.model_keras)
    tf, _ = tensorflow()
    try:
        with tempfile.TemporaryDirectory(prefix=fsutil.temp_prefix("export"), dir=build) as tmp:
            saved = keras3_savedmodel.write_savedmodel(model, Path(tmp) / "savedmodel", *names)
            # TFLite first: its refusal names the op and the layer (an LSTM's TensorListReserve),
            # where tf2onnx passes such an op through and only the checker refuses the graph.
            tflite_bytes = tflite_export.convert(saved)
            onnx_model = onnx_export.convert(saved, *names, cfg["export"]["opset"], cfg["export"]["ir_version"],
                                             short_names=ds is not None)
            variants = build_variants(cfg, saved, onnx_model, ds, names[0])
    except tf.errors.OpError as e:  # TensorFlow's own I/O errors (disk full, read-only folder)
        raise OutputError(build, e.message.splitlines()[0] if e.message else type(e).__name__) from None

    keras_sha = sha256_file(layout.model_keras)
    if ds is None:
        ref = reference.arrays(cfg, lambda x: keras_predict(model, x), keras_sha)
    else:
        ref = reference.dataset_arrays(cfg, ds, lambda x: keras_outputs(model, x), keras_sha)
    reference.save(layout.reference, ref)
    fsutil.write_bytes(layout.model_tflite, tflite_bytes)
    fsutil.write_bytes(layout.model_onnx, onnx_model.SerializeToString())
    index = write_variants(layout, variants, cfg, ds)
    return {
        "variants": index["variants"],
        "onnx": onnx_export.describe(onnx_model),
        "onnx_bytes": onnx_model.ByteSize(),
        "tflite_bytes": len(tflite_bytes),
        "probes": int(len(ref["x"])),
    }
