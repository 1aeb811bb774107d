"""The inputs verification runs through every format, and the working range. numpy only.

Parity probes (against Keras): the training inputs, a dense grid, float edge cases and
seeded random values. Accuracy probes (against F = 1.8 C + 32): a held-out grid of
midpoints that contains no training input. The working range (the probe grid's span
within the valid inputs) is where verify measures the errors a user meets, export's
``calibration = "range"`` spreads its points and the bundle's variant golden data lie.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# 0 and -0.0, tiny and huge magnitudes whose outputs stay finite in float32
# (|w * 1e30| ~ 2e30 << 3.4e38), and the smallest subnormal.
EDGE_CASES = (0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 1e-45, -1e-45, 1e30, -1e30, 3e30, -3e30)


def parity_probes(cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Named groups of float32 probe inputs, shape (n,) each."""
    v = cfg["verify"]
    rng = np.random.default_rng(v["random_seed"])
    n_uniform = v["random_count"] // 2
    n_log = v["random_count"] - n_uniform
    uniform = rng.uniform(v["grid_min"], v["grid_max"], n_uniform)
    log_magnitude = rng.choice([-1.0, 1.0], n_log) * 10.0 ** rng.uniform(-30, 30, n_log)
    groups = {
        "training": np.asarray(cfg["data"]["celsius"]),
        "grid": np.linspace(v["grid_min"], v["grid_max"], v["grid_points"]),
        "edge": np.asarray(EDGE_CASES),
        "random": np.concatenate([uniform, log_magnitude]),
    }
    return {k: np.asarray(x, dtype=np.float32) for k, x in groups.items()}


def accuracy_grid(cfg: dict[str, Any]) -> np.ndarray:
    """Midpoints of an even grid over [accuracy_min, accuracy_max], minus any training input."""
    v = cfg["verify"]
    edges = np.linspace(v["accuracy_min"], v["accuracy_max"], v["accuracy_points"] + 1)
    mids = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
    return mids[~np.isin(mids, np.asarray(cfg["data"]["celsius"], dtype=np.float32))]


def working_range(cfg: dict[str, Any]) -> tuple[float, float]:
    """The working range: the probe grid's span, within the valid input range."""
    v, rt = cfg["verify"], cfg["runtime"]
    return max(v["grid_min"], rt["valid_min_celsius"]), min(v["grid_max"], rt["valid_max_celsius"])


def fahrenheit(celsius: np.ndarray) -> np.ndarray:
    """The exact formula, in float64."""
    return np.asarray(celsius, dtype=np.float64) * 1.8 + 32.0


def dataset_probes(cfg: dict[str, Any], ds) -> dict[str, np.ndarray]:
    """Dataset mode's parity probes, float32 (n, *shape) each: the training rows, the validation
    rows, seeded synthetic rows uniform within each feature's observed (training) range, and
    three edge rows: every feature at its observed minimum, at its maximum, and at 0."""
    v = cfg["verify"]
    lo, hi = ds.observed_range()
    rng = np.random.default_rng(v["seed"])
    shape = tuple(ds.input_shape)
    synthetic = rng.uniform(lo, hi, (v["synthetic_count"], lo.size)).reshape(-1, *shape)
    edge = np.stack([lo, hi, np.zeros_like(lo)]).reshape(-1, *shape)
    groups = {"training": ds.x_train, "validation": ds.x_val, "synthetic": synthetic, "edge": edge}
    return {k: np.asarray(x, dtype=np.float32) for k, x in groups.items()}


def calibration_rows(cfg: dict[str, Any], ds) -> np.ndarray:
    """A seeded sample of ``variants.calibration_count`` training rows (all of them when fewer)."""
    n = min(cfg["variants"]["calibration_count"], len(ds.x_train))
    rng = np.random.default_rng(cfg["train"]["seed"])
    idx = np.sort(rng.choice(len(ds.x_train), n, replace=False))
    return np.asarray(ds.x_train[idx], np.float32)
