"""The runners verify loops over: one interface, one class per format.

Each takes float32 inputs of shape (n,) and returns float32 outputs of shape (n,),
running the whole array as one batch; ``run_each`` runs it one value at a time (batch 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


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
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1)
        return self.session.run(None, {self.input: x})[0].reshape(-1)

    def run_each(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 1)
        run, name = self.session.run, self.input
        return np.array([run(None, {name: v})[0][0, 0] for v in x], dtype=np.float32)


class TFLiteRunner:
    """TFLite model in LiteRT's interpreter (``ai_edge_litert``), one thread."""

    name = "tflite"

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = None

    def _resize(self, n: int) -> None:
        if self.batch != n:
            self.interpreter.resize_tensor_input(self.input, [n, 1])
            self.interpreter.allocate_tensors()
            self.batch = n

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1)
        self._resize(len(x))
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).reshape(-1).copy()

    def run_each(self, x: np.ndarray) -> np.ndarray:
        self._resize(1)
        it, i, o = self.interpreter, self.input, self.output
        out = np.empty(len(x), dtype=np.float32)
        for k, v in enumerate(np.asarray(x, dtype=np.float32).reshape(-1, 1, 1)):
            it.set_tensor(i, v)
            it.invoke()
            out[k] = it.get_tensor(o)[0, 0]
        return out
