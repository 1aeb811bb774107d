"""The rows verify runs every model over, in named groups, and the working range. numpy only.

A config picks its groups (``[verify] probes``); each is float32 rows of the model's input shape:

- ``training``: the training rows;
- ``validation``: the validation rows (held out, and the oracle's), the ones accuracy is judged on;
- ``synthetic``: ``synthetic_count`` seeded rows uniform within each feature's observed
  (training) range;
- ``edge``: three rows: every feature at its observed minimum, at its maximum, and at 0;
- ``grid``: ``grid_points`` rows evenly over the working range (every feature stepping together);
- ``extremes``: float edge cases, every feature at once: 0, -0.0, +-1, tiny (+-1e-30), the
  smallest subnormal (+-1e-45) and huge (+-1e30, +-3e30) magnitudes;
- ``random``: ``random_count`` seeded rows, half uniform over the working range, half of
  random sign and a log-uniform magnitude between 1e-30 and 1e30.

The working range (``[verify] range``, else each feature's observed training range, within
the valid range ``[runtime]``) is where verify measures the errors a user meets; calibration
``"range"`` spreads its rows over it, and the bundle's golden rows lie in it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EXTREMES = (0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 1e-45, -1e-45, 1e30, -1e30, 3e30, -3e30)


def valid_ranges(cfg: dict[str, Any], features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per feature (lo, hi), float64: ``[runtime] valid_min``/``valid_max``, overridden by ``[runtime.valid]``."""
    rt = cfg["runtime"]
    per = rt.get("valid") or {}
    lo = [per.get(f, [rt["valid_min"], rt["valid_max"]])[0] for f in features]
    hi = [per.get(f, [rt["valid_min"], rt["valid_max"]])[1] for f in features]
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def working_range(cfg: dict[str, Any], ds) -> tuple[np.ndarray, np.ndarray]:
    """Per feature (lo, hi), float64: ``verify.range`` (else the observed range) within the valid range."""
    given = cfg["verify"]["range"]
    lo, hi = ds.observed_range() if given is None else (np.full(ds.size, given[0]), np.full(ds.size, given[1]))
    vlo, vhi = valid_ranges(cfg, ds.feature_names)
    return np.maximum(lo, vlo), np.minimum(hi, vhi)


def _rows(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, features) or (n,) values as float32 rows of ``shape`` (a value per row: every feature at it)."""
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = np.repeat(values[:, None], int(np.prod(shape)), axis=1)
    return values.astype(np.float32).reshape(-1, *shape)


def groups(cfg: dict[str, Any], ds) -> dict[str, np.ndarray]:
    """The config's probe groups, in its order: name -> float32 rows (n, *input_shape)."""
    v = cfg["verify"]
    shape, f = tuple(ds.input_shape), ds.size
    obs_lo, obs_hi = ds.observed_range()
    lo, hi = working_range(cfg, ds)
    finite = np.where(np.isfinite(lo), lo, obs_lo), np.where(np.isfinite(hi), hi, obs_hi)

    def make(name: str) -> np.ndarray:
        rng = np.random.default_rng(v["seed"])
        if name == "training":
            return ds.x_train
        if name == "validation":
            return ds.x_val
        if name == "synthetic":
            return _rows(rng.uniform(obs_lo, obs_hi, (v["synthetic_count"], f)), shape)
        if name == "edge":
            return _rows(np.stack([obs_lo, obs_hi, np.zeros(f)]), shape)
        if name == "grid":
            return _rows(np.linspace(finite[0], finite[1], v["grid_points"]), shape)
        if name == "extremes":
            return _rows(np.asarray(EXTREMES), shape)
        n_uniform = v["random_count"] // 2  # name == "random"
        n_log = v["random_count"] - n_uniform
        uniform = rng.uniform(finite[0], finite[1], (n_uniform, f))
        magnitude = rng.choice([-1.0, 1.0], (n_log, f)) * 10.0 ** rng.uniform(-30, 30, (n_log, f))
        return _rows(np.concatenate([uniform, magnitude]), shape)

    return {name: np.asarray(make(name), np.float32) for name in v["probes"]}


def calibration_rows(cfg: dict[str, Any], ds) -> np.ndarray:
    """The calibrated variants' rows: ``"training"``, a seeded sample of ``calibration_count``
    training rows (all of them when fewer), in their order; ``"range"``, ``calibration_count``
    rows evenly over the working range."""
    v = cfg["variants"]
    if v["calibration"] == "range":
        lo, hi = working_range(cfg, ds)
        return _rows(np.linspace(lo, hi, v["calibration_count"]), tuple(ds.input_shape))
    n = min(v["calibration_count"], len(ds.x_train))
    rng = np.random.default_rng(cfg["train"]["seed"])
    idx = np.sort(rng.choice(len(ds.x_train), n, replace=False))
    return np.asarray(ds.x_train[idx], np.float32)


def tensor_groups(cfg: dict[str, Any], ds) -> dict[str, dict[str, np.ndarray]]:
    """``groups`` for a model of several inputs (pipeline/tensor_data.py): group name -> {input
    name: float32 rows}, every input's rows of a group as many (row i of each is one example).
    Each input's rows are made as a one-input model's are, each with its own seeded draw."""
    per = {}
    for k, name in enumerate(ds.input_names):
        seeded = {**cfg, "verify": {**cfg["verify"], "seed": cfg["verify"]["seed"] + k}}
        per[name] = groups(seeded, ds.view(name))
    return {g: {name: per[name][g] for name in ds.input_names} for g in cfg["verify"]["probes"]}


def calibration_feeds(cfg: dict[str, Any], ds) -> dict[str, np.ndarray]:
    """``calibration_rows`` for a model of several inputs: {input name: rows}, the same training
    rows of each (``"training"``), or each input's rows evenly over its working range."""
    return {name: calibration_rows(cfg, ds.view(name)) for name in ds.input_names}
