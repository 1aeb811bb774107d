"""Runner.predict's own cost at batch 1, against raw InferenceSession.run, in one process.

    python bench/overhead.py BUNDLE [BLOCKS] [CALLS]

Both run the bundle's model with one intra-op thread; blocks of calls alternate (who goes
first flips every block), so both see the same machine at the same moments, and the ratio
is taken block by block. The bare side is what a user writes: ``session.run(None, {name: x})``
on a session of its own. A one-value model (the tutorial's) is fed the number 100; any other
model its first golden input (golden.json), as a batch of one (1, *shape), the bare session
the same array; then also as one example (*shape), what ``predict`` answers without the batch.
Prints JSON: per-call seconds of each block and the per-block ratios.
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path


def alternate(a, b, blocks: int, calls: int) -> tuple[list[float], list[float]]:
    """Per-call seconds of ``a`` and ``b`` over ``blocks`` alternating blocks of ``calls`` calls."""
    for f in (a, b):
        timeit.timeit(f, number=max(10, calls // 5))  # warm-up
    ta, tb = [], []
    for k in range(blocks):
        first, second = (a, b) if k % 2 == 0 else (b, a)  # who goes first flips every block
        t1 = timeit.timeit(first, number=calls) / calls
        t2 = timeit.timeit(second, number=calls) / calls
        ta.append(t1 if first is a else t2)
        tb.append(t2 if first is a else t1)
    return ta, tb


def bare_session(model: Path):
    """An onnxruntime session as a user opens one: one intra-op thread, the CPU provider, nothing else set."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def bundle_runner(bundle: Path):
    """``Runner.from_bundle(bundle, threads=1)`` of the runtime/ the bundle carries (imported from it)."""
    sys.path.insert(0, str(bundle))
    from runtime import Runner

    return Runner.from_bundle(bundle, threads=1)


def measure(bundle: Path, blocks: int, calls: int) -> dict:
    """The runner of ``bundle`` (its own runtime/, imported from it) against a bare session."""
    import numpy as np

    runner = bundle_runner(bundle)
    raw = bare_session(bundle / "model.onnx")
    name = raw.get_inputs()[0].name
    if runner.scalar:
        x, value = np.array([[100.0]], np.float32), 100.0
    else:
        first = json.loads((bundle / "golden.json").read_text())["inputs"][0]
        value = np.asarray(first, np.float32).reshape(runner.signature.shape)
        x = value.reshape(1, *value.shape)
    arg = value if runner.scalar else x
    ours, theirs = alternate(lambda: runner.predict(arg), lambda: raw.run(None, {name: x}), blocks, calls)
    out = {"fed": "100.0" if runner.scalar else f"golden input 0, shape {list(x.shape)}",
           "runner_s": ours, "raw_s": theirs, "ratios": [p / q for p, q in zip(ours, theirs)],
           "calls_per_block": calls}
    if not runner.scalar:
        one, bare = alternate(lambda: runner.predict(value), lambda: raw.run(None, {name: x}), blocks, calls)
        out.update(one_example_s=one, one_example_raw_s=bare, one_example_ratios=[p / q for p, q in zip(one, bare)])
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(measure(Path(args[0]), int(args[1]) if len(args) > 1 else 40,
                             int(args[2]) if len(args) > 2 else 2000)))
