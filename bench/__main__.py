"""`python -m bench [--quick]`: measure the pipeline and the runner beside their peers.

Everything is measured in this one invocation and quoted as ratios against baselines
measured in the same run (this machine is shared and noisy): medians with min and max.
Writes build/bench/results.json and results.md and prints the table.

The measurements are bench/measure_*.py (plain dicts), the goals bench/targets.py, the
rendering bench/report.py; every child process is run through bench/proc.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import device_speed, measure_digits, measure_env, measure_inference, measure_pipeline, measure_serve, report, scalar
from bench.proc import ROOT, installed
from bench.targets import targets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer runs, smaller batches, no plain-way, Keras predict or MobileNetV3Small")
    p.add_argument("--build", type=Path, default=ROOT / "build")
    p.add_argument("--dist", type=Path, default=ROOT / "dist")
    a = p.parse_args(argv)
    a.runs = 1 if a.quick else 3
    a.cold_runs = 2 if a.quick else 5
    a.budget = 0.2 if a.quick else 1.0
    a.large_batch = 100_000 if a.quick else 1_000_000
    a.large_runs = 3 if a.quick else 5
    return a


def step(what: str) -> None:
    print(f"bench: {what} ...", file=sys.stderr, flush=True)


def measure(a: argparse.Namespace, bundle: Path, work: Path) -> dict:
    """Every section, in this order, into one dict (results.json)."""
    t0 = time.perf_counter()
    r = {"quick": a.quick, "machine": measure_env.machine(),
         "args": {"runs": a.runs, "cold_runs": a.cold_runs, "large_batch": a.large_batch}}
    step("pipeline")
    r["pipeline"] = measure_pipeline.bench_pipeline(work, a.runs, a.quick)
    step("inference engines")
    r["inference"] = measure_inference.bench_inference(a.build, bundle, a)
    step("reduced-precision variants")
    r["variants"] = measure_inference.bench_variants(a.build, bundle, a)
    step("runner cold start, stream, sizes")
    # Pairs: each ratio ranges 0.7-1.7x on a shared machine; 5 pairs' median read 1.22x where 60 read 1.04-1.09x.
    r["cli_vs_bare"] = measure_inference.bench_cli_vs_bare(bundle, 15 if a.quick else 40)
    r["predict_overhead"] = measure_inference.bench_predict_overhead(bundle, 10 if a.quick else 40)
    r["stream"] = measure_inference.bench_stream(bundle, work, 200_000 if a.quick else 2_000_000, a.runs, a.model)
    step("serve (HTTP) against its constant floor and a process per request")
    r["serve"] = measure_serve.run(bundle.resolve(), work, a.quick, a.model)
    step("the digits example (make all against a plain script, predict, stream, serve, int8)")
    r["digits"] = measure_digits.bench_digits(work, a.quick)
    step("device speed: the runner, onnxruntime and LiteRT, and the variants"
         + (" (digits; MobileNetV3Small in the full run only)" if a.quick else " (digits, MobileNetV3Small)"))
    r["device_speed"] = device_speed.bench_device_speed(work, a.quick, work / "digits")
    r["sizes"] = measure_env.sizes(a.build, a.dist)
    r["targets"] = targets(r)
    r["seconds"] = time.perf_counter() - t0
    return r


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    bundle = a.dist / "bundle"
    for need in (a.build / "model.onnx", a.build / "model.keras", a.build / "reference.npz", bundle / "manifest.json"):
        if not need.exists():
            print(f"error: {need}: not found (run `make all` first)", file=sys.stderr)
            return 3
    a.model = scalar.describe(a.build, bundle)  # what the main sections feed the model
    out_dir = a.build / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out_dir))
    try:
        r = measure(a, installed(bundle, work / "bundle"), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report.write(out_dir, r))
    print(f"bench: {r['seconds']:.0f} s; {out_dir / 'results.md'}, {out_dir / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
