"""`bench`: the runner's own numbers on this device, as JSON.

The metrics onnxruntime_perf_test and TFLite's benchmark_model report: cold start
(process start to first answer, in fresh processes), first inference after the session
is created, steady-state latency percentiles at batch 1, throughput at a large batch,
and peak RSS. Stdlib timers (``time.perf_counter_ns``) and ``resource.getrusage``.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .errors import RuntimeFailure


def _percentiles(ns: list[int]) -> dict[str, float]:
    q = statistics.quantiles(ns, n=100, method="inclusive")
    return {"p50_us": q[49] / 1e3, "p90_us": q[89] / 1e3, "p99_us": q[98] / 1e3,
            "mean_us": statistics.fmean(ns) / 1e3, "min_us": min(ns) / 1e3}


def cold_start(bundle: Path, runs: int, threads: int, trusted_keys: str | None = None) -> dict[str, float]:
    """Wall time from spawning `python -m runtime predict 100` to its answer, in fresh processes."""
    times = []
    trust = ["--trusted-keys", str(trusted_keys)] if trusted_keys else []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "runtime", "predict", "100", "--bundle", str(bundle), "--threads", str(threads),
             *trust],
            cwd=bundle, capture_output=True,
        )
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeFailure(f"bench: cold-start run failed: {r.stderr.decode().strip()}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "runs": runs, "peak_rss_mb": peak_kb / 1024}


def run(bundle: Path, threads: int = 1, calls: int = 20000, large_batch: int = 1_000_000,
        cold_runs: int = 5, trusted_keys: str | None = None) -> dict:
    from .runner import Runner

    t0 = time.perf_counter()
    runner = Runner.from_bundle(bundle, threads, trusted_keys)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    runner.predict(100.0)
    first_s = time.perf_counter() - t0

    for _ in range(1000):  # warm-up
        runner.predict(100.0)
    clock = time.perf_counter_ns
    ns = []
    for i in range(calls):
        v = float(i % 200 - 50)
        t = clock()
        runner.predict(v)
        ns.append(clock() - t)

    x = np.linspace(-273.15, 1000.0, large_batch, dtype=np.float32)
    runner.predict(x)
    reps = []
    for _ in range(3):
        t = time.perf_counter()
        runner.predict(x)
        reps.append(time.perf_counter() - t)
    best = min(reps)

    return {
        "bundle": str(bundle),
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "onnxruntime": __import__("onnxruntime").__version__,
        "threads": threads,
        "session_load_s": load_s,
        "first_inference_s": first_s,
        "batch1_latency": {"calls": calls, **_percentiles(ns)},
        "large_batch": {"batch": large_batch, "best_s": best, "values_per_s": large_batch / best},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cold_start": cold_start(bundle, cold_runs, threads, trusted_keys) if cold_runs else None,
    }
