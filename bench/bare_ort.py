"""Baseline for the runner's cold start: import onnxruntime, create the session, run once."""

import sys

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(session.run(None, {session.get_inputs()[0].name: np.array([[100.0]], np.float32)})[0][0, 0])
