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
- ``onnx-int8-static``: onnxruntime's documented static quantization for x86-64:
  ``quant_pre_process``, then ``quantize_static`` in QDQ format, uint8 activations and int8
  weights (U8S8), calibrated (min/max) on the calibration inputs (``build_onnx`` says what
  differs from its defaults and why).
- ``tflite-fp16``: float16 weights (the converter's float16 quantization).
- ``tflite-int8-dynamic``: dynamic-range quantization (``Optimize.DEFAULT`` alone). The
  converter leaves tensors this small in float32, so for the default model it is the
  float32 model with a different metadata flag.
- ``tflite-int8-full``: full integer, int8 input and output, calibrated with a
  representative dataset (the calibration inputs).

A model of several inputs and outputs: ``calibration`` is a dict {input name: float32 rows
(n, *shape)}, every input the same n (row i of each input together make example i); each
calibration example is given by name, never by position. What is done per input for one input
(its standardization kept in float32) is done for each.

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
    """The names of the nodes that do elementwise arithmetic with constants only on a graph
    input (a Normalization layer's Sub and Mul), in graph order: for each input, its first nodes
    in order, up to the first other node that reads what they (or the input) give."""
    consts = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts.update(node.output)
    found = set()
    for graph_input in graph.input:
        reached = {graph_input.name}
        for node in graph.node:
            ins = [i for i in node.input if i]
            if node.op_type == "Constant":
                continue
            if not any(i in reached for i in ins):
                if len(graph.input) == 1:  # one input: every node reads it, or stops the chain
                    break
                continue  # another input's branch
            if node.op_type not in ("Sub", "Mul", "Div", "Add") or not all(i in reached or i in consts for i in ins):
                break
            found.add(node.name)
            reached.update(node.output)
    return [node.name for node in graph.node if node.name in found]


def calibration_rows(calibration: np.ndarray) -> np.ndarray:
    """The calibration inputs as float32 examples (n, *shape): a flat array is n scalar examples."""
    cal = np.ascontiguousarray(calibration, dtype=np.float32)
    return cal.reshape(-1, 1) if cal.ndim == 1 else cal


# Examples per calibration run of the static ONNX variant. MinMax calibration keeps each
# tensor's smallest and largest value over all runs (onnxruntime's MinMaxCalibrater: ReduceMin
# and ReduceMax over every axis, the batch's included), so runs of 64 measure what runs of one
# do (measured: the same bytes for the digits and sensor_gru examples), while a run of the
# augmented graph (a ReduceMin and a ReduceMax per tensor) costs about as much for one example
# as for 64: sensor_gru's export took 27.1 s with runs of one (its 300 examples twice, 5.5 s of
# runs), 19.9 s with runs of 64.
CALIBRATION_BATCH = 64


def batch_is_free(graph) -> bool:
    """Whether every input of ``graph`` (an onnx.GraphProto) takes any number of rows: its first
    dimension symbolic or unset (a model exported with a fixed batch of 1 is calibrated an
    example at a time)."""
    consts = {t.name for t in graph.initializer}  # listed as inputs too by older IR versions
    for i in graph.input:
        dims = i.type.tensor_type.shape.dim
        if i.name not in consts and dims and dims[0].HasField("dim_value"):
            return False
    return True


def calibration_feeds(calibration, input_name: str | list[str]) -> dict[str, np.ndarray]:
    """{input name: float32 examples (n, *shape)}: one array for a model's one input, or a dict
    with every input's rows, all of the same n.

    Raises VariantNotBuilt when the dict's names are not the inputs, or their counts differ."""
    names = [input_name] if isinstance(input_name, str) else list(input_name)
    if not isinstance(calibration, dict):
        if len(names) != 1:
            raise VariantNotBuilt(f"calibration is one array but the model has {len(names)} inputs {names}; "
                                  "expected a dict {input name: rows}")
        return {names[0]: calibration_rows(calibration)}
    if sorted(calibration) != sorted(names):
        raise VariantNotBuilt(f"calibration names {sorted(calibration)} are not the model's inputs {sorted(names)}")
    feeds = {n: calibration_rows(calibration[n]) for n in names}
    counts = {n: len(r) for n, r in feeds.items()}
    if len(set(counts.values())) > 1:
        raise VariantNotBuilt(f"calibration inputs have different numbers of rows {counts}; expected one count")
    return feeds


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
def build_onnx(name: str, model, calibration: np.ndarray | dict[str, np.ndarray], input_name: str | list[str]):
    """The ONNX variant ``name`` of ``model`` (an onnx.ModelProto, float32), as a checked ModelProto.

    ``calibration``: the input's rows, or for several inputs a dict {input name: rows}
    (``input_name`` then the list of names); the static variant alone reads it.

    The static variant, measured against onnxruntime's own static quantization of the same
    model (``bench/int8.py``):

    - The graph goes through onnxruntime's pre-processing first (``quant_pre_process``: its
      basic graph optimizer, then ONNX shape inference; no symbolic shape inference, which needs
      sympy and serves models of symbolic shapes); where the quantizer refuses the result (the
      sensor_gru example's unrolled GRU, whose steps share their weights), the graph as exported. It folds what onnxruntime fuses itself when it
      loads a float32 model (a batch normalization's Mul and Add into the convolution before it,
      a Pad into it, MatMul and Add into Gemm), which the Q/DQ pairs between them would
      otherwise stop: each would run as a QLinearMul or QLinearAdd of its own (MobileNetV3Small:
      54 QLinearConv and 7 QLinearAdd left, against 44 QLinearConv, 10 float Conv, 40 Mul and 18
      Add).
    - Activations are uint8 (U8S8): onnxruntime's x86-64 int8 kernels take uint8 activations,
      and with int8 (S8S8, ``quantize_static``'s default) part of the graph falls back to float
      between DequantizeLinear and QuantizeLinear (MobileNetV3Small at batch 32: 1.5x float32's
      time with int8 activations, 0.8x with uint8).
    - Weights are 7-bit (``reduce_range``): x86 without VNNI multiplies uint8 by int8 with
      VPMADDUBSW, whose 16-bit sums saturate; on this machine (AVX2) the digits example's
      top-1 agreement with Keras over verify's probes was 99.17 % without it, 99.81 % with it
      (MobileNetV3Small: SNR 39.7 dB without, 60.6 dB with).
    - Per-tensor weight scales (``quantize_static``'s default): per-channel scales measured no
      better with 7-bit weights (digits 99.81 % either way; MobileNetV3Small 60.6 dB either
      way), and without ``reduce_range`` worse (98.49 %), for more bytes.
    - The elementwise arithmetic on the raw input (a standardization layer's Sub and Mul,
      ``input_arithmetic``) stays in float32: raw features of very different scales would
      share one int8 scale and the small ones round to zero; quantizing starts after it."""
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
            from onnxruntime.quantization.shape_inference import quant_pre_process

            with tempfile.TemporaryDirectory(prefix="variant-") as tmp:
                dest = Path(tmp) / "model.onnx"
                if name == "onnx-int8-dynamic":
                    quantize_dynamic(model, dest, weight_type=QuantType.QInt8)
                elif name == "onnx-int8-static":
                    feeds = calibration_feeds(calibration, input_name)
                    count = len(next(iter(feeds.values())))
                    step = CALIBRATION_BATCH if batch_is_free(model.graph) else 1

                    class Reader(CalibrationDataReader):  # every input by name, `step` examples at a time
                        def __init__(self):
                            self.items = iter([{n: r[i:i + step] for n, r in feeds.items()}
                                               for i in range(0, count, step)])

                        def get_next(self):
                            return next(self.items, None)

                    # From a file: given a ModelProto it hands the initializers to its session as
                    # external data, which onnxruntime's Reshape shape inference cannot read.
                    src, pre = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx"
                    src.write_bytes(model.SerializeToString())
                    quant_pre_process(src, pre, skip_symbolic_shape=True)

                    def quantize(m):
                        quantize_static(m, dest, Reader(), quant_format=QuantFormat.QDQ,
                                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                        calibrate_method=CalibrationMethod.MinMax, per_channel=False,
                                        nodes_to_exclude=input_arithmetic(m.graph), reduce_range=True)

                    try:
                        quantize(onnx.load_model_from_string(pre.read_bytes()))
                    except Exception:  # noqa: BLE001 - the quantizer refuses some pre-processed graphs
                        # (an unrolled GRU's 24 Gemms sharing one weight: "shared mode is not supported
                        # for weight"): then the graph as exported, unfolded, as before pre-processing.
                        quantize(model)
                else:
                    raise VariantNotBuilt(f"unknown ONNX variant {name!r}")
                out = onnx.load_model_from_string(dest.read_bytes())
        onnx.checker.check_model(out, full_check=True)
        return out
    except VariantNotBuilt:
        raise
    except Exception as e:  # the converters raise many types; the report shows the reason
        raise VariantNotBuilt(_one_line(e)) from None


def build_tflite(name: str, savedmodel_dir: Path, calibration: np.ndarray | dict[str, np.ndarray]) -> bytes:
    """The TFLite variant ``name`` of the SavedModel, as .tflite bytes (builtin ops only).

    ``calibration``: the input's rows, or for several inputs a dict {input name: rows}, given to
    the converter by the serving signature's names (the full-integer variant alone reads it)."""
    from export.tfenv import tensorflow

    tf, _ = tensorflow()
    try:
        c = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        if name == "tflite-fp16":
            c.target_spec.supported_types = [tf.float16]
        elif name == "tflite-int8-full":
            if isinstance(calibration, dict):  # several inputs: each example as a dict by signature key
                feeds = calibration_feeds(calibration, list(calibration))

                def representative():
                    for i in range(len(next(iter(feeds.values())))):
                        yield {n: r[i:i + 1] for n, r in feeds.items()}
            else:
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
