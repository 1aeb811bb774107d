"""Verify's measurements of every model, the variants' and the float32 ones': each against its
budget in degF, with its size and its speed in its own runtime.

For each model: parity with Keras over the working range (batch 1 and the large batch),
accuracy against the formula on the held-out grid (batch 1), batch-1 latency (p50) and
values/s at the large batch. The float32 models have no budget (their checks are verify's
ulp-level ones); a variant export could not build is reported with the converter's reason.
Also writes build/verify/variants.npz, the data of the variants' plots.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np

from export import variants as V

from . import fsutil, probes, reference
from .errors import StageInputError
from .layout import Layout
from .names import FORMATS
from .numerics import accuracy, tiled
from .runners import Runner, open_runner


def check_variant(name: str, runner: Runner, ref: dict[str, np.ndarray], cfg: dict[str, Any],
                  budget: dict[str, float] | None, size: int, keep: dict[str, np.ndarray]) -> dict[str, Any]:
    """One model against its budget (degF): parity with Keras over the working range (batch 1
    and the large batch), accuracy against the formula at batch 1, speed, size. Its batch-1
    outputs on the probe grid go into ``keep[name]`` (the plots' data)."""
    x, keras_y = ref["x"], ref["keras_y"]
    lo, hi = probes.working_range(cfg)
    large = cfg["verify"]["large_batch"]
    x_large, keras_large = tiled(x, large), tiled(keras_y, large)
    t = time.perf_counter()
    y_large = runner.run(x_large)
    large_s = time.perf_counter() - t
    parity = {}
    y1 = runner.run_each(x)
    keep[name] = y1[reference.in_group(ref, "grid")]
    for label, (xs, ys, ks) in {"batch_1": (x, y1, keras_y),
                                f"batch_{large}": (x_large, y_large, keras_large)}.items():
        sel = (xs >= lo) & (xs <= hi)
        err = np.abs(ys[sel].astype(np.float64) - ks[sel].astype(np.float64))
        err = np.where(np.isnan(err), np.inf, err)
        worst = int(np.argmax(err))
        parity[label] = {"max_abs_err_f": float(err[worst]), "worst_input_c": float(xs[sel][worst])}
    worst_batch = max(parity, key=lambda k: parity[k]["max_abs_err_f"])
    acc_x = ref["accuracy_x"]
    acc = accuracy(acc_x, runner.run_each(acc_x), budget["max_mae_f"] if budget else cfg["verify"]["max_mae_f"])
    out = {
        "size_bytes": size,
        "parity": {"range_c": [lo, hi], "max_abs_err_f": parity[worst_batch]["max_abs_err_f"],
                   "worst_input_c": parity[worst_batch]["worst_input_c"], "worst_batch": worst_batch, **parity},
        "accuracy": {k: acc[k] for k in ("mae_f", "max_err_f", "worst_input_c", "points", "range_c")},
        "speed": {"p50_batch_1_us": batch_1_p50_us(runner), "values_per_s_large_batch": large / large_s},
        "budget": budget,
    }
    if budget is not None:
        reasons = over_budget(out["parity"], acc, budget)
        out["passed"] = not reasons
        out["reason"] = "; ".join(reasons)
    return out


def batch_1_p50_us(runner: Runner, one: np.ndarray | None = None) -> float:
    """The median batch-1 latency in its own runtime, Python call included, in microseconds,
    on ``one`` example (default: the tutorial's 20 degC)."""
    one = np.float32([20.0]) if one is None else one
    for _ in range(50):  # warm up: first calls pay for allocations and caches
        runner.run(one)
    times = []
    for _ in range(500):
        t = time.perf_counter()
        runner.run(one)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


def over_budget(p: dict[str, Any], acc: dict[str, Any], budget: dict[str, float]) -> list[str]:
    """One short reason per figure beyond its budget (none: within budget)."""
    reasons = []
    if p["max_abs_err_f"] > budget["parity_f"]:
        reasons.append(f"parity {p['max_abs_err_f']:.4g} degF > {budget['parity_f']:g} "
                       f"(at {p['worst_input_c']:.6g} degC, {p['worst_batch'].replace('_', ' ')})")
    if acc["mae_f"] > budget["max_mae_f"]:
        reasons.append(f"MAE {acc['mae_f']:.4g} degF > {budget['max_mae_f']:g}")
    if acc["max_err_f"] > budget["max_err_f"]:
        reasons.append(f"max error {acc['max_err_f']:.4g} degF > {budget['max_err_f']:g} "
                       f"(at {acc['worst_input_c']:.6g} degC)")
    return reasons


def check_variants(cfg: dict[str, Any], layout: Layout, ref: dict[str, np.ndarray],
                   runners: dict[str, Runner]) -> dict[str, Any]:
    """Every model: the float32 ones (no budget: their checks are the ulp-level ones) and
    each variant in build/variants/index.json against its budget; 'not built' ones with the reason."""
    try:
        index = json.loads(layout.variants_index.read_text())["variants"]
    except (OSError, ValueError, KeyError):
        raise StageInputError(layout.variants_index, "not found or unreadable", "run `make export` first") from None
    keep: dict[str, np.ndarray] = {}
    out = {f"{fmt}-fp32": check_variant(f"{fmt}-fp32", runners[fmt], ref, cfg, None,
                                        layout.model(fmt).stat().st_size, keep)
           for fmt in FORMATS}
    for name, entry in index.items():
        budget = cfg["variants"].get(name)
        if budget is None:
            continue  # built under an older config; make reruns export
        if not entry["built"]:
            out[name] = {"built": False, "passed": False, "reason": f"not built: {entry['reason']}", "budget": budget}
            continue
        path = layout.variants_dir / entry["file"]
        runner = open_runner(V.fmt(name), path)
        out[name] = {"built": True, **check_variant(name, runner, ref, cfg, budget, path.stat().st_size, keep)}
    sel = reference.in_group(ref, "grid")
    buf = io.BytesIO()
    np.savez(buf, x=ref["x"][sel], keras=ref["keras_y"][sel], **keep)
    fsutil.write_bytes(layout.variants_npz, buf.getvalue())
    return out
