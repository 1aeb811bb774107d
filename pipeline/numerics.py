"""The comparisons verify makes, on numpy arrays: float32 ulps, parity within a tolerance, error
at an output's own scale, signal-to-noise. numpy only; no file, no runtime, no config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Parity:
    """How one model's output values compare with the reference's: ``bool(p)`` is the verdict."""

    passed: bool
    probes: int  # output values compared
    failures: int
    max_ulp: int  # float32 values between output and reference, elementwise, at worst
    max_abs_err: float
    mean_abs_err: float
    max_rel_err: float
    mean_rel_err: float
    worst_index: int  # the value furthest beyond (or closest to) its allowed error
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


def abs_error(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """|got - ref| in float64; equal infinities are 0 apart, NaN anywhere is infinitely far."""
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(ref64 == got64, 0.0, np.abs(got64 - ref64))
    return np.where(np.isnan(err), np.inf, err)


def compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> Parity:
    """Elementwise |got - ref| <= atol + rtol * |ref| over flattened values; equal infinities
    count as equal, NaN never."""
    ref, got = ref.reshape(-1), got.reshape(-1)
    abs_err = abs_error(ref, got)
    ref64 = ref.astype(np.float64)
    scale = np.where(np.isfinite(ref64), np.abs(ref64), 0.0)
    rel_err = abs_err / np.maximum(scale, np.finfo(np.float32).tiny)
    allowed = atol + rtol * scale
    with np.errstate(invalid="ignore"):
        excess = abs_err - allowed
    worst = int(np.argmax(excess))
    need = float(np.max(abs_err - rtol * scale))
    return Parity(
        passed=bool(np.all(abs_err <= allowed)),
        probes=int(ref.size),
        failures=int(np.count_nonzero(abs_err > allowed)),
        max_ulp=int(ulp_distance(got, ref).max()),
        max_abs_err=float(abs_err.max()),
        mean_abs_err=float(abs_err.mean()),
        max_rel_err=float(rel_err.max()),
        mean_rel_err=float(rel_err.mean()),
        worst_index=worst,
        worst_abs_err=float(abs_err[worst]),
        worst_output=float(got[worst]),
        worst_reference=float(ref[worst]),
        atol=atol,
        rtol=rtol,
        min_atol_to_pass=max(need, 0.0),
    )


def at_scale(ref: np.ndarray, got: np.ndarray, per_column: bool = False) -> dict[str, float | None]:
    """Error measured against the output's own scale, over rows (n, *out):

    - ``scale_ulp``: the largest |got - ref| in float32 steps at the output's largest magnitude
      (ulps near zero measure nothing: a softmax probability of 1e-9 has ulps of 1e-16);
    - ``snr_db``: the signal-to-noise ratio, 10 log10(sum ref^2 / sum (got - ref)^2); None
      when every value is equal (no noise at all).
    ``per_column``: each output value (a regression's targets, each in its own units) has its
    own scale and SNR, and the worst counts; else the row is one output (a classifier's scores).
    Only finite reference values count."""
    n = len(ref)
    r, g = ref.reshape(n, -1).astype(np.float64), got.reshape(n, -1).astype(np.float64)
    if not per_column:
        r, g = r.reshape(-1, 1), g.reshape(-1, 1)
    ok = np.isfinite(r)
    err = np.where(ok, abs_error(r, g), 0.0)
    if not n or not ok.any():
        return {"scale_ulp": 0.0, "snr_db": None}
    scale = np.max(np.where(ok, np.abs(r), 0.0), axis=0)
    ulp = np.spacing(scale.astype(np.float32)).astype(np.float64)
    scale_ulp = float(np.max(err / ulp))
    signal = np.sum(np.where(ok, r, 0.0) ** 2, axis=0)
    noise = np.sum(err**2, axis=0)
    with np.errstate(divide="ignore", over="ignore"):
        snr = np.where(noise > 0, 10 * np.log10(np.maximum(signal, 1e-300) / np.maximum(noise, 1e-300)), np.inf)
    worst = float(np.min(snr))
    return {"scale_ulp": scale_ulp, "snr_db": None if math.isinf(worst) and worst > 0 else worst}


def tiled(x: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``x`` repeated end to end, cut to ``n`` rows (the large batch made of the probes)."""
    reps = -(-n // len(x))
    return np.concatenate([x] * reps)[:n] if reps > 1 else x[:n]
