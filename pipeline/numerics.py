"""The comparisons verify makes, on numpy arrays: float32 ulps, parity within a tolerance,
accuracy against the formula. numpy only; no file, no runtime, no config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .probes import fahrenheit


@dataclass
class Parity:
    """How one format's outputs compare with the reference: ``bool(p)`` is the verdict."""

    passed: bool
    probes: int
    failures: int
    max_ulp: int  # float32 values between output and reference, at worst: the rounding headline
    max_abs_err: float
    mean_abs_err: float
    max_rel_err: float
    mean_rel_err: float
    worst_input: float  # the probe furthest beyond (or closest to) its allowed error
    worst_abs_err: float
    worst_output: float
    worst_reference: float
    atol: float
    rtol: float
    min_atol_to_pass: float  # the smallest atol (with this rtol) that would have passed

    def __bool__(self) -> bool:
        return self.passed


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 steps apart ``a`` and ``b`` are, elementwise (0 when equal; -0.0 equals 0.0).

    Maps each float32's bits to an integer that counts up through the floats in order,
    so the difference counts the representable values between them at any magnitude.
    """

    def ordinal(x: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(ordinal(a) - ordinal(b))


def compare(x: np.ndarray, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> Parity:
    """Elementwise |got - ref| <= atol + rtol * |ref|; equal infinities count as equal, NaN never."""
    ref64 = ref.astype(np.float64)
    got64 = got.astype(np.float64)
    same = ref64 == got64  # also true for equal infinities
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(same, 0.0, np.abs(got64 - ref64))
    abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
    scale = np.where(np.isfinite(ref64), np.abs(ref64), 0.0)
    rel_err = abs_err / np.maximum(scale, np.finfo(np.float32).tiny)
    allowed = atol + rtol * scale
    with np.errstate(invalid="ignore"):
        excess = abs_err - allowed
    worst = int(np.argmax(excess))
    need = float(np.max(abs_err - rtol * scale))
    return Parity(
        passed=bool(np.all(abs_err <= allowed)),
        probes=int(x.size),
        failures=int(np.count_nonzero(abs_err > allowed)),
        max_ulp=int(ulp_distance(got, ref).max()),
        max_abs_err=float(abs_err.max()),
        mean_abs_err=float(abs_err.mean()),
        max_rel_err=float(rel_err.max()),
        mean_rel_err=float(rel_err.mean()),
        worst_input=float(x[worst]),
        worst_abs_err=float(abs_err[worst]),
        worst_output=float(got[worst]),
        worst_reference=float(ref[worst]),
        atol=atol,
        rtol=rtol,
        min_atol_to_pass=max(need, 0.0),
    )


def accuracy(x: np.ndarray, y: np.ndarray, max_mae_f: float) -> dict[str, Any]:
    """MAE and max error in degF of outputs ``y`` against F = 1.8 C + 32."""
    err = np.abs(y.astype(np.float64) - fahrenheit(x))
    worst = int(np.argmax(err))
    mae = float(err.mean())
    return {
        "mae_f": mae,
        "max_err_f": float(err[worst]),
        "worst_input_c": float(x[worst]),
        "points": int(x.size),
        "range_c": [float(x.min()), float(x.max())],
        "max_mae_f": max_mae_f,
        "passed": bool(mae <= max_mae_f),
    }


def tiled(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` repeated end to end and cut to ``n`` values (the large batch made of the probes)."""
    return np.tile(x, -(-n // x.size))[:n]
