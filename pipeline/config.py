"""Load and validate the pipeline's TOML config.

Stdlib only, so a bad config is refused in milliseconds, before TensorFlow is imported.
Unknown keys and wrong types or ranges are refused with a message naming the key.

Two modes (docs/configuration.md):

- the **tutorial** mode (no ``[data] file``): the °C → °F model; every key a config leaves out
  takes its value from ``configs/default.toml``;
- the **dataset** mode (``[data] file = "data.csv"`` or ``.npz``): the user's data and model;
  every key has a default (``DATASET_DEFAULTS``), so a config names only what differs.

Paths in a config are relative to the config file's folder, or to the folder recorded in a
``config.origin`` file beside it (the copy make keeps in BUILD/config.toml records where the
original was); ``load`` returns them as absolute path strings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import tomllib
import zipfile
from pathlib import Path
from typing import Any, Callable

from export.formats import VARIANTS

from .errors import ConfigError

LOSSES = ("mean_squared_error", "mean_absolute_error", "huber")
CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy",)
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "gelu")
TASKS = ("regression", "classification")
DATA_SUFFIXES = (".csv", ".npz")
ORIGIN_NAME = "config.origin"  # beside a copied config: the absolute folder of the original
INPUTS_MK_NAME = "inputs.mk"  # beside it too: INPUT_FILES := the files outside the config a run reads

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


def _fraction(v: Any) -> float:
    """A number in (0, 1]."""
    try:
        x = _finite(v)
    except ValueError:
        raise ValueError("a number > 0 and <= 1") from None
    if not 0 < x <= 1:
        raise ValueError("a number > 0 and <= 1")
    return x


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        return v

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


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


def _units(v: Any) -> list[int]:
    """Dataset mode: a dense stack, any units; the last is the number of outputs."""
    expected = "a non-empty list of unit counts (integers >= 1), the last one the number of outputs"
    if not isinstance(v, list) or not v or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in v):
        raise ValueError(expected)
    return list(v)


def _number_or_inf(v: Any) -> float:
    x = _number(v)
    if math.isnan(x):
        raise ValueError("a number (inf allowed)")
    return x


def _names(what: str) -> Callable[[Any], list[str]]:
    """A non-empty list of distinct non-empty strings."""
    expected = f"a non-empty list of distinct {what} (strings)"

    def check(v: Any) -> list[str]:
        if not isinstance(v, list) or not v or any(not isinstance(s, str) or not s.strip() for s in v):
            raise ValueError(expected)
        if len(set(v)) != len(v):
            dup = next(s for s in v if v.count(s) > 1)
            raise ValueError(f"{expected}; {dup!r} appears twice")
        return list(v)

    return check


def _labels(v: Any) -> list[str]:
    """Class names in index order: strings, or integers (kept as their decimal text)."""
    expected = "a list of at least 2 distinct class names (strings or integers)"
    if not isinstance(v, list) or len(v) < 2:
        raise ValueError(expected)
    out = []
    for s in v:
        if isinstance(s, bool) or not isinstance(s, (str, int)) or (isinstance(s, str) and not s.strip()):
            raise ValueError(expected)
        out.append(str(s).strip())
    if len(set(out)) != len(out):
        dup = next(s for s in out if out.count(s) > 1)
        raise ValueError(f"{expected}; {dup!r} appears twice")
    return out


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("a non-empty string")
    return v.strip()


_BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _bundle_name(v: Any) -> str:
    if not isinstance(v, str) or not _BUNDLE_NAME.fullmatch(v):
        raise ValueError("a name of letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)")
    return v


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

# --- the dataset mode ---

# The variants' budgets by task (keys of each [variants.<name>] table; None = report only).
VARIANT_BUDGETS = {
    "regression": {"max_mae": _positive, "parity": _positive},
    "classification": {"max_accuracy_drop": _fraction, "min_agreement": _fraction},
}
DEFAULT_BUDGET = {
    "regression": {"max_mae": None, "parity": None},
    "classification": {"max_accuracy_drop": 0.01, "min_agreement": 0.99},
}

# Every key of the dataset mode and its default. data.file has none (it is what makes the
# mode); the paths (data.file, a validation file, model.builder's file, model.file) become
# absolute; bundle.name defaults to the name of the config's folder.
DATASET_DEFAULTS: dict[str, Any] = {
    "data": {"file": None, "target": None, "features": None, "validation": 0.2, "standardize": True},
    "task": {"kind": "regression", "labels": None},
    "model": {"builder": None, "file": None, "layers": None, "activation": "relu"},
    "train": {"loss": "auto", "optimizer": "adam", "learning_rate": 0.001, "epochs": 50, "batch_size": 32,
              "seed": 0},
    "export": {"opset": 17, "ir_version": 8},
    "verify": {
        "synthetic_count": 256,
        "seed": 1,
        "large_batch": 256,
        "onnx": {"atol": 1e-5, "rtol": 1e-4},
        "tflite": {"atol": 1e-5, "rtol": 1e-4},
        "max_mae": None,
        "min_accuracy": None,
    },
    "variants": {"calibration_count": 300},  # plus every variant with its task's DEFAULT_BUDGET
    "bundle": {"model": "onnx-fp32", "name": None},
    "runtime": {"valid_min": -math.inf, "valid_max": math.inf, "valid": {}, "golden_count": 64},
}


def _dataset_schema(base: Path) -> dict[str, Any]:
    """SCHEMA of the dataset mode; path checkers resolve against ``base`` (the config's folder)."""

    def path_of(suffixes: tuple[str, ...], what: str) -> Callable[[Any], str]:
        def check(v: Any) -> str:
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"a path to {what}")
            p = (base / v).resolve() if not Path(v).is_absolute() else Path(v).resolve()
            if p.suffix.lower() not in suffixes:
                raise ValueError(f"a path to {what} (a file ending in {' or '.join(suffixes)})")
            if not p.is_file():
                raise ValueError(f"an existing file; {p} does not exist (paths are relative to {base})")
            return str(p)

        return check

    data_file = path_of(DATA_SUFFIXES, "a .csv with a header row or an .npz with arrays x and y")

    def validation(v: Any) -> float | str:
        if isinstance(v, str):
            return data_file(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError("a fraction > 0 and < 1 of the rows to hold out, or a path to a validation file")
        return float(v)

    def builder(v: Any) -> str:
        expected = "'file.py:function' (a Python file, relative to the config's folder, and its build function)"
        if not isinstance(v, str) or ":" not in v:
            raise ValueError(expected)
        file, _, fn = v.rpartition(":")
        if not file.endswith(".py") or not fn.isidentifier():
            raise ValueError(expected)
        p = (base / file).resolve()
        if not p.is_file():
            raise ValueError(f"{expected}; {p} does not exist")
        return f"{p}:{fn}"

    keras_file = path_of((".keras",), "a trained Keras model")

    def trained(v: Any) -> str:
        p = keras_file(v)
        try:
            with zipfile.ZipFile(p) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError):
            raise ValueError(f"a Keras 3 .keras file; {p} is not a zip archive") from None
        if "config.json" not in names:
            raise ValueError(f"a Keras 3 .keras file; {p} holds no config.json") from None
        return p

    def valid(v: Any) -> dict[str, list[float]]:
        expected = 'a table of feature name = [lo, hi] (numbers, inf allowed, lo < hi)'
        if not isinstance(v, dict):
            raise ValueError(expected)
        out = {}
        for name, r in v.items():
            try:
                lo, hi = (_number_or_inf(x) for x in r) if isinstance(r, list) and len(r) == 2 else (None, None)
            except ValueError:
                lo = hi = None
            if lo is None or not lo < hi:
                raise ValueError(f"{expected}; got {name} = {r!r}")
            out[name] = [lo, hi]
        return out

    return {
        "data": {"file": data_file, "target": _text, "features": _names("feature columns"),
                 "validation": validation, "standardize": _bool},
        "task": {"kind": _choice(TASKS), "labels": _labels},
        "model": {"builder": builder, "file": trained, "layers": _units, "activation": _choice(ACTIVATIONS)},
        "train": {
            "loss": _choice(("auto",) + LOSSES + CLASSIFICATION_LOSSES),
            "optimizer": _choice(OPTIMIZERS),
            "learning_rate": _positive,
            "epochs": _int(1, 1_000_000),
            "batch_size": _int(1, 10_000_000),
            "seed": _int(0, 2**31 - 1),
        },
        "export": {"opset": _int(*OPSET_RANGE), "ir_version": _int(*IR_RANGE)},
        "verify": {
            "synthetic_count": _int(0, 10_000_000),
            "seed": _int(0, 2**31 - 1),
            "large_batch": _int(2, 100_000_000),
            "onnx": _tolerance(),
            "tflite": _tolerance(),
            "max_mae": _positive,
            "min_accuracy": _fraction,
        },
        "variants": None,
        "bundle": {"model": _choice(BUNDLE_MODELS), "name": _bundle_name},
        "runtime": {"valid_min": _number_or_inf, "valid_max": _number_or_inf, "valid": valid,
                    "golden_count": _int(1, 100_000)},
    }


