"""Inference measured in fresh processes: each engine (bench/worker.py) at 1 thread and at its
library's default, the reduced-precision variants, the runner's cold start against a bare
onnxruntime script, Runner.predict's per-call cost against session.run, and `stream`."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from bench.proc import PY, ROOT, run
from bench.scalar import Scalar, dense_weights
from bench.stats import quantile, stats
from bench.worker import ENGINES


def run_worker(engine: str, threads: int, build: Path, bundle: Path, args: argparse.Namespace,
               cold_only: bool) -> dict:
    cmd = [PY, "-m", "bench.worker", engine, "--build", str(build), "--bundle", str(bundle),
           "--threads", str(threads), "--budget", str(args.budget), "--large-batch", str(args.large_batch),
           "--large-runs", str(args.large_runs), "--range", repr(args.model.lo), repr(args.model.hi)]
    if engine == "numpy":
        cmd += ["--weights", *map(repr, dense_weights(build / "model.onnx"))]
    cmd += ["--cold-only"] if cold_only else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = run(cmd, env=env, capture=True, first_line=True, check=False)
    if p.code != 0 or not p.first_line.startswith("FIRST"):
        raise SystemExit(f"bench: worker {engine} failed: {p.err.strip()[-800:]}")
    _, first_inference, load = p.first_line.split()
    result = p.json() if not cold_only else {}
    result.update(cold_start_s=p.first_line_s, first_inference_s=float(first_inference), load_s=float(load),
                  process_peak_rss_mb=p.peak_rss_mb)
    return result


def bench_inference(build: Path, bundle: Path, args: argparse.Namespace) -> dict:
    engines = [e for e in ENGINES if not (args.quick and e == "keras_predict")]
    out = {}
    for threads in (1, 0):  # 0: each library's default thread count
        rows = {}
        for engine in engines:
            n_cold = 1 if args.quick and engine.startswith("keras") else args.cold_runs
            colds = [run_worker(engine, threads, build, bundle, args, True) for _ in range(n_cold)]
            full = run_worker(engine, threads, build, bundle, args, False)
            lat = full["batch1_s"]
            rows[engine] = {
                "cold_start_s": stats([c["cold_start_s"] for c in colds]),
                "first_inference_ms": stats([c["first_inference_s"] * 1e3 for c in colds]),
                "batch1_us": {"p50": quantile(lat, 50) * 1e6, "p90": quantile(lat, 90) * 1e6,
                              "p99": quantile(lat, 99) * 1e6, "calls": len(lat)},
                "batch1_calls_per_s": 1 / statistics.median(lat),
                "large_batch_values_per_s": stats([args.large_batch / s for s in full["large_s"]]),
                "peak_rss_mb": full["process_peak_rss_mb"],
                "cold_peak_rss_mb": stats([c["process_peak_rss_mb"] for c in colds]),
            }
        for engine, row in rows.items():
            row["vs_onnxruntime"] = _ratios(row, rows["onnxruntime"])
            row["vs_numpy"] = _ratios(row, rows["numpy"])
        out["threads_1" if threads == 1 else "threads_default"] = rows
    return out


def _ratios(row: dict, base: dict) -> dict:
    return {
        "cold_start": row["cold_start_s"]["median"] / base["cold_start_s"]["median"],
        "batch1_p50": row["batch1_us"]["p50"] / base["batch1_us"]["p50"],
        "large_batch_time": base["large_batch_values_per_s"]["median"] / row["large_batch_values_per_s"]["median"],
        "peak_rss": row["peak_rss_mb"] / base["peak_rss_mb"],
    }


def bench_variants(build: Path, bundle: Path, args: argparse.Namespace) -> dict:
    """The variants verify built, each in its own runtime (one thread, through the pipeline's
    runners, as verify measures them), beside onnx-fp32 through the same runner: ratios to it."""
    index = json.loads((build / "variants" / "index.json").read_text())["variants"]
    names = ["onnx-fp32", *(n for n, v in index.items() if v["built"])]
    rows = {}
    for name in names:  # onnx-fp32: build/model.onnx through the same runner class
        full = run_worker(name, 1, build, bundle, args, False)
        size = (build / "model.onnx").stat().st_size if name == "onnx-fp32" else index[name]["bytes"]
        rows[name] = {"batch1_p50_us": quantile(full["batch1_s"], 50) * 1e6,
                      "large_batch_values_per_s": stats([args.large_batch / s for s in full["large_s"]]),
                      "size_bytes": size}
    base = rows["onnx-fp32"]
    for row in rows.values():
        row["p50_vs_onnx_fp32"] = row["batch1_p50_us"] / base["batch1_p50_us"]
        row["values_per_s_vs_onnx_fp32"] = (row["large_batch_values_per_s"]["median"]
                                            / base["large_batch_values_per_s"]["median"])
        row["size_vs_onnx_fp32"] = row["size_bytes"] / base["size_bytes"]
    return rows


def bench_cli_vs_bare(bundle: Path, runs: int) -> dict:
    """`python -m runtime predict 100` against a bare onnxruntime script, alternating, pair by pair."""
    cli, bare = [], []
    env = {**os.environ, "PYTHONPATH": ""}
    for _ in range(runs + 1):
        cli.append(run([PY, "-m", "runtime", "predict", "100"], cwd=bundle, env=env))
        bare.append(run([PY, str(ROOT / "bench" / "bare_ort.py"), "model.onnx"], cwd=bundle, env=env))
    cli, bare = cli[1:], bare[1:]  # the first pair warms the page cache
    return {
        "runtime_predict_s": stats([c.wall_s for c in cli]),
        "bare_script_s": stats([b.wall_s for b in bare]),
        "wall_ratio": stats([c.wall_s / b.wall_s for c, b in zip(cli, bare)]),
        "runtime_peak_rss_mb": stats([c.peak_rss_mb for c in cli]),
        "bare_peak_rss_mb": stats([b.peak_rss_mb for b in bare]),
        "rss_ratio": stats([c.peak_rss_mb / b.peak_rss_mb for c, b in zip(cli, bare)]),
    }


def bench_predict_overhead(bundle: Path, pairs: int) -> dict:
    d = run([PY, str(ROOT / "bench" / "overhead.py"), str(bundle), str(pairs)], capture=True).json()
    return {"runner_us": stats([v * 1e6 for v in d["runner_s"]]), "raw_us": stats([v * 1e6 for v in d["raw_s"]]),
            "ratio": stats(d["ratios"]), "calls_per_block": d["calls_per_block"]}


def bench_stream(bundle: Path, work: Path, lines: int, runs: int, model: Scalar) -> dict:
    """`python -m runtime stream` on ``lines`` values seeded uniform over the working range."""
    import numpy as np

    src = work / "stream-input.txt"
    lo, hi = model.at(0, 4), model.at(1, 4)  # so that the values as written stay in the range
    x = np.random.default_rng(0).uniform(lo, hi, lines)
    src.write_text("\n".join(f"{v:.4f}" for v in x) + "\n")
    walls = []
    for _ in range(runs):
        with open(src, "rb") as fin:
            walls.append(run([PY, "-m", "runtime", "stream"], cwd=bundle, stdin=fin,
                             env={**os.environ, "PYTHONPATH": ""}).wall_s)
    src.unlink()
    return {"lines": lines, "wall_s": stats(walls), "lines_per_s": stats([lines / w for w in walls])}
