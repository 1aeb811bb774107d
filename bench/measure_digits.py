"""The digits example (examples/digits: a Conv2D classifier) through the pipeline and the runner.

- `make all` of the example from an empty build folder against bench/plain_digits.py (fit,
  TFLite, tf2onnx and nothing else), alternating, ratio pair by pair;
- on the bundle that run built: ``Runner.predict`` against a bare ``session.run`` at batch 1 on
  one example (bench/overhead.py: blocks of calls alternating, ratio block by block; the example
  given as a batch of one, then alone), examples/s through `stream`
  (one JSON array per line) and through `serve` (POST /predict {"inputs": [64 examples]}, a few
  keep-alive clients, a bounded number of requests; then the v2 protocol's infer with JSON data
  and with binary data), each beside a bare ``session.run`` at the same batch, and the static
  int8 ONNX variant against build/model.onnx: bytes, and batch-1 and batch-256 latency in
  onnxruntime on one thread (blocks alternating).

The in-process timings run in a child: `python -m bench.measure_digits child BUILD BUNDLE ...`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import timeit
from pathlib import Path

from bench import overhead, proc
from bench.measure_pipeline import make
from bench.measure_serve import Server, client_procs, cpu_plan
from bench.proc import PY, ROOT
from bench.stats import stats

CONFIG = "examples/digits/edge.toml"
DATA = ROOT / "examples" / "digits" / "data.npz"
SERVE_BATCH = 64  # examples per POST /predict
SERVE_CLIENTS = 4
SERVE_KINDS = ("predict", "v2-json", "v2-binary")  # POST /predict; v2 infer with JSON data, with binary data
STREAM_BATCH = 4096  # `runtime stream --batch` default: lines per micro-batch
INT8 = "onnx-int8-static"


def counts(quick: bool) -> dict:
    """How much of each is measured: --quick keeps to one `make all` and small counts."""
    if quick:
        return {"pairs": 1, "overhead_blocks": 10, "block_calls": 500, "stream_lines": 50_000, "stream_runs": 1,
                "serve_requests": 400, "serve_rounds": 1, "serve_cap_s": 10.0, "int8_blocks": 6}
    return {"pairs": 3, "overhead_blocks": 40, "block_calls": 1000, "stream_lines": 100_000, "stream_runs": 3,
            "serve_requests": 1000, "serve_rounds": 3, "serve_cap_s": 20.0, "int8_blocks": 20}


def bench_digits(work: Path, quick: bool) -> dict:
    n = counts(quick)
    out: dict = {"counts": n}
    d = work / "digits"
    walls, plains, parts = [], [], []
    for _ in range(n["pairs"]):
        shutil.rmtree(d, ignore_errors=True)
        walls.append(proc.run(make("all", f"CONFIG={CONFIG}", f"BUILD={d}/build", f"DIST={d}/dist"),
                              what="make all (digits)").wall_s)
        shutil.rmtree(work / "plain-digits", ignore_errors=True)
        p = proc.run([PY, str(ROOT / "bench" / "plain_digits.py"), str(work / "plain-digits")], capture=True,
                     what="the plain digits script")
        plains.append(p.wall_s)
        parts.append(p.json()["parts"])
    shutil.rmtree(work / "plain-digits", ignore_errors=True)
    out["make_all_s"] = stats(walls)
    out["plain_s"] = stats(plains)
    out["plain_parts_s"] = {k: stats([p[k] for p in parts]) for k in parts[0]}
    out["make_all_vs_plain"] = stats([m / p for m, p in zip(walls, plains)])

    build, bundle = d / "build", proc.installed(d / "dist" / "bundle", d / "installed")
    child = proc.run([PY, "-m", "bench.measure_digits", "child", str(build), str(bundle),
                      str(n["overhead_blocks"]), str(n["block_calls"]), str(n["int8_blocks"])],
                     env={**os.environ, "PYTHONPATH": str(ROOT)}, capture=True, what="digits in-process timings")
    c = child.json()
    out["predict_overhead"] = {"runner_us": stats([v * 1e6 for v in c["runner_s"]]),
                               "raw_us": stats([v * 1e6 for v in c["raw_s"]]),
                               "ratio": stats(c["ratios"]), "calls_per_block": c["calls_per_block"],
                               "one_example_us": stats([v * 1e6 for v in c["one_example_s"]]),
                               "one_example_raw_us": stats([v * 1e6 for v in c["one_example_raw_s"]]),
                               "one_example_ratio": stats(c["one_example_ratios"])}
    out["bare"] = c["bare"]
    out["int8"] = c["int8"]
    out["stream"] = bench_stream(bundle, work, n["stream_lines"], n["stream_runs"])
    out["stream"]["vs_bare"] = out["stream"]["examples_per_s"]["median"] / c["bare"][str(STREAM_BATCH)]
    out["serve"] = bench_serve(bundle, work, n)
    out["serve"]["vs_bare"] = out["serve"]["examples_per_s"]["median"] / c["bare"][str(SERVE_BATCH)]
    out["serve_v2"] = {}
    for kind in SERVE_KINDS[1:]:
        v = out["serve_v2"][kind] = bench_serve(bundle, work, n, kind)
        v["vs_bare"] = v["examples_per_s"]["median"] / c["bare"][str(SERVE_BATCH)]
        v["vs_predict"] = v["examples_per_s"]["median"] / out["serve"]["examples_per_s"]["median"]
    return out


def _examples(count: int):
    """``count`` examples of the digits data, cycled: float32 (count, 8, 8, 1)."""
    import numpy as np

    x = np.load(DATA)["x"].astype(np.float32)
    return x[np.arange(count) % len(x)]


def bench_stream(bundle: Path, work: Path, lines: int, runs: int) -> dict:
    """`python -m runtime stream` on ``lines`` JSON arrays (one example each), process start to exit."""
    src = work / "digits-stream.txt"
    x = _examples(lines)
    with open(src, "w") as f:
        for e in x:
            f.write(json.dumps(e.tolist()) + "\n")
    walls = []
    for _ in range(runs):
        with open(src, "rb") as fin:
            walls.append(proc.run([PY, "-m", "runtime", "stream"], cwd=bundle, stdin=fin,
                                  env={**os.environ, "PYTHONPATH": ""}, what="runtime stream (digits)").wall_s)
    src.unlink()
    return {"lines": lines, "wall_s": stats(walls), "examples_per_s": stats([lines / w for w in walls]),
            "bare_batch": STREAM_BATCH}


def write_requests(kind: str, path: Path) -> Path:
    """Four requests of SERVE_BATCH examples each, as ``kind`` sends them (SERVE_KINDS), in the
    file bench/serve_load.py's --body-file reads."""
    x = _examples(SERVE_BATCH * 4)
    batches = [x[k * SERVE_BATCH:(k + 1) * SERVE_BATCH] for k in range(4)]
    if kind == "predict":
        path = path.with_suffix(".jsonl")
        path.write_text("".join(json.dumps({"inputs": b.tolist()}) + "\n" for b in batches))
        return path
    tensor = {"name": "inputs", "shape": list(batches[0].shape), "datatype": "FP32"}
    if kind == "v2-json":
        headers = {"Content-Type": "application/json"}
        bodies = [json.dumps({"inputs": [{**tensor, "data": b.reshape(-1).tolist()}]}).encode() for b in batches]
    else:  # the binary tensor data extension both ways, as tritonclient sends by default
        head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": batches[0].nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
        bodies = [head + b.astype("<f4").tobytes() for b in batches]
    path = path.with_suffix(".json")
    path.write_text(json.dumps({"path": "/v2/models/digits/infer", "headers": headers,
                                "bodies": [base64.b64encode(b).decode() for b in bodies]}))
    return path


