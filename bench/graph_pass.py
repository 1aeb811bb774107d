"""The ONNX graph pass (export/onnx_fuse.py) measured: onnxruntime before and after it, and LiteRT.

    .venv/bin/python -m bench.graph_pass BUILD [--blocks 30] [--profile]

BUILD is a pipeline build folder (``model.keras``, ``model.tflite``). The model is exported
again without the pass (``onnx_export.convert(..., fuse=False)``: the graph tf2onnx wrote),
the pass is applied to a copy, and three engines run the same random inputs in the same
process, one thread each: onnxruntime with the device runner's session options
(``runtime.runner.session_options``: graph optimization ``ORT_ENABLE_ALL``, no spinning) on
the graph before and after the pass, and LiteRT (XNNPACK) on ``model.tflite``. Blocks of
calls alternate between them (the order rotating), at batch 1 and at batch 32; each figure is
the median over blocks of the mean time per call, with min and max, and ratios are taken
block by block. ``--profile``: onnxruntime's profiler on the graph after the pass, the share
of each op type's kernel time (the profiler's overhead inflates the total; the shares hold).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np

from bench.stats import stats


def export_unfused(build: Path, cfg_names: tuple[str, str], opset: int, ir: int):
    """build/model.keras exported again the pipeline's way, the graph pass left out."""
    from export import keras3_savedmodel, onnx_export
    from export.tfenv import tensorflow

    _, keras = tensorflow()
    model = keras.models.load_model(build / "model.keras")
    with tempfile.TemporaryDirectory(prefix="graph-pass-") as tmp:
        saved = keras3_savedmodel.write_savedmodel(model, Path(tmp) / "savedmodel", *cfg_names)
        return onnx_export.convert(saved, *cfg_names, opset, ir, fuse=False)[0]


def ort_session(model_bytes: bytes, profile: str | None = None):
    import onnxruntime as ort

    from runtime.runner import session_options

    opts = session_options(1)
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


class Lite:
    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=1)
        self.i = self.it.get_input_details()[0]["index"]
        self.o = self.it.get_output_details()[0]["index"]
        self.batch = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.batch != len(x):
            self.it.resize_tensor_input(self.i, list(x.shape))
            self.it.allocate_tensors()
            self.batch = len(x)
        self.it.set_tensor(self.i, x)
        self.it.invoke()
        return self.it.get_tensor(self.o)


def time_blocks(engines: dict, x: np.ndarray, blocks: int, budget_s: float = 0.05) -> dict:
    """name -> per-call seconds, one value per block; blocks alternate, the order rotating."""
    names = list(engines)
    calls = {}
    for n, f in engines.items():
        f(x)  # warm: first-call allocations
        t = timeit.timeit(lambda f=f: f(x), number=3) / 3
        calls[n] = max(3, int(budget_s / t))
    out = {n: [] for n in names}
    for b in range(blocks):
        for n in names[b % len(names):] + names[:b % len(names)]:
            f = engines[n]
            out[n].append(timeit.timeit(lambda f=f: f(x), number=calls[n]) / calls[n])
    return out


def profile_shares(model_bytes: bytes, input_name: str, x: np.ndarray, calls: int = 300) -> dict:
    """op type -> (share of kernel time, nodes) from onnxruntime's profiler."""
    with tempfile.TemporaryDirectory(prefix="ort-prof-") as tmp:
        s = ort_session(model_bytes, profile=os.path.join(tmp, "p"))
        for _ in range(calls):
            s.run(None, {input_name: x})
        events = json.loads(Path(s.end_profiling()).read_text())
    per: dict[str, float] = {}
    nodes: dict[str, set] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per[op] = per.get(op, 0.0) + e["dur"]
            nodes.setdefault(op, set()).add(e["name"])
    total = sum(per.values())
    return {op: {"share": round(t / total, 4), "nodes": len(nodes[op]), "us_per_call": round(t / calls, 2)}
            for op, t in sorted(per.items(), key=lambda kv: -kv[1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.graph_pass", description=__doc__.splitlines()[0])
    p.add_argument("build", type=Path)
    p.add_argument("--before", type=Path, help="the graph before the pass, as a file (default: export it again)")
    p.add_argument("--blocks", type=int, default=30)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args(argv)

    import onnx

    from export.onnx_fuse import fuse
    from pipeline.config import load as load_config

    cfg = load_config(a.build / "config.toml")
    names = (cfg["model"]["input_name"], cfg["model"]["output_name"])
    before = (onnx.load(a.before) if a.before else
              export_unfused(a.build, names, cfg["export"]["opset"], cfg["export"]["ir_version"]))
    after = onnx.ModelProto.FromString(before.SerializeToString())
    record = fuse(after)
    b_bytes, a_bytes = before.SerializeToString(), after.SerializeToString()
    sb, sa = ort_session(b_bytes), ort_session(a_bytes)
    lite = Lite(a.build / "model.tflite")
    shape = [d.dim_value for d in before.graph.input[0].type.tensor_type.shape.dim[1:]]
    rng = np.random.default_rng(0)
    out: dict = {"graph_pass": record, "batches": {}}
    for batch in [int(b) for b in a.batches.split(",")]:
        x = rng.uniform(0, 255, (batch, *shape)).astype(np.float32)
        yb, ya = sb.run(None, {names[0]: x})[0], sa.run(None, {names[0]: x})[0]
        engines = {"ort_before": lambda x: sb.run(None, {names[0]: x}),
                   "ort_after": lambda x: sa.run(None, {names[0]: x}), "litert": lite}
        t = time_blocks(engines, x, a.blocks)
        out["batches"][str(batch)] = {
            **{f"{n}_us": stats([v * 1e6 for v in vs]) for n, vs in t.items()},
            "after_vs_before": stats([q / r for q, r in zip(t["ort_after"], t["ort_before"])]),
            "before_vs_litert": stats([q / r for q, r in zip(t["ort_before"], t["litert"])]),
            "after_vs_litert": stats([q / r for q, r in zip(t["ort_after"], t["litert"])]),
            "max_abs_diff_after_vs_before": float(np.max(np.abs(ya - yb))),
        }
    if a.profile:
        x = rng.uniform(0, 255, (1, *shape)).astype(np.float32)
        out["profile_after_batch_1"] = profile_shares(a_bytes, names[0], x)
        out["profile_before_batch_1"] = profile_shares(b_bytes, names[0], x)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
