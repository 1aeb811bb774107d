"""Reduced-precision variants of the exported model: fp16 and int8, for ONNX and TFLite.

Each builder returns the variant's bytes, or raises ``VariantNotBuilt`` with the
converter's one-line reason (reported as "not built", never a crash). All are
deterministic with the pinned tools: the same model and calibration give the same bytes.

- ``onnx-fp16``: weights in float16, input and output kept float32
  (onnxruntime.transformers.float16, shipped with onnxruntime). That converter appends its
  Cast nodes after the nodes that use them; they are put in order so that the file passes
  ``onnx.checker`` with full_check, as the float32 one does.
- ``onnx-int8-dynamic``: ``quantize_dynamic``, int8 weights; activations are quantized at
  run time with one scale per input tensor, so a value's answer depends on the other
  values in its batch.
- ``onnx-int8-static``: ``quantize_static`` in QDQ format, int8 weights and activations,
  calibrated (min/max) on the calibration inputs.
- ``tflite-fp16``: float16 weights (the converter's float16 quantization).
- ``tflite-int8-dynamic``: dynamic-range quantization (``Optimize.DEFAULT`` alone). The
  converter leaves tensors this small in float32, so for the default model it is the
  float32 model with a different metadata flag.
- ``tflite-int8-full``: full integer, int8 input and output, calibrated with a
  representative dataset (the calibration inputs).

The ORT quantizers are given the model in memory, not a path: given a path they write a
``<model>-inferred.onnx`` beside it (in the build folder) while they work.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from .formats import VARIANTS  # noqa: F401 - the names, in one place (the config validates them)


class VariantNotBuilt(Exception):
    """The converter refused: the message is its reason, one line."""


def fmt(name: str) -> str:
    """'onnx' or 'tflite'."""
    return name.split("-", 1)[0]


def suffix(name: str) -> str:
    return ".onnx" if fmt(name) == "onnx" else ".tflite"


def input_arithmetic(graph) -> list[str]:
    """The names of the first nodes, in order, that do elementwise arithmetic on the graph's
    input with constants only (a Normalization layer's Sub and Mul); stops at the first other."""
    consts = {t.name for t in graph.initializer}
    reached = {i.name for i in graph.input}
    names = []
    for node in graph.node:
        ins = [i for i in node.input if i]
        if node.op_type == "Constant":
            consts.update(node.output)
            continue
        if node.op_type not in ("Sub", "Mul", "Div", "Add") or not any(i in reached for i in ins) \
                or not all(i in reached or i in consts for i in ins):
            break
        names.append(node.name)
        reached.update(node.output)
    return names


def calibration_rows(calibration: np.ndarray) -> np.ndarray:
    """The calibration inputs as float32 examples (n, *shape): a flat array is n scalar examples."""
    cal = np.ascontiguousarray(calibration, dtype=np.float32)
    return cal.reshape(-1, 1) if cal.ndim == 1 else cal


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


class _NotFromOnnxruntime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in Path(record.pathname).parts


@contextlib.contextmanager
def _quiet_converters():
    """Keep the ORT converters' log lines out while one runs, and leave logging as it was.

    The quantizers warn through the root logger itself (``logging.warning("Please consider
    to run pre-processing before quantization...")``, on every call), so no logger of their
    own can be set: for the call, the root logger drops records made in onnxruntime's files
    (a filter: its level, and so everyone else's records, stay as the caller set them), and
    onnxruntime's own loggers (float16's) are held at ERROR. Afterwards the filter goes, the
    level comes back, and so do the root's handlers: ``logging.warning`` with none installs
    one (basicConfig).
    """
    root, ort = logging.getLogger(), logging.getLogger("onnxruntime")
    handlers, level, drop = list(root.handlers), ort.level, _NotFromOnnxruntime()
    root.addFilter(drop)
    ort.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeFilter(drop)
        ort.setLevel(level)
        root.handlers[:] = handlers


def toposort(graph) -> None:
    """Put graph.node in an order where every node follows the producers of its inputs."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        for k, node in enumerate(pending):
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
                del pending[k]
                break
        else:
            raise VariantNotBuilt("the graph has a cycle or an input nothing produces")
    del graph.node[:]
    graph.node.extend(ordered)


@_quiet_converters()  # a fresh context per call (contextmanager's ContextDecorator)
def build_onnx(name: str, model, calibration: np.ndarray, input_name: str):
    """The ONNX variant ``name`` of ``model`` (an onnx.ModelProto, float32), as a checked ModelProto.

    The static variant keeps the elementwise arithmetic on the raw input (a standardization
    layer's Sub and Mul, ``input_arithmetic``) in float32: raw features of very different
    scales would share one int8 scale and the small ones round to zero; quantizing starts after
    it. Its weights are 7-bit (``reduce_range``), which keeps x86's int8 dot products
    (VPMADDUBSW saturates at 16 bits) from overflowing: without it a CNN's top-1 agreement with
    Keras fell to 97-99 % on x86 (tests on the digits example), with it 100 %."""
    import onnx

    # A copy: the quantizers save the model they are given with its tensors of 1 KiB and more
    # moved to an external .data file, in place; the caller's model must stay whole.
    model = onnx.ModelProto.FromString(model.SerializeToString())
    try:
        if name == "onnx-fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            out = convert_float_to_float16(model, keep_io_types=True)
            toposort(out.graph)
        else:
            from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                                  QuantType, quantize_dynamic, quantize_static)

            with tempfile.TemporaryDirectory(prefix="variant-") as tmp:
                dest = Path(tmp) / "model.onnx"
                if name == "onnx-int8-dynamic":
                    quantize_dynamic(model, dest, weight_type=QuantType.QInt8)
                elif name == "onnx-int8-static":
                    rows = calibration_rows(calibration)

                    class Reader(CalibrationDataReader):
                        def __init__(self):
                            self.items = iter([{input_name: rows[i:i + 1]} for i in range(len(rows))])

                        def get_next(self):
                            return next(self.items, None)

                    # Per-channel weight scales for convolutions: one scale per filter, as
                    # their ranges differ by orders of magnitude (a dense model keeps per-tensor).
                    per_channel = any(n.op_type == "Conv" for n in model.graph.node)
                    quantize_static(model, dest, Reader(), quant_format=QuantFormat.QDQ,
                                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=CalibrationMethod.MinMax, per_channel=per_channel,
                                    nodes_to_exclude=input_arithmetic(model.graph), reduce_range=True)
                else:
                    raise VariantNotBuilt(f"unknown ONNX variant {name!r}")
                out = onnx.load_model_from_string(dest.read_bytes())
        onnx.checker.check_model(out, full_check=True)
        return out
    except VariantNotBuilt:
        raise
    except Exception as e:  # the converters raise many types; the report shows the reason
        raise VariantNotBuilt(_one_line(e)) from None


def build_tflite(name: str, savedmodel_dir: Path, calibration: np.ndarray) -> bytes:
    """The TFLite variant ``name`` of the SavedModel, as .tflite bytes (builtin ops only)."""
    from export.tfenv import tensorflow

    tf, _ = tensorflow()
    try:
        c = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        if name == "tflite-fp16":
            c.target_spec.supported_types = [tf.float16]
        elif name == "tflite-int8-full":
            rows = calibration_rows(calibration)

            def representative():
                for i in range(len(rows)):
                    yield [rows[i:i + 1]]

            c.representative_dataset = representative
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
        elif name != "tflite-int8-dynamic":
            raise VariantNotBuilt(f"unknown TFLite variant {name!r}")
        return c.convert()
    except VariantNotBuilt:
        raise
    except Exception as e:
        raise VariantNotBuilt(_one_line(e)) from None