def bench_serve(bundle: Path, work: Path, n: dict, kind: str = "predict") -> dict:
    """`python -m runtime serve` (as shipped) under SERVE_CLIENTS keep-alive clients posting
    SERVE_BATCH examples each, n["serve_requests"] requests per round: POST /predict, or the v2
    protocol's infer with JSON data or binary data (``kind``, one of SERVE_KINDS)."""
    bodies = write_requests(kind, work / f"digits-{kind}")
    _, client_cpus = cpu_plan()
    server = Server("digits", "runtime", bundle.resolve(), work)
    runs = []
    try:
        cmd = [PY, "-m", "bench.serve_load", "--port", str(server.port), "--clients", str(SERVE_CLIENTS),
               "--procs", str(client_procs(SERVE_CLIENTS)), "--requests", str(n["serve_requests"]),
               "--time-cap", str(n["serve_cap_s"]), "--values", str(SERVE_BATCH), "--warmup", "2",
               "--server-pid", str(server.pid), "--body-file", str(bodies)]
        if client_cpus:
            cmd += ["--cpus", ",".join(map(str, client_cpus))]
        for _ in range(n["serve_rounds"]):
            runs.append(proc.run(cmd, capture=True, timeout=n["serve_cap_s"] + 180, what="load on digits serve").json())
            if server.proc.poll() is not None:
                raise SystemExit(f"bench: digits server exited: {server.err_path.read_text(errors='replace')[-800:]}")
    finally:
        server.stop()
        bodies.unlink(missing_ok=True)
    return {"clients": SERVE_CLIENTS, "batch": SERVE_BATCH, "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] for r in runs), "capped": any(r["capped"] for r in runs),
            "examples_per_s": stats([r["values_per_s"] for r in runs]),
            "p50_ms": stats([r["latency_ms"]["p50"] for r in runs]),
            "p99_ms": stats([r["latency_ms"]["p99"] for r in runs]),
            "server_cores": stats([r["server_cores"] for r in runs]), "bare_batch": SERVE_BATCH}


