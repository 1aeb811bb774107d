"""`bench`: the runner's own numbers on this device, as JSON.

The metrics onnxruntime_perf_test and TFLite's benchmark_model report: cold start
(process start to first answer, in fresh processes), first inference after the session
is created, steady-state latency percentiles at batch 1, throughput at a large batch,
and peak RSS. Stdlib timers (``time.perf_counter_ns``) and ``resource.getrusage``.

What it feeds: the scalar path (one value in and one out) the tutorial's numbers, when the
model's valid range holds them (the tutorial's model, every bundle made before signatures);
any other model its golden inputs (golden.json; by input name for a model of several inputs
or outputs): batch 1 cycles through them one example at a time, the large batch repeats
them to ``large_batch`` input values in whole examples, and the cold start answers the
first one from an .npz.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import manifest as manifest_mod
from .errors import BundleError, InputError, RuntimeFailure


def _percentiles(ns: list[int]) -> dict[str, float]:
    q = statistics.quantiles(ns, n=100, method="inclusive")
    return {"p50_us": q[49] / 1e3, "p90_us": q[89] / 1e3, "p99_us": q[98] / 1e3,
            "mean_us": statistics.fmean(ns) / 1e3, "min_us": min(ns) / 1e3}


def cold_start(bundle: Path, runs: int, threads: int, trusted_keys: str | None = None,
               args: tuple[str, ...] = ("100",)) -> dict[str, float]:
    """Wall time from spawning `python -m runtime predict 100` (``args`` in place of "100") to its
    answer, in fresh processes."""
    times = []
    trust = ["--trusted-keys", str(trusted_keys)] if trusted_keys else []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "runtime", "predict", *args, "--bundle", str(bundle), "--threads", str(threads),
             *trust],
            cwd=bundle, capture_output=True,
        )
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeFailure(f"bench: cold-start run failed: {r.stderr.decode().strip()}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "runs": runs, "peak_rss_mb": peak_kb / 1024}


# The scalar path's numbers (the tutorial's, in degrees Celsius): the large batch spans them, batch 1
# cycles through -50..149, the first inference and the cold start answer 100.
SCALAR_SPAN = (-273.15, 1000.0)
SCALAR_FIRST = 100.0


def _scalar_value(i: int) -> float:
    return float(i % 200 - 50)


def takes_scalar_numbers(runner) -> bool:
    """Whether ``runner``'s model is fed the scalar path's numbers: one value in and one out, and
    its valid range holds every number that path feeds (the tutorial's model does)."""
    if not runner.scalar:
        return False
    try:
        runner.validate(np.float32(SCALAR_SPAN))
        runner.validate([_scalar_value(0), _scalar_value(199), SCALAR_FIRST])
    except InputError:
        return False
    return True


def golden_inputs(runner) -> dict[str, np.ndarray]:
    """The model's golden inputs (golden.json, its sha256 checked against the manifest) as float32
    batches (n, *shape) by input name, checked as ``predict`` checks them: by input name for a
    model of several inputs or outputs, a batch for one of one input (``{"celsius": [...]}`` in
    a bundle made before signatures). Raises BundleError in one line when they are not that."""
    file = runner.manifest["golden"]["file"]
    data = manifest_mod.check_file(runner.bundle, runner.manifest, file)
    if runner.multi:
        names = ", ".join(map(repr, runner.signature.input_names))
        expected = f"expected golden inputs by input name ({names})"
    else:
        expected = "expected golden inputs as a batch (n, " + ", ".join(map(str, runner.signature.shape)) + ")"
    try:
        doc = json.loads(data)
        inputs = doc["celsius"] if not runner.multi and "inputs" not in doc and "celsius" in doc else doc["inputs"]
        if runner.multi:
            if not isinstance(inputs, dict):
                raise TypeError(f"got {type(inputs).__name__}")
            return runner.validate(inputs)
        if not isinstance(inputs, list):
            raise TypeError(f"got {type(inputs).__name__}")
        return {runner.input_name: runner.validate(inputs)}
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{file} | bench: {expected}: {e}") from None
    except InputError as e:
        raise BundleError(f"{file} | bench: golden inputs: {e.message}") from None


def run(bundle: Path, threads: int = 1, calls: int = 20000, large_batch: int = 1_000_000,
        cold_runs: int = 5, trusted_keys: str | None = None) -> dict:
    """The figures as a JSON-ready dict. ``large_batch``: the scalar path's batch size; for a
    model fed its golden inputs, the input values of the large batch (in whole golden examples)."""
    from .runner import Runner

    t0 = time.perf_counter()
    runner = Runner.from_bundle(bundle, threads, trusted_keys)
    load_s = time.perf_counter() - t0
    fed = None
    if takes_scalar_numbers(runner):
        ones, first = None, SCALAR_FIRST
        large = np.linspace(*SCALAR_SPAN, large_batch, dtype=np.float32)
    else:  # its golden inputs, one example at a time; by name for a model of several inputs
        x = golden_inputs(runner)
        n = next(iter(x.values())).shape[0]
        ones = [{k: np.ascontiguousarray(v[i:i + 1]) for k, v in x.items()} for i in range(n)]
        per_example = sum(int(np.prod(v.shape[1:])) for v in x.values())
        examples = max(1, large_batch // per_example)
        large = {k: np.resize(v, (examples, *v.shape[1:])) for k, v in x.items()}
        fed = {"from": runner.manifest["golden"]["file"], "golden_examples": n,
               "inputs": {k: list(v.shape[1:]) for k, v in x.items()}}
        if not runner.multi:  # a model of one input takes its array alone
            ones = [one[runner.input_name] for one in ones]
            large = large[runner.input_name]
        first = ones[0]

    t0 = time.perf_counter()
    runner.predict(first)
    first_s = time.perf_counter() - t0

    for _ in range(1000):  # warm-up
        runner.predict(first)
    clock = time.perf_counter_ns
    ns = []
    for i in range(calls):
        v = _scalar_value(i) if ones is None else ones[i % len(ones)]
        t = clock()
        runner.predict(v)
        ns.append(clock() - t)

    runner.predict(large)
    reps = []
    for _ in range(3):
        t = time.perf_counter()
        runner.predict(large)
        reps.append(time.perf_counter() - t)
    best = min(reps)

    if fed is None:
        throughput = {"batch": large_batch, "best_s": best, "values_per_s": large_batch / best}
    else:
        throughput = {"batch": examples, "values": examples * per_example, "best_s": best,
                      "examples_per_s": examples / best, "values_per_s": examples * per_example / best}
    cold_first = None if fed is None else (first if runner.multi else {runner.input_name: first})
    return {
        "bundle": str(bundle),
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "onnxruntime": __import__("onnxruntime").__version__,
        "threads": threads,
        **({"fed": fed} if fed is not None else {}),
        "session_load_s": load_s,
        "first_inference_s": first_s,
        "batch1_latency": {"calls": calls, **_percentiles(ns)},
        "large_batch": throughput,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cold_start": _cold_start(bundle, cold_runs, threads, trusted_keys, cold_first),
    }


def _cold_start(bundle: Path, runs: int, threads: int, trusted_keys: str | None, first: dict | None) -> dict | None:
    """``cold_start`` of `predict 100`, or for a model fed its golden inputs of `predict --input`
    an .npz of ``first`` (its first golden example by input name, in a temporary folder); None for 0 runs."""
    if not runs:
        return None
    if first is None:
        return cold_start(bundle, runs, threads, trusted_keys)
    with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
        npz = Path(tmp) / "first.npz"
        np.savez(npz, **first)
        return cold_start(bundle, runs, threads, trusted_keys, ("--input", str(npz)))
