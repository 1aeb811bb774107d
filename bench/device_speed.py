"""Device speed (issue 28): a model's three engines and its variants at batch 1 and 32, one thread.

For each model, on a pipeline build folder and the bundle it made (installed as a deploy does):

- the runner (``Runner.predict``, the bundle's own runtime), bare onnxruntime
  (``session.run(None, ...)`` on build/model.onnx, one intra-op thread, as a user writes it) and
  LiteRT (``ai_edge_litert``'s interpreter, XNNPACK, one thread) on build/model.tflite;
- each reduced-precision variant verify built, against float32 in the same runtime (an ONNX
  variant in onnxruntime against model.onnx, a TFLite one in LiteRT against model.tflite), both
  through the pipeline's runners (pipeline/runners.py: a full-integer model's input quantized and
  its output dequantized in numpy, as a device must);
- the ONNX graph pass's nodes before and after (build/variants/index.json).

Blocks of calls alternate in one process (bench/graph_pass.py's ``time_blocks``: the order
rotates; a block is about 20 ms of calls, at least 3); each figure is the median over blocks
of the mean time per call, ratios block by block. The inputs are the bundle's golden inputs
(inside the valid range the runner holds them to), tiled to the batch.

The models: the digits example (the build `measure_digits` made) and Keras Applications'
MobileNetV3Small (bench/mobilenet.py), built here by `make all`, about two minutes: full
`make bench` only. The timings run in a child:
`python -m bench.device_speed child BUILD BUNDLE BLOCKS`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from bench import mobilenet, overhead, proc
from bench.measure_pipeline import make
from bench.proc import PY, ROOT
from bench.stats import stats

BATCHES = (1, 32)
ENGINES = ("runner", "onnxruntime", "litert")
RATIOS = (("runner", "onnxruntime"), ("runner", "litert"), ("onnxruntime", "litert"))


BLOCK_S = 0.02  # a block's length: short, so that the blocks a ratio pairs run close together (2 shared cores)


def blocks(quick: bool) -> int:
    return 8 if quick else 40


def bench_device_speed(work: Path, quick: bool, digits: Path | None) -> dict:
    """Each model's figures by name: the digits example's from its build under ``digits`` (a
    folder with build/ and installed/, as ``measure_digits`` leaves it; None: not measured), and
    MobileNetV3Small's from a build made here (not with ``quick``)."""
    out: dict = {"blocks": blocks(quick), "batches": list(BATCHES), "models": {}}
    if digits is not None:
        out["models"]["digits"] = measure(digits / "build", digits / "installed", blocks(quick))
    if not quick:
        d = work / "mobilenet"
        shutil.rmtree(d, ignore_errors=True)
        config = mobilenet.write(d)
        build = proc.run(make("all", f"CONFIG={config}", f"BUILD={d}/build", f"DIST={d}/dist"),
                         what="make all (MobileNetV3Small)")
        m = out["models"]["mobilenet_v3_small"] = measure(d / "build", proc.installed(d / "dist" / "bundle",
                                                                                       d / "installed"), blocks(quick))
        m["make_all_s"] = build.wall_s
    return out


def measure(build: Path, bundle: Path, n_blocks: int) -> dict:
    """One model's figures, timed in a child process (so no engine shares a process with bench's own state)."""
    child = proc.run([PY, "-m", "bench.device_speed", "child", str(build), str(bundle), str(n_blocks)],
                     env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}, capture=True,
                     what=f"device speed on {build}")
    out = child.json()
    index = json.loads((build / "variants" / "index.json").read_text())
    g = index.get("graph_pass") or {}
    out["graph_pass"] = {"nodes_before": g.get("nodes_before"), "nodes_after": g.get("nodes_after"),
                         "rewrites": g.get("rewrites", {})}
    out["file_bytes"] = {"onnx": (build / "model.onnx").stat().st_size,
                               "tflite": (build / "model.tflite").stat().st_size}
    return out


# --- the child ---

def _engines(build: Path, bundle: Path) -> dict:
    from bench.graph_pass import Lite

    runner = overhead.bundle_runner(bundle)
    bare = overhead.bare_session(build / "model.onnx")
    name = bare.get_inputs()[0].name
    return {"runner": runner.predict, "onnxruntime": lambda x: bare.run(None, {name: x}),
            "litert": Lite(build / "model.tflite")}


def child(build: Path, bundle: Path, n_blocks: int) -> dict:
    import numpy as np

    from bench.graph_pass import time_blocks
    from pipeline.runners import open_runner

    golden = np.asarray(json.loads((bundle / "golden.json").read_text())["inputs"], np.float32)
    xs = {b: golden[np.arange(b) % len(golden)] for b in BATCHES}
    engines = _engines(build, bundle)
    out: dict = {"engines": {}, "variants": {}}
    for b, x in xs.items():
        t = time_blocks(engines, x, n_blocks, BLOCK_S)
        row = {f"{e}_us": stats([v * 1e6 for v in t[e]]) for e in ENGINES}
        for a, c in RATIOS:
            row[f"{a}_vs_{c}"] = stats([p / q for p, q in zip(t[a], t[c])])
        out["engines"][str(b)] = row

    index = json.loads((build / "variants" / "index.json").read_text())["variants"]
    fp32 = {"onnx": build / "model.onnx", "tflite": build / "model.tflite"}
    refs = {fmt: open_runner(fmt, path) for fmt, path in fp32.items()}
    for name, v in index.items():
        if not v.get("built"):
            continue
        fmt = "onnx" if name.startswith("onnx") else "tflite"
        variant = open_runner(fmt, build / "variants" / v["file"])
        row = {"format": fmt, "bytes": v["bytes"], "bytes_vs_fp32": v["bytes"] / fp32[fmt].stat().st_size}
        for b, x in xs.items():
            t = time_blocks({"variant": variant.run, "fp32": refs[fmt].run}, x, n_blocks, BLOCK_S)
            row[str(b)] = {"variant_us": stats([q * 1e6 for q in t["variant"]]),
                           "fp32_us": stats([q * 1e6 for q in t["fp32"]]),
                           "ratio": stats([p / q for p, q in zip(t["variant"], t["fp32"])])}
        out["variants"][name] = row
    return out


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "child":
    print(json.dumps(child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