# --- the child: in-process timings on the bundle and the build ---

def child(build: Path, bundle: Path, blocks: int, calls: int, int8_blocks: int) -> dict:
    import numpy as np
    out = overhead.measure(bundle, blocks, calls)  # Runner.predict against a bare session.run, batch 1
    raw = overhead.bare_session(bundle / "model.onnx")
    name = raw.get_inputs()[0].name

    # Bare session.run examples/s at the batches stream and serve run the model at.
    bare = {}
    for batch in (SERVE_BATCH, STREAM_BATCH):
        xb = _examples(batch)
        raw.run(None, {name: xb})
        reps = max(3, int(0.3 / max(timeit.timeit(lambda: raw.run(None, {name: xb}), number=1), 1e-6)))
        per = [timeit.timeit(lambda: raw.run(None, {name: xb}), number=1) for _ in range(reps)]
        bare[str(batch)] = batch / float(np.median(per))
    out["bare"] = bare

    fp32_path, int8_path = build / "model.onnx", build / "variants" / f"{INT8}.onnx"
    fp32, int8 = overhead.bare_session(fp32_path), overhead.bare_session(int8_path)
    i8 = {"fp32_bytes": fp32_path.stat().st_size, "int8_bytes": int8_path.stat().st_size}
    i8["bytes_ratio"] = i8["int8_bytes"] / i8["fp32_bytes"]
    for batch, n_calls in ((1, calls), (256, max(5, calls // 100))):
        xb = _examples(batch)
        tq, tf = overhead.alternate(lambda: int8.run(None, {name: xb}), lambda: fp32.run(None, {name: xb}),
                            int8_blocks, n_calls)
        i8[f"batch{batch}"] = {"int8_us": stats([v * 1e6 for v in tq]), "fp32_us": stats([v * 1e6 for v in tf]),
                               "ratio": stats([q / f for q, f in zip(tq, tf)]), "calls_per_block": n_calls}
    out["int8"] = i8
    return out


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "child":
    print(json.dumps(child(Path(sys.argv[2]), Path(sys.argv[3]), *map(int, sys.argv[4:]))))
