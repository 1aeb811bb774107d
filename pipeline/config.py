"""Load and validate the pipeline's TOML config.

Stdlib only, so a bad config is refused in milliseconds, before TensorFlow is imported.
Every key is required (the presets in configs/ are complete); unknown keys and wrong
types or ranges are refused with a message naming the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Callable

from export.formats import VARIANTS

from .errors import ConfigError

LOSSES = ("mean_squared_error", "mean_absolute_error", "huber")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "gelu")

# Opsets tf2onnx 1.17 can target (13..18) and the oldest IR version that may carry
# each (tf2onnx.constants.OPSET_TO_IR_VERSION). A newer IR than needed only narrows
# which onnxruntime releases can load the file, so the range stops at 10.
OPSET_MIN_IR = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8}
OPSET_RANGE = (min(OPSET_MIN_IR), max(OPSET_MIN_IR))
IR_RANGE = (7, 10)


# --- field checkers: each returns the normalised value or raises ValueError(expected) ---


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("a number")
    return float(v)


def _finite(v: Any) -> float:
    x = _number(v)
    if not math.isfinite(x):
        raise ValueError("a finite number")
    return x


def _positive(v: Any) -> float:
    try:
        x = _finite(v)
    except ValueError:
        raise ValueError("a number > 0") from None
    if x <= 0:
        raise ValueError("a number > 0")
    return x


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        return v

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise ValueError("one of " + ", ".join(repr(o) for o in options))
        return v

    return check


def _float_list(v: Any) -> list[float]:
    if not isinstance(v, list) or not v:
        raise ValueError("a non-empty list of finite numbers")
    try:
        return [_finite(x) for x in v]
    except ValueError:
        raise ValueError("a non-empty list of finite numbers") from None


def _layers(v: Any) -> list[int]:
    expected = "a non-empty list of unit counts (integers >= 1) ending in 1"
    if not isinstance(v, list) or not v:
        raise ValueError(expected)
    if any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in v) or v[-1] != 1:
        raise ValueError(expected)
    return list(v)


def _number_or_inf(v: Any) -> float:
    x = _number(v)
    if math.isnan(x):
        raise ValueError("a number (inf allowed)")
    return x


def _tolerance() -> dict[str, Callable[[Any], Any]]:
    return {"atol": _positive, "rtol": _positive}


# Reduced-precision variants (export/variants.py): each table under [variants] named after
# one of export.formats.VARIANTS is built and verified against its budget, in degF.
CALIBRATIONS = ("training", "range")
BUDGET = {"max_mae_f": _positive, "max_err_f": _positive, "parity_f": _positive}
VARIANTS_KEYS = {"calibration": _choice(CALIBRATIONS), "calibration_points": _int(2, 1_000_000)}
BUNDLE_MODELS = ("onnx-fp32", "auto") + tuple(v for v in VARIANTS if v.startswith("onnx-"))


SCHEMA: dict[str, dict[str, Any]] = {
    "data": {"celsius": _float_list, "fahrenheit": _float_list},
    "model": {"layers": _layers, "activation": _choice(ACTIVATIONS)},
    "train": {
        "loss": _choice(LOSSES),
        "optimizer": _choice(OPTIMIZERS),
        "learning_rate": _positive,
        "steps": _int(1, 10_000_000),
        "seed": _int(0, 2**31 - 1),
    },
    "export": {"opset": _int(*OPSET_RANGE), "ir_version": _int(*IR_RANGE)},
    "verify": {
        "grid_min": _finite,
        "grid_max": _finite,
        "grid_points": _int(2, 10_000_000),
        "random_count": _int(0, 10_000_000),
        "random_seed": _int(0, 2**31 - 1),
        "large_batch": _int(2, 100_000_000),
        "accuracy_min": _finite,
        "accuracy_max": _finite,
        "accuracy_points": _int(2, 10_000_000),
        "max_mae_f": _positive,
        "onnx": _tolerance(),
        "tflite": _tolerance(),
    },
    "variants": None,  # checked by _check_variants: fixed keys plus optional tables per variant
    "bundle": {"model": _choice(BUNDLE_MODELS)},
    "runtime": {
        "valid_min_celsius": _number_or_inf,
        "valid_max_celsius": _number_or_inf,
        "golden_count": _int(1, 100_000),
    },
}


def _check_table(table: Any, schema: dict[str, Any], prefix: str, path) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(path, prefix.rstrip("."), "expected a table")
    out: dict[str, Any] = {}
    for key in table:
        if key not in schema:
            raise ConfigError(
                path, prefix + key, "unknown key (expected one of: " + ", ".join(schema) + ")"
            )
    for key, check in schema.items():
        name = prefix + key
        if key not in table:
            raise ConfigError(path, name, "missing (every key is required; see configs/default.toml)")
        if check is None:
            out[key] = _check_variants(table[key], name + ".", path)
            continue
        if isinstance(check, dict):
            out[key] = _check_table(table[key], check, name + ".", path)
            continue
        try:
            out[key] = check(table[key])
        except ValueError as e:
            raise ConfigError(path, name, f"expected {e}, got {table[key]!r}") from None
    return out


def _check_variants(table: Any, prefix: str, path) -> dict[str, Any]:
    """[variants]: calibration and calibration_points, then one budget table per variant to build."""
    if not isinstance(table, dict):
        raise ConfigError(path, prefix.rstrip("."), "expected a table")
    fixed = {k: v for k, v in table.items() if k in VARIANTS_KEYS}
    for key in table:
        if key not in VARIANTS_KEYS and key not in VARIANTS:
            raise ConfigError(path, prefix + key, "unknown key (expected calibration, calibration_points, or a "
                              "variant's budget table: " + ", ".join(VARIANTS) + ")")
    out = _check_table(fixed, VARIANTS_KEYS, prefix, path)
    for key in VARIANTS:
        if key in table:
            out[key] = _check_table(table[key], BUDGET, f"{prefix}{key}.", path)
    return out


def _check_relations(cfg: dict[str, Any], path) -> None:
    data, verify, rt, export = cfg["data"], cfg["verify"], cfg["runtime"], cfg["export"]
    chosen = cfg["bundle"]["model"]
    if chosen not in ("onnx-fp32", "auto") and chosen not in cfg["variants"]:
        raise ConfigError(path, "bundle.model", f"expected a variant that is built (a [variants.{chosen}] "
                          f"budget table), got {chosen!r} without one")
    need_ir = OPSET_MIN_IR[export["opset"]]
    if export["ir_version"] < need_ir:
        raise ConfigError(
            path,
            "export.ir_version",
            f"expected >= {need_ir} for opset {export['opset']}, got {export['ir_version']}",
        )
    if len(data["celsius"]) != len(data["fahrenheit"]):
        raise ConfigError(
            path,
            "data.fahrenheit",
            f"expected as many values as data.celsius ({len(data['celsius'])}), "
            f"got {len(data['fahrenheit'])}",
        )
    for lo, hi in (("grid_min", "grid_max"), ("accuracy_min", "accuracy_max")):
        if not verify[lo] < verify[hi]:
            raise ConfigError(
                path, f"verify.{hi}", f"expected > verify.{lo} ({verify[lo]}), got {verify[hi]}"
            )
    if not rt["valid_min_celsius"] < rt["valid_max_celsius"]:
        raise ConfigError(
            path,
            "runtime.valid_max_celsius",
            f"expected > runtime.valid_min_celsius ({rt['valid_min_celsius']}), "
            f"got {rt['valid_max_celsius']}",
        )


def validate(raw: dict[str, Any], path=None) -> dict[str, Any]:
    """Check a parsed config against SCHEMA; return it normalised (ints in float fields become floats)."""
    cfg = _check_table(raw, SCHEMA, "", path)
    _check_relations(cfg, path)
    return cfg


def load(path: str | Path) -> dict[str, Any]:
    """Read, parse and validate a TOML config file.

    Raises:
        ConfigError: the file is missing, not TOML, or not a valid config.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file", f"not found (expected a TOML config; the presets are {presets()})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "file", f"cannot read: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "file", f"not valid TOML: {e}") from None
    return validate(raw, path)


def presets() -> str:
    """The preset files in configs/, for messages: 'configs/default.toml, configs/tutorial.toml'."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    return ", ".join(f"configs/{p.name}" for p in sorted(folder.glob("*.toml"))) or "(none in configs/)"


def canonical_json(cfg: dict[str, Any]) -> str:
    """The config as canonical JSON (sorted keys); infinities as strings so it stays valid JSON."""

    def enc(v):
        if isinstance(v, dict):
            return {k: enc(x) for k, x in v.items()}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v

    return json.dumps(enc(cfg), sort_keys=True, separators=(",", ":"))


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256 of the canonical JSON form: comments and key order do not change it."""
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()