# --- checking tables ---


def _unknown(path, name: str, schema: dict[str, Any], other: dict[str, Any] | None, mode: str) -> ConfigError:
    expected = "expected one of: " + ", ".join(schema)
    if other is not None and name.rsplit(".", 1)[-1] in other:
        if mode == "dataset":
            where = "the tutorial mode (a config without [data] file)"
        else:
            where = 'the dataset mode (a config with [data] file = "your data.csv or .npz")'
        return ConfigError(path, name, f"unknown key in the {mode} mode: it belongs to {where}; {expected}")
    return ConfigError(path, name, f"unknown key ({expected})")


def _check_table(table: Any, schema: dict[str, Any], prefix: str, path, defaults: dict[str, Any] | None = None,
                 other: dict[str, Any] | None = None, mode: str = "tutorial",
                 variants: Callable | None = None) -> dict[str, Any]:
    """Check ``table`` against ``schema``; a key it leaves out takes ``defaults``'s value
    (``defaults`` None: every key is required). ``other`` is the other mode's schema at this
    level, to say which mode a misplaced key belongs to."""
    if not isinstance(table, dict):
        raise ConfigError(path, prefix.rstrip("."), "expected a table")
    out: dict[str, Any] = {}
    for key in table:
        if key not in schema:
            raise _unknown(path, prefix + key, schema, other, mode)
    for key, check in schema.items():
        name = prefix + key
        sub_other = other.get(key) if isinstance(other, dict) and isinstance(other.get(key), dict) else None
        if key not in table:
            if defaults is None or key not in defaults:
                raise ConfigError(path, name, "missing (every key is required; see configs/default.toml)")
            if isinstance(check, dict) or check is None:
                value: Any = {}  # a table left out: each of its keys takes its default
            else:
                out[key] = copy.deepcopy(defaults[key])
                continue
        else:
            value = table[key]
        if check is None:
            out[key] = (variants or _check_variants)(value, name + ".", path,
                                                     None if defaults is None else defaults[key])
            continue
        if isinstance(check, dict):
            out[key] = _check_table(value, check, name + ".", path, None if defaults is None else defaults.get(key),
                                    sub_other, mode)
            continue
        try:
            out[key] = check(value)
        except ValueError as e:
            raise ConfigError(path, name, f"expected {e}, got {value!r}") from None
    return out


