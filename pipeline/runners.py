"""The models verify runs, behind one interface keyed by tensor name (as Polygraphy's runners):
``infer({input name: rows}) -> {output name: rows}``, the whole array as one batch, and
``infer_each(feed)``, the same rows one at a time (batch 1), each output's answers concatenated.
Every input of the model must be in the feed, each with the same number of rows.

``run(x)`` and ``run_each(x)`` are the single-input, single-output shorthand verify uses: float32
rows (n, *shape) in, float32 rows (n, *out) out; ``run_each`` runs them one at a time (batch 1).
Tensors are bound by name, never by position: TFLite may reorder inputs and outputs
(tensorflow#33303), so its runner binds through the model's serving signature, whose keys are
the names (its ``inputs`` and ``outputs`` list them in the signature's order, sorted by name;
the ONNX runner's in the graph's, the Keras model's order).
``open_runner`` opens a model file in its format's runtime, naming the file if it cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import StageInputError, VerificationFailed


class Runner(Protocol):
    inputs: list[str]
    outputs: list[str]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer_each(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def rows_of(feed: dict[str, np.ndarray], inputs: list[str]) -> int:
    """The number of rows of the feed, which must hold every input by name, all with that many rows."""
    if sorted(feed) != sorted(inputs):
        raise ValueError(f"runner: inputs {sorted(feed)} given, expected {sorted(inputs)}")
    counts = {name: len(x) for name, x in feed.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"runner: inputs of different numbers of rows {counts}; expected one count")
    return next(iter(counts.values()))


class OnnxRunner:
    """ONNX model in onnxruntime's CPU provider, one intra-op thread (the device setting)."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in feed.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))

    def infer_each(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = rows_of(feed, self.inputs)
        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in feed.items()}
        run, outs = self.session.run, self.outputs
        parts = [run(outs, {k: x[i:i + 1] for k, x in feed.items()}) for i in range(n)]
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(outs)}

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.inputs[0]: np.ascontiguousarray(x, np.float32)})[0]

    def run_each(self, x: np.ndarray) -> np.ndarray:
        run, name = self.session.run, self.inputs[0]
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


class TFLiteRunner:
    """TFLite model in LiteRT's interpreter (``ai_edge_litert``), one thread, bound by the names
    of its serving signature.

    A full-integer model takes and gives int8: inputs are quantized with the input's scale
    and zero point (rounded, clipped to -128..127, as a device would have to), outputs
    dequantized with the output's.
    """

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        signatures = self.interpreter.get_signature_list()
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
        if key is None:  # no signature: the converter's order is all there is
            ins, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
            self._in = {d["name"]: d for d in ins}
            self._out = {d["name"]: d for d in outs}
        else:
            sig = self.interpreter.get_signature_runner(key)
            self._in, self._out = sig.get_input_details(), sig.get_output_details()
        self.inputs, self.outputs = list(self._in), list(self._out)
        self.shapes: dict[str, tuple] = {}

    def _quantize(self, name: str, x: np.ndarray) -> np.ndarray:
        d = self._in[name]
        if d["dtype"] != np.int8:
            return x
        scale, zero = d["quantization"]
        return np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)

    def _dequantize(self, name: str, y: np.ndarray) -> np.ndarray:
        d = self._out[name]
        if d["dtype"] != np.int8:
            return y.copy()
        scale, zero = d["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def _resize(self, name: str, shape: tuple[int, ...]) -> None:
        if self.shapes.get(name) != shape:
            self.interpreter.resize_tensor_input(self._in[name]["index"], list(shape))
            self.shapes[name] = shape
            self.interpreter.allocate_tensors()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        if feed.keys() != self._in.keys():  # an input left out would run on the last call's values
            rows_of(feed, self.inputs)
        for name, x in feed.items():
            self._resize(name, tuple(np.shape(x)))
        for name, x in feed.items():
            it.set_tensor(self._in[name]["index"], self._quantize(name, np.ascontiguousarray(x, np.float32)))
        it.invoke()
        return {name: self._dequantize(name, it.get_tensor(d["index"])) for name, d in self._out.items()}

    def infer_each(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it, n = self.interpreter, rows_of(feed, self.inputs)
        for name, x in feed.items():
            self._resize(name, (1, *np.shape(x)[1:]))
        q = {name: self._quantize(name, np.ascontiguousarray(x, np.float32)) for name, x in feed.items()}
        parts: dict[str, list] = {name: [] for name in self._out}
        for k in range(n):
            for name, x in q.items():
                it.set_tensor(self._in[name]["index"], x[k:k + 1])
            it.invoke()
            for name, d in self._out.items():
                parts[name].append(self._dequantize(name, it.get_tensor(d["index"])))
        return {name: np.concatenate(p) for name, p in parts.items()}

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.infer({self.inputs[0]: x})[self.outputs[0]]

    def run_each(self, x: np.ndarray) -> np.ndarray:
        it, name, out = self.interpreter, self.inputs[0], self.outputs[0]
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._resize(name, (1, *x.shape[1:]))
        i, o = self._in[name]["index"], self._out[out]["index"]
        q = self._quantize(name, x)
        parts = []
        for k in range(len(x)):
            it.set_tensor(i, q[k:k + 1])
            it.invoke()
            parts.append(self._dequantize(out, it.get_tensor(o)))
        return np.concatenate(parts)


def open_runner(fmt: str, path: Path):
    """The runner of ``fmt`` ('onnx' or 'tflite') on the model file ``path``."""
    if not path.is_file():
        raise StageInputError(path, "not found", "run `make export` or `python -m pipeline export` first")
    try:
        return OnnxRunner(path) if fmt == "onnx" else TFLiteRunner(path)
    except ImportError:
        raise  # the runtime itself is missing (not the venv): main() names the package
    except Exception as e:  # the runtimes raise their own types for bad files
        raise VerificationFailed(f"verify: {fmt}: {path} does not load: {e}") from None
