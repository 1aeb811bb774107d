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


def load_keras_model(path: Path):
    if not Path(path).is_file():
        raise StageInputError(path, "not found", "run `make train` or `python -m pipeline train` first")
    _, keras = tensorflow()
    try:
        return keras.models.load_model(path)
    except Exception as e:  # keras raises many types for a bad archive
        raise StageInputError(path, f"cannot load Keras model: {e}") from None


def keras_outputs(model, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The model's float32 outputs (n, *out) for inputs (n, *shape), ``chunk`` rows at a time."""
    tf, _ = tensorflow()
    parts = [np.asarray(model(tf.constant(x[i:i + chunk]), training=False), np.float32)
             for i in range(0, len(x), chunk)]
    return np.concatenate(parts)


def tensor_outputs(model, x: dict[str, np.ndarray], chunk: int = 1024) -> dict[str, np.ndarray]:
    """``keras_outputs`` for a model of several inputs or outputs: float32 outputs by name."""
    from . import keras_model

    n = len(next(iter(x.values())))
    parts = [keras_model.outputs_of(model, {k: v[i:i + chunk] for k, v in x.items()}) for i in range(0, n, chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in model.output_names}


def build_variants(cfg: dict[str, Any], saved: Path, onnx_model, calibration, input_name: str | list[str],
                   fmt: str | None = None, given: dict[str, bytes | str] | None = None) -> dict[str, bytes | str]:
    """name -> the variant's bytes, or the converter's one-line reason it was not built: the
    variants of format ``fmt`` (None: all) the config lists, those in ``given`` as given."""
    from export import variants as V

    out: dict[str, bytes | str] = {}
    for name in V.VARIANTS:
        if name not in cfg["variants"] or (fmt is not None and V.fmt(name) != fmt):
            continue
        if given is not None and name in given:
            out[name] = given[name]
            continue
        try:
            if V.fmt(name) == "onnx":
                out[name] = V.build_onnx(name, onnx_model, calibration, input_name).SerializeToString()
            else:
                out[name] = V.build_tflite(name, saved, calibration)
        except V.VariantNotBuilt as e:
            out[name] = str(e)
    return out


def write_variants(layout: Layout, variants: dict[str, bytes | str], cfg: dict[str, Any], calibration: np.ndarray,
                   graph_pass: dict[str, Any] | None = None) -> dict[str, Any]:
    """build/variants/<name>.onnx|.tflite and index.json (what was built, or why not, and the ONNX
    graph pass's record: model.onnx and the ONNX variants built from it); stale files removed."""
    folder = layout.variants_dir
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"calibration": cfg["variants"]["calibration"],
                             "calibration_inputs": int(len(next(iter(calibration.values())) if isinstance(
                                 calibration, dict) else calibration)), "graph_pass": graph_pass, "variants": {}}
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


def run(cfg: dict[str, Any], layout: Layout, worker=None, model=None, kind: str | None = None, ds=None
        ) -> dict[str, Any]:
    """Export build/model.keras (``model``: the one train just saved there, in memory, and
    ``kind`` its output kind as train found it). ``worker``: a tflite_worker.Worker already
    started (by train, before TensorFlow was imported); else one is started here if it helps.
    ``ds``: the config's data, already read and checked (else it is read here)."""
    from . import dataset, tflite_worker

    ds = ds if ds is not None else dataset.load(cfg)  # before TensorFlow: bad data is refused in milliseconds
    worker = worker or tflite_worker.start(cfg)
    try:
        return _export(cfg, layout, ds, worker, model, kind)
    finally:
        if worker is not None:
            worker.close()


def _export(cfg: dict[str, Any], layout: Layout, ds, worker, model, kind: str | None) -> dict[str, Any]:
    from export import keras3_savedmodel, onnx_export, recurrent, tflite_export

    from . import keras_model, tflite_worker

    build = layout.build
    model = model if model is not None else load_keras_model(layout.model_keras)
    tf, _ = tensorflow()
    if ds.multi:
        # Every tensor named as the Keras model (and the data) names it, and bound by that name.
        names = keras3_savedmodel.tensor_names(model)
        calibration = probes.calibration_feeds(cfg, ds)
        keras_outputs_of = keras_model.outputs_of

        def reference_of(m):
            return reference.tensor_arrays(cfg, ds, lambda x: tensor_outputs(m, x), sha256_file(layout.model_keras),
                                           kind or keras_model.output_kinds(m, ds))
    else:
        names = (cfg["model"]["input_name"], cfg["model"]["output_name"])
        calibration = probes.calibration_rows(cfg, ds)
        keras_outputs_of = keras_outputs

        def reference_of(m):
            return reference.arrays(cfg, ds, lambda x: keras_outputs(m, x), sha256_file(layout.model_keras),
                                    kind or keras_model.output_kind(m, ds))
    try:
        with tempfile.TemporaryDirectory(prefix=fsutil.temp_prefix("export"), dir=build) as tmp:
            saved = keras3_savedmodel.write_savedmodel(model, Path(tmp) / "savedmodel", *names)
            # Recurrent layers: TFLite (float32 and its variants) from a copy unrolled over the
            # time steps, builtin ops only, once it is shown to compute the same outputs.
            clone = recurrent.unrolled(model)
            unrolled = None
            if clone is not None:
                recurrent.check_same(model, clone, calibration, keras_outputs_of)
                unrolled = keras3_savedmodel.write_savedmodel(clone, Path(tmp) / "unrolled", *names)
            tflite_saved = unrolled or saved
            if worker is not None:
                worker.submit(tflite_saved, calibration, tflite_worker.variants(cfg), Path(tmp) / "worker")
            # TFLite first: its refusal names the op and the layer (a TensorListReserve), where
            # tf2onnx passes such an op through and only the checker refuses the graph.
            tflite_bytes = tflite_export.convert(tflite_saved)
            onnx_model, graph_pass = onnx_export.convert(saved, *names, cfg["export"]["opset"],
                                                         cfg["export"]["ir_version"], unrolled=unrolled)
            variants = build_variants(cfg, tflite_saved, onnx_model, calibration, names[0],
                                      "onnx" if worker else None)
            ref = reference_of(model)
            from_worker = None
            if worker is not None:  # its TFLite variants; any it did not deliver are built here
                delivered = worker.result()
                from_worker = len(delivered or {})
                variants.update(build_variants(cfg, tflite_saved, onnx_model, calibration, names[0], "tflite",
                                               delivered))
    except tf.errors.OpError as e:  # TensorFlow's own I/O errors (disk full, read-only folder)
        raise OutputError(build, e.message.splitlines()[0] if e.message else type(e).__name__) from None

    reference.save(layout.reference, ref)
    fsutil.write_bytes(layout.model_tflite, tflite_bytes)
    fsutil.write_bytes(layout.model_onnx, onnx_model.SerializeToString())
    index = write_variants(layout, variants, cfg, calibration, graph_pass)
    return {
        "graph_pass": graph_pass,
        "variants": index["variants"],
        "onnx": onnx_export.describe(onnx_model),
        "onnx_bytes": onnx_model.ByteSize(),
        "tflite_bytes": len(tflite_bytes),
        "probes": int(len(ref["group"])),
        "from_worker": from_worker,  # how many TFLite variants the worker delivered (built or refused); None: no worker
    }
