"""The runners verify loops over: one interface, one class per format.

Each takes float32 inputs of shape (n, *shape) and returns float32 outputs of shape
(n, *out), running the whole array as one batch; ``run_each`` runs it one example at a
time (batch 1). A flat array (n,) is n scalar examples (the tutorial's model, input
(n, 1)), and gives flat outputs (n,).
``open_runner`` opens a model file in its format's runtime, naming the file if it cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import StageInputError, VerificationFailed


class Runner(Protocol):
    name: str

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def run_each(self, x: np.ndarray) -> np.ndarray: ...


class OnnxRunner:
    """ONNX model in onnxruntime's CPU provider, one intra-op thread (the device setting)."""

    name = "onnx"

    def __init__(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        flat = x.ndim == 1
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1) if flat else np.ascontiguousarray(x, np.float32)
        y = self.session.run(None, {self.input: x})[0]
        return y.reshape(-1) if flat else y

    def run_each(self, x: np.ndarray) -> np.ndarray:
        run, name = self.session.run, self.input
        if x.ndim == 1:
            x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 1)
            return np.array([run(None, {name: v})[0][0, 0] for v in x], dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


class TFLiteRunner:
    """TFLite model in LiteRT's interpreter (``ai_edge_litert``), one thread.

    A full-integer model takes and gives int8: inputs are quantized with the input's scale
    and zero point (rounded, clipped to -128..127, as a device would have to), outputs
    dequantized with the output's.
    """

    name = "tflite"

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        i, o = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.input, self.output = i["index"], o["index"]
        self.in_q = i["quantization"] if i["dtype"] == np.int8 else None
        self.out_q = o["quantization"] if o["dtype"] == np.int8 else None
        self.batch = None

    def _in(self, x: np.ndarray) -> np.ndarray:
        if self.in_q is None:
            return x
        scale, zero = self.in_q
        return np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)

    def _out(self, y: np.ndarray) -> np.ndarray:
        if self.out_q is None:
            return y
        scale, zero = self.out_q
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def _resize(self, shape: tuple[int, ...]) -> None:
        if self.batch != shape:
            self.interpreter.resize_tensor_input(self.input, list(shape))
            self.interpreter.allocate_tensors()
            self.batch = shape

    def run(self, x: np.ndarray) -> np.ndarray:
        flat = x.ndim == 1
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1) if flat else np.ascontiguousarray(x, np.float32)
        self._resize(x.shape)
        self.interpreter.set_tensor(self.input, self._in(x))
        self.interpreter.invoke()
        y = self._out(self.interpreter.get_tensor(self.output))
        return y.reshape(-1).copy() if flat else y.copy()

    def run_each(self, x: np.ndarray) -> np.ndarray:
        it, i, o = self.interpreter, self.input, self.output
        if x.ndim == 1:
            self._resize((1, 1))
            out = np.empty(len(x), dtype=np.float32)
            for k, v in enumerate(self._in(np.asarray(x, dtype=np.float32).reshape(-1, 1, 1))):
                it.set_tensor(i, v)
                it.invoke()
                out[k] = self._out(it.get_tensor(o))[0, 0]
            return out
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._resize((1, *x.shape[1:]))
        parts = []
        for k in range(len(x)):
            it.set_tensor(i, self._in(x[k:k + 1]))
            it.invoke()
            parts.append(self._out(it.get_tensor(o)).copy())
        return np.concatenate(parts)


def open_runner(fmt: str, path: Path) -> Runner:
    """The runner of ``fmt`` ('onnx' or 'tflite') on the model file ``path``."""
    if not path.is_file():
        raise StageInputError(path, "not found", "run `make export` or `python -m pipeline export` first")
    try:
        return OnnxRunner(path) if fmt == "onnx" else TFLiteRunner(path)
    except ImportError:
        raise  # the runtime itself is missing (not the venv): main() names the package
    except Exception as e:  # the runtimes raise their own types for bad files
        raise VerificationFailed(f"verify: {fmt}: {path} does not load: {e}") from None