def _variant_tables(table: dict[str, Any], prefix: str, path, budget: dict[str, Any], budget_defaults,
                    default_set: list[str]) -> dict[str, Any]:
    """The variants to build: those ``table`` gives a budget table, if any, else ``default_set``;
    ``name = false`` leaves one out. Each budget key left out takes ``budget_defaults(name)``."""
    named = [k for k in VARIANTS if isinstance(table.get(k), dict)]
    for k in VARIANTS:
        if k in table and table[k] is not False and not isinstance(table[k], dict):
            raise ConfigError(path, prefix + k, f"expected a budget table ([{prefix}{k}]) or false (do not build "
                              f"it), got {table[k]!r}")
    out: dict[str, Any] = {}
    for k in VARIANTS:
        if table.get(k) is False or (named and k not in named) or (not named and k not in default_set):
            continue
        out[k] = _check_table(table.get(k, {}), budget, f"{prefix}{k}.", path, budget_defaults(k))
    return out


def _check_variants(table: Any, prefix: str, path, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """[variants] of the tutorial mode: calibration and calibration_points, then one budget
    table per variant to build (in degF)."""
    if not isinstance(table, dict):
        raise ConfigError(path, prefix.rstrip("."), "expected a table")
    for key in table:
        if key not in VARIANTS_KEYS and key not in VARIANTS:
            raise ConfigError(path, prefix + key, "unknown key (expected calibration, calibration_points, or a "
                              "variant's budget table: " + ", ".join(VARIANTS) + ")")
    fixed = {k: v for k, v in table.items() if k in VARIANTS_KEYS}
    out = _check_table(fixed, VARIANTS_KEYS, prefix, path, defaults)
    if defaults is None:  # strict: exactly the tables given
        for key in VARIANTS:
            if key in table:
                out[key] = _check_table(table[key], BUDGET, f"{prefix}{key}.", path)
        return out
    out.update(_variant_tables(table, prefix, path, BUDGET, lambda k: defaults.get(k),
                               [k for k in VARIANTS if k in defaults]))
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


def _check_dataset_relations(cfg: dict[str, Any], path) -> None:
    data, task, model, train, verify, rt = (cfg[k] for k in ("data", "task", "model", "train", "verify", "runtime"))
    kind = task["kind"]
    given = [k for k in ("builder", "file", "layers") if model[k] is not None]
    if len(given) > 1:
        raise ConfigError(path, f"model.{given[1]}", f"expected at most one of model.builder, model.file and "
                          f"model.layers, got {' and '.join('model.' + k for k in given)}")
    is_csv = data["file"].lower().endswith(".csv")
    if is_csv and data["target"] is None:
        raise ConfigError(path, "data.target", "missing (a CSV needs the name of the column to predict)")
    if not is_csv:
        for key in ("target", "features"):
            if data[key] is not None:
                raise ConfigError(path, f"data.{key}", "expected no value for an .npz (its arrays x and y are "
                                  "the features and the target)")
    if is_csv and data["features"] is not None and data["target"] in data["features"]:
        raise ConfigError(path, "data.features", f"expected feature columns other than the target "
                          f"{data['target']!r}, got it among them")
    if isinstance(data["validation"], str) and Path(data["validation"]).suffix.lower() != Path(data["file"]).suffix.lower():
        raise ConfigError(path, "data.validation", f"expected a file of the same format as data.file "
                          f"({Path(data['file']).suffix}), got {data['validation']}")
    if kind == "regression":
        for key, section in (("labels", "task"), ("min_accuracy", "verify")):
            if cfg[section][key] is not None:
                raise ConfigError(path, f"{section}.{key}", 'expected only with task.kind = "classification"')
        if train["loss"] in CLASSIFICATION_LOSSES:
            raise ConfigError(path, "train.loss", "expected 'auto' or one of " + ", ".join(map(repr, LOSSES))
                              + f" for a regression, got {train['loss']!r}")
        if model["layers"] is not None and model["layers"][-1] != 1:
            raise ConfigError(path, "model.layers", f"expected a last layer of 1 unit (a regression has one "
                              f"output), got {model['layers']}")
    else:
        if verify["max_mae"] is not None:
            raise ConfigError(path, "verify.max_mae", 'expected only with task.kind = "regression" '
                              "(a classification's budget is verify.min_accuracy)")
        if train["loss"] in LOSSES:
            raise ConfigError(path, "train.loss", "expected 'auto' or 'sparse_categorical_crossentropy' for a "
                              f"classification, got {train['loss']!r}")
        labels = task["labels"]
        if model["layers"] is not None and labels is not None and model["layers"][-1] != len(labels):
            raise ConfigError(path, "model.layers", f"expected a last layer of {len(labels)} units (one per "
                              f"class in task.labels), got {model['layers']}")
    if not rt["valid_min"] < rt["valid_max"]:
        raise ConfigError(path, "runtime.valid_max", f"expected > runtime.valid_min ({rt['valid_min']}), "
                          f"got {rt['valid_max']}")
    need_ir = OPSET_MIN_IR[cfg["export"]["opset"]]
    if cfg["export"]["ir_version"] < need_ir:
        raise ConfigError(path, "export.ir_version",
                          f"expected >= {need_ir} for opset {cfg['export']['opset']}, got {cfg['export']['ir_version']}")
    chosen = cfg["bundle"]["model"]
    if chosen not in ("onnx-fp32", "auto") and chosen not in cfg["variants"]:
        raise ConfigError(path, "bundle.model", f"expected a variant that is built (a [variants.{chosen}] "
                          f"budget table, or no variant tables at all), got {chosen!r}")


def _default_bundle_name(base: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base.name).strip("-._")[:64]
    return name or "model"


def _validate_dataset(raw: dict[str, Any], path, base: Path) -> dict[str, Any]:
    schema = _dataset_schema(base)
    # task first: the variants' budget keys depend on it
    task = _check_table(raw.get("task", {}), schema["task"], "task.", path, DATASET_DEFAULTS["task"],
                        SCHEMA.get("task"), "dataset")
    kind = task["kind"]

    def variants(table, prefix, path, defaults):
        if not isinstance(table, dict):
            raise ConfigError(path, prefix.rstrip("."), "expected a table")
        budget = VARIANT_BUDGETS[kind]
        fixed_schema = {"calibration_count": _int(1, 1_000_000)}
        for key in table:
            if key not in fixed_schema and key not in VARIANTS:
                if key in VARIANTS_KEYS:
                    raise _unknown(path, prefix + key, fixed_schema, VARIANTS_KEYS, "dataset")
                raise ConfigError(path, prefix + key, "unknown key (expected calibration_count, or a variant's "
                                  "budget table: " + ", ".join(VARIANTS) + ")")
        out = _check_table({k: v for k, v in table.items() if k in fixed_schema}, fixed_schema, prefix, path,
                           defaults)
        for k in VARIANTS:
            t = table.get(k)
            if isinstance(t, dict):
                other = {b for task_budget in VARIANT_BUDGETS.values() for b in task_budget} | set(BUDGET)
                for b in t:
                    if b not in budget and b in other:
                        raise ConfigError(path, f"{prefix}{k}.{b}", f"unknown key for task.kind = {kind!r} "
                                          f"(expected one of: {', '.join(budget)})")
        out.update(_variant_tables(table, prefix, path, budget, lambda k: DEFAULT_BUDGET[kind], list(VARIANTS)))
        return out

    cfg = _check_table(raw, schema, "", path, DATASET_DEFAULTS, SCHEMA, "dataset", variants)
    cfg["task"] = task
    if cfg["bundle"]["name"] is None:
        cfg["bundle"]["name"] = _default_bundle_name(base)
    _check_dataset_relations(cfg, path)
    return cfg


_TUTORIAL_DEFAULTS: dict[str, Any] | None = None


def tutorial_defaults() -> dict[str, Any]:
    """configs/default.toml, normalised: the tutorial mode's defaults (a copy)."""
    global _TUTORIAL_DEFAULTS
    if _TUTORIAL_DEFAULTS is None:
        p = Path(__file__).resolve().parent.parent / "configs" / "default.toml"
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
        _TUTORIAL_DEFAULTS = _check_table(raw, SCHEMA, "", p)
        _check_relations(_TUTORIAL_DEFAULTS, p)
    return copy.deepcopy(_TUTORIAL_DEFAULTS)


def _dataset_mode(raw: dict[str, Any]) -> bool:
    return isinstance(raw.get("data"), dict) and "file" in raw["data"]


def validate(raw: dict[str, Any], path=None, base: str | Path | None = None) -> dict[str, Any]:
    """Check a parsed config; return it normalised, every key left out at its default.

    The tutorial mode (no ``[data] file``) takes its defaults from configs/default.toml, the
    dataset mode from DATASET_DEFAULTS. ``base`` is the folder relative paths start from
    (default: the config file's folder, else the working directory).
    """
    if not isinstance(raw, dict):
        raise ConfigError(path, "file", "expected a TOML table")
    if base is None:
        base = Path(path).resolve().parent if path else Path.cwd()
    base = Path(base).resolve()
    if _dataset_mode(raw):
        return _validate_dataset(raw, path, base)
    dataset_schema = _dataset_schema(base)
    cfg = _check_table(raw, SCHEMA, "", path, tutorial_defaults(), dataset_schema, "tutorial")
    _check_relations(cfg, path)
    return cfg


def is_dataset(cfg: dict[str, Any]) -> bool:
    """Whether a normalised config is in the dataset mode (``[data] file``) rather than the tutorial's."""
    return "file" in cfg.get("data", {})


def origin_of(path: str | Path) -> Path:
    """The folder relative paths in the config at ``path`` start from: the one recorded in a
    ``config.origin`` beside it (a copy's), else the config's own folder (absolute, symbolic
    links kept, as make's ``$(abspath ...)`` gives it)."""
    path = Path(path)
    recorded = path.parent / ORIGIN_NAME
    try:
        text = recorded.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return Path(os.path.abspath(path.parent))  # as make's $(abspath $(dir CONFIG)) spells it
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(recorded, "file", f"cannot read: {e}") from None
    if not text or not Path(text).is_absolute():
        raise ConfigError(recorded, "file", f"expected the absolute folder of the original config, got {text!r}")
    return Path(text)


def load(path: str | Path) -> dict[str, Any]:
    """Read, parse and validate a TOML config file (paths relative to ``origin_of(path)``).

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
    return validate(raw, path, origin_of(path))


def input_files(cfg: dict[str, Any]) -> list[str]:
    """The files outside the config a run reads: data file(s), the builder's .py, a trained model
    (absolute paths; none in the tutorial mode)."""
    if not is_dataset(cfg):
        return []
    files = [cfg["data"]["file"]]
    if isinstance(cfg["data"]["validation"], str):
        files.append(cfg["data"]["validation"])
    if cfg["model"]["builder"]:
        files.append(cfg["model"]["builder"].rpartition(":")[0])
    if cfg["model"]["file"]:
        files.append(cfg["model"]["file"])
    return files


def check_model_source(cfg: dict[str, Any]):
    """Import the builder's module and return its build function; None without a builder.

    Called before training (it runs the user's module, which may import keras). A module that
    does not import, or has no such function, is a ConfigError: one line, exit 2.
    """
    spec = cfg["model"].get("builder") if is_dataset(cfg) else None
    if not spec:
        return None
    import importlib.util
    import sys

    file, _, name = spec.rpartition(":")
    module_name = "edge_user_model_" + re.sub(r"\W", "_", Path(file).stem)
    folder = str(Path(file).parent)
    try:
        loader = importlib.util.spec_from_file_location(module_name, file)
        if loader is None or loader.loader is None:
            raise ImportError(f"not a Python module: {file}")
        module = importlib.util.module_from_spec(loader)
        sys.path.insert(0, folder)  # so it may import its neighbours
        try:
            sys.modules[module_name] = module
            loader.loader.exec_module(module)
        finally:
            if sys.path and sys.path[0] == folder:
                del sys.path[0]
    except FileNotFoundError:
        raise ConfigError(file, "model.builder", "not found (expected a Python file with the build function)") from None
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        raise ConfigError(file, "model.builder", f"line {e.lineno}: syntax error: {e.msg} (expected a Python "
                          "module)") from None
    except BaseException as e:  # the user's module may raise anything on import, even SystemExit
        sys.modules.pop(module_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(file, "model.builder", f"importing it raised {type(e).__name__}: {first} (expected "
                          "a module that imports)") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise ConfigError(file, "model.builder", f"no function {name!r} (expected build(input_shape, "
                          "num_outputs) returning an uncompiled keras.Model)")
    if not callable(fn):
        raise ConfigError(file, "model.builder", f"{name!r} is a {type(fn).__name__}, expected a function "
                          "build(input_shape, num_outputs)")
    return fn


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
