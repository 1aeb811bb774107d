"""Runner.predict's own cost at batch 1, against raw InferenceSession.run, in one process.

Both run the bundle's model with one intra-op thread; blocks of calls alternate, so
both see the same machine at the same moments, and the ratio is taken block by block.
Prints JSON: per-call seconds of each block and the per-pair ratios.
"""

import json
import sys
import timeit
from pathlib import Path

import numpy as np
import onnxruntime as ort

bundle = Path(sys.argv[1])
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 40
sys.path.insert(0, str(bundle))
from runtime import Runner  # noqa: E402

runner = Runner.from_bundle(bundle, threads=1)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
raw = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"])
x = np.array([[100.0]], np.float32)
name = raw.get_inputs()[0].name


def ours():
    runner.predict(100.0)


def theirs():
    raw.run(None, {name: x})


n = 2000
for f in (ours, theirs):
    timeit.timeit(f, number=n)  # warm-up
a, b = [], []
for _ in range(pairs):
    a.append(timeit.timeit(ours, number=n) / n)
    b.append(timeit.timeit(theirs, number=n) / n)
print(json.dumps({"runner_s": a, "raw_s": b, "ratios": [p / q for p, q in zip(a, b)], "calls_per_block": n}))
