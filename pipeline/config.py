"""Load and validate the pipeline's TOML config: one schema for every model (docs/configuration.md).

Stdlib only, so a bad config is refused in milliseconds, before TensorFlow is imported: one
line naming the file, the key and what was expected (exit 2); an unknown key is refused
with the nearest known one suggested. Every key but ``[data] file`` has a default, kept in
one place (``SCHEMA``), so a config names only what differs from it.

Paths in a config (the data, a validation file, the builder's and the oracle's Python files,
a trained model) are relative to the config file's folder, or to the folder recorded in a
``config.origin`` file beside it (the copy make keeps in BUILD/config.toml records where the
original was); ``load`` returns them as absolute path strings.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

from export.formats import VARIANTS

from .checks import (batch_size, boolean, bundle_name, choice, data_file, finite_span, fraction, function_ref, integer,
                     margin, names, number_or_inf, per_feature, positive, span, targets, tensor_name, tolerance,
                     trained_model, units, validation)
from .errors import ConfigError

REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error", "huber")
CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy",)
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "gelu")
TASKS = ("regression", "classification")
# Probe groups verify runs every model over (pipeline/probes.py says what each is).
PROBE_GROUPS = ("training", "validation", "synthetic", "edge", "grid", "extremes", "random")
CALIBRATIONS = ("training", "range")
ORIGIN_NAME = "config.origin"  # beside a copied config: the absolute folder of the original
INPUTS_MK_NAME = "inputs.mk"  # beside it too: INPUT_FILES := the files outside the config a run reads

# Opsets tf2onnx 1.17 can target (13..18) and the oldest IR version that may carry
# each (tf2onnx.constants.OPSET_TO_IR_VERSION). A newer IR than needed only narrows
# which onnxruntime releases can load the file, so the range stops at 10.
OPSET_MIN_IR = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8}
BUNDLE_MODELS = ("onnx-fp32", "auto") + tuple(v for v in VARIANTS if v.startswith("onnx-"))
BUNDLE_PREFER = ("speed", "size")  # bundle.prefer: the priority bundle.model = "auto" chooses by

# Keys of the schema before issue 25, and where each went (named in the "unknown key" line;
# docs/configuration.md has the whole table).
MOVED = {
    "train.steps": 'train.epochs, with train.batch_size = "all" (one full-batch step per epoch)',
    "verify.grid_min": "verify.range = [min, max]", "verify.grid_max": "verify.range = [min, max]",
    "verify.random_seed": "verify.seed", "verify.max_mae_f": "verify.max_mae",
    "verify.accuracy_min": "verify.oracle_range = [min, max]", "verify.accuracy_max": "verify.oracle_range",
    "verify.accuracy_points": "verify.oracle_points", "variants.calibration_points": "variants.calibration_count",
}


# --- the schema: section -> key -> (checker, default); a checker taking ``base`` is marked PATH ---

REQUIRED = object()


class PATH:
    """A checker of a path-valued key: called with the folder relative paths start from."""

    def __init__(self, check: Callable[[Path, Any], Any]):
        self.check = check


REGRESSION_BUDGET = {"max_mae": (positive, None), "max_err": (positive, None), "parity": (positive, None)}
CLASSIFICATION_BUDGET = {"max_accuracy_drop": (fraction, 0.01), "min_agreement": (fraction, 0.99)}
BUDGETS = {"regression": REGRESSION_BUDGET, "classification": CLASSIFICATION_BUDGET}

SCHEMA: dict[str, dict[str, Any]] = {
    "data": {
        "file": (PATH(data_file), REQUIRED),
        "target": (targets, None),  # a CSV's column to predict, or a list of them
        "features": (names("feature columns"), None),  # a CSV's input columns (default: every other)
        "validation": (PATH(validation), 0.2),
        "standardize": (boolean, True),
    },
    "task": {"kind": (choice(*TASKS), "regression"), "labels": (names("class names", min_len=2), None)},
    "model": {
        "builder": (PATH(lambda b, v: function_ref(b, v, "build function")), None),
        "file": (PATH(trained_model), None),
        "layers": (units, None),
        "activation": (choice(*ACTIVATIONS), "relu"),
        "input_name": (tensor_name, "inputs"),
        "output_name": (tensor_name, "outputs"),
    },
    "train": {
        "loss": (choice("auto", *REGRESSION_LOSSES, *CLASSIFICATION_LOSSES), "auto"),
        "optimizer": (choice(*OPTIMIZERS), "adam"),
        "learning_rate": (positive, 0.001),
        "epochs": (integer(1, 10_000_000), 50),
        "batch_size": (batch_size, 32),
        "seed": (integer(0, 2**31 - 1), 0),
    },
    "export": {"opset": (integer(13, 18), 17), "ir_version": (integer(7, 10), 8)},
    "verify": {
        "probes": (names("probe groups", PROBE_GROUPS), ["training", "validation", "synthetic", "edge"]),
        "range": (span, None),  # the working range (default: the data's observed range)
        "grid_points": (integer(2, 10_000_000), 4096),
        "synthetic_count": (integer(0, 10_000_000), 256),
        "random_count": (integer(0, 10_000_000), 1024),
        "seed": (integer(0, 2**31 - 1), 1),
        "large_batch": (integer(2, 100_000_000), 256),
        "oracle": (PATH(lambda b, v: function_ref(b, v, "oracle function")), None),
        "oracle_range": (finite_span, None),
        "oracle_points": (integer(2, 10_000_000), 2000),
        "max_mae": (positive, None),
        "min_accuracy": (fraction, None),
        "baseline": (choice("fail", "warn"), "fail"),  # a model that does not beat the trivial baseline
        "baseline_margin": (margin, 0.1),  # the share of the baseline's error the model must remove
        "onnx": tolerance(),
        "tflite": tolerance(),
    },
    "variants": {"calibration": (choice(*CALIBRATIONS), "training"),
                 "calibration_count": (integer(1, 1_000_000), 300)},  # plus one budget table per variant
    "bundle": {"model": (choice(*BUNDLE_MODELS), "onnx-fp32"), "name": (bundle_name, None),
               "prefer": (choice(*BUNDLE_PREFER), "speed")},  # what model = "auto" chooses by
    "runtime": {"valid_min": (number_or_inf, -math.inf), "valid_max": (number_or_inf, math.inf),
                "valid": (per_feature, {}), "golden_count": (integer(1, 100_000), 64)},
}


def _unknown(path, key: str, known) -> ConfigError:
    moved = MOVED.get(key)
    if moved:
        return ConfigError(path, key, f"unknown key: {moved}")
    leaf = key.rpartition(".")[2]
    near = difflib.get_close_matches(leaf, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {key.rpartition('.')[0] + '.' if '.' in key else ''}{near[0]}? " if near else ""
    return ConfigError(path, key, f"unknown key ({hint}expected one of: {', '.join(known)})")


def _table(table: Any, schema: dict[str, Any], prefix: str, path, base: Path) -> dict[str, Any]:
    """``table`` checked against ``schema``: every key known, each value checked, the keys left
    out at their defaults."""
    if not isinstance(table, dict):
        raise ConfigError(path, prefix.rstrip(".") or "file", "expected a table")
    for key in table:
        if key not in schema:
            raise _unknown(path, prefix + key, schema)
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        name = prefix + key
        if isinstance(spec, dict):  # a sub-table
            out[key] = _table(table.get(key, {}), spec, name + ".", path, base)
            continue
        check, default = spec
        if key not in table:
            if default is REQUIRED:
                raise ConfigError(path, name, "missing (expected a value: it has no default)")
            out[key] = json.loads(json.dumps(default)) if isinstance(default, (dict, list)) else default
            continue
        value = table[key]
        try:
            out[key] = check.check(base, value) if isinstance(check, PATH) else check(value)
        except ValueError as e:
            raise ConfigError(path, name, f"expected {e}, got {value!r}") from None
    return out


def task_kinds(cfg: dict[str, Any]) -> list[str]:
    """The task kinds of the config's outputs, each once, in TASKS order: one for a ``[task]``
    table, those of the ``[task.<output>]`` tables otherwise."""
    task = cfg["task"]
    kinds = {o["kind"] for o in task["outputs"].values()} if "outputs" in task else {task["kind"]}
    return [k for k in TASKS if k in kinds]


def output_tasks(cfg: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The ``[task.<output>]`` tables (output name -> kind and labels), or None for a ``[task]`` table."""
    return cfg["task"].get("outputs")


def _per_output_tasks(table: Any, path, base: Path) -> dict[str, dict[str, Any]] | None:
    """``[task.<output>]`` tables, one per model output (a model of several outputs, or one
    named output), each checked as a ``[task]`` table; None when ``[task]`` is one table."""
    if not isinstance(table, dict) or not any(isinstance(v, dict) for v in table.values()):
        return None
    plain = [k for k, v in table.items() if not isinstance(v, dict)]
    if plain:
        raise ConfigError(path, f"task.{plain[0]}", "expected either one [task] table (kind = ..., labels = ...) or "
                          "one [task.<output>] table per model output, not both")
    out = {}
    for name, sub in table.items():
        try:
            tensor_name(name)
        except ValueError as e:
            raise ConfigError(path, f"task.{name}", f"expected {e} (the model output's name)") from None
        out[name] = _table(sub, SCHEMA["task"], f"task.{name}.", path, base)
    return out


def _variants(table: Any, kinds: list[str], path, base: Path) -> dict[str, Any]:
    """[variants]: the calibration keys, then the variants to build: those with a budget table
    if any has one, else every variant; ``name = false`` leaves one out. A budget key left out
    takes its task's default; with outputs of both kinds, both tasks' keys (each judges the
    outputs of its kind)."""
    if not isinstance(table, dict):
        raise ConfigError(path, "variants", "expected a table")
    fixed = SCHEMA["variants"]
    for key in table:
        if key not in fixed and key not in VARIANTS:
            raise _unknown(path, f"variants.{key}", [*fixed, *VARIANTS])
        if key in VARIANTS and table[key] is not False and not isinstance(table[key], dict):
            raise ConfigError(path, f"variants.{key}", f"expected a budget table ([variants.{key}]) or false "
                              f"(do not build it), got {table[key]!r}")
    out = _table({k: v for k, v in table.items() if k in fixed}, fixed, "variants.", path, base)
    budget = {k: v for kind in kinds for k, v in BUDGETS[kind].items()}
    named = [k for k in VARIANTS if isinstance(table.get(k), dict)]
    for k in VARIANTS:
        if table.get(k) is False or (named and k not in named):
            continue
        given = table.get(k, {})
        for b in given:
            if b not in budget and any(b in other for other in BUDGETS.values()):
                raise ConfigError(path, f"variants.{k}.{b}", f"unknown key for task.kind = {' and '.join(map(repr, kinds))} "
                                  f"(expected one of: {', '.join(budget)})")
        out[k] = _table(given, budget, f"variants.{k}.", path, base)
    return out


def _relations(cfg: dict[str, Any], path) -> None:
    """What no single key can say: keys that only make sense together."""
    data, task, model, train, verify, rt = (cfg[k] for k in ("data", "task", "model", "train", "verify", "runtime"))

    def refuse(key: str, problem: str):
        raise ConfigError(path, key, problem)

    given = [k for k in ("builder", "file", "layers") if model[k] is not None]
    if len(given) > 1:
        refuse(f"model.{given[1]}", "expected at most one of model.builder, model.file and model.layers, got "
               + " and ".join("model." + k for k in given))
    if "outputs" in task:
        _per_output_relations(cfg, refuse)
    is_csv = data["file"].lower().endswith(".csv")
    if is_csv and data["target"] is None:
        refuse("data.target", "missing (a CSV needs the name of the column to predict)")
    if not is_csv:
        for key in ("target", "features"):
            if data[key] is not None:
                refuse(f"data.{key}", "expected no value for an .npz (its arrays x and y are the features and "
                       "the target)")
    target = [data["target"]] if isinstance(data["target"], str) else data["target"] or []
    if is_csv and data["features"] is not None:
        both = [t for t in target if t in data["features"]]
        if both:
            refuse("data.features", f"expected feature columns other than the target {both[0]!r}, got it among them")
    if len(target) > 1 and task["kind"] != "regression":
        refuse("data.target", f"expected one column for a {task['kind']} (several targets are a regression's), "
               f"got {len(target)}: {target}")
    v = data["validation"]
    if isinstance(v, str) and Path(v).suffix.lower() != Path(data["file"]).suffix.lower():
        refuse("data.validation", f"expected a file of the same format as data.file ({Path(data['file']).suffix}), "
               f"got {v}")
    if v == 0 and verify["oracle"] is None:
        refuse("data.validation", "expected a fraction > 0 or a validation file: 0 holds out no row, which "
               "needs verify.oracle to label the rows accuracy is judged on")
    if "validation" not in verify["probes"]:
        refuse("verify.probes", f"expected a list with \"validation\" in it (accuracy is judged on those rows), got "
               f"{verify['probes']}")
    if (verify["oracle"] is None) != (verify["oracle_range"] is None):
        refuse("verify.oracle_range" if verify["oracle_range"] is None else "verify.oracle",
               "expected verify.oracle and verify.oracle_range together (the oracle labels rows it generates "
               "over that range)")
    if "outputs" in task:
        pass  # checked above (_per_output_relations)
    elif task["kind"] == "regression":
        for key, section in (("labels", "task"), ("min_accuracy", "verify")):
            if cfg[section][key] is not None:
                refuse(f"{section}.{key}", 'expected only with task.kind = "classification"')
        if train["loss"] in CLASSIFICATION_LOSSES:
            refuse("train.loss", "expected 'auto' or one of " + ", ".join(map(repr, REGRESSION_LOSSES))
                   + f" for a regression, got {train['loss']!r}")
    else:
        if verify["max_mae"] is not None:
            refuse("verify.max_mae", 'expected only with task.kind = "regression" (a classification\'s '
                   "check is verify.min_accuracy)")
        if verify["oracle"] is not None:
            refuse("verify.oracle", 'expected only with task.kind = "regression" (an oracle gives values)')
        if train["loss"] in REGRESSION_LOSSES:
            refuse("train.loss", "expected 'auto' or 'sparse_categorical_crossentropy' for a classification, got "
                   f"{train['loss']!r}")
        labels = task["labels"]
        if model["layers"] is not None and labels is not None and model["layers"][-1] != len(labels):
            refuse("model.layers", f"expected a last layer of {len(labels)} units (one per class in task.labels), "
                   f"got {model['layers']}")
    if model["input_name"] == model["output_name"]:
        refuse("model.output_name", f"expected a name other than model.input_name ({model['input_name']!r})")
    if not rt["valid_min"] < rt["valid_max"]:
        refuse("runtime.valid_max", f"expected > runtime.valid_min ({rt['valid_min']}), got {rt['valid_max']}")
    need_ir = OPSET_MIN_IR[cfg["export"]["opset"]]
    if cfg["export"]["ir_version"] < need_ir:
        refuse("export.ir_version", f"expected >= {need_ir} for opset {cfg['export']['opset']}, got "
               f"{cfg['export']['ir_version']}")
    chosen = cfg["bundle"]["model"]
    if chosen not in ("onnx-fp32", "auto") and chosen not in cfg["variants"]:
        refuse("bundle.model", f"expected a variant that is built (a [variants.{chosen}] budget table, or no "
               f"variant tables at all), got {chosen!r}")


def _per_output_relations(cfg: dict[str, Any], refuse) -> None:
    """``[task.<output>]`` tables: an .npz (an array per tensor), no oracle nor dense stack, and
    each task's keys only where an output has that task."""
    data, model, train, verify = (cfg[k] for k in ("data", "model", "train", "verify"))
    outputs = cfg["task"]["outputs"]
    if data["file"].lower().endswith(".csv"):
        refuse("data.file", f"expected an .npz for [task.<output>] tables (one array per model input and one per "
               f"output, named as the model names them: {', '.join(outputs)}), got a CSV")
    if model["layers"] is not None:
        refuse("model.layers", "expected model.builder or model.file with [task.<output>] tables (a dense stack has "
               "one input and one output)")
    if verify["oracle"] is not None:
        refuse("verify.oracle", "expected no oracle with [task.<output>] tables (an oracle labels one output)")
    kinds = task_kinds(cfg)
    for name, t in outputs.items():
        if t["kind"] == "regression" and t["labels"] is not None:
            refuse(f"task.{name}.labels", 'expected only with kind = "classification"')
    if "classification" not in kinds and verify["min_accuracy"] is not None:
        refuse("verify.min_accuracy", "expected only with a classification output")
    if "regression" not in kinds and verify["max_mae"] is not None:
        refuse("verify.max_mae", "expected only with a regression output")
    if train["loss"] in CLASSIFICATION_LOSSES:
        refuse("train.loss", "expected 'auto' or a regression loss (" + ", ".join(map(repr, REGRESSION_LOSSES))
               + f") for the regression outputs with [task.<output>] tables, got {train['loss']!r}")
    if train["loss"] != "auto" and "regression" not in kinds:
        refuse("train.loss", f"expected 'auto' with no regression output, got {train['loss']!r}")


def _default_bundle_name(base: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base.name).strip("-._")[:64]
    return name or "model"


def validate(raw: dict[str, Any], path=None, base: str | Path | None = None) -> dict[str, Any]:
    """Check a parsed config; return it normalised, every key left out at its default.

    ``base`` is the folder relative paths start from (default: the config file's folder,
    else the working directory).
    """
    if not isinstance(raw, dict):
        raise ConfigError(path, "file", "expected a TOML table")
    if base is None:
        base = Path(path).resolve().parent if path else Path.cwd()
    base = Path(base).resolve()
    for section in raw:
        if section not in SCHEMA:
            raise _unknown(path, section, SCHEMA)
    if not isinstance(raw.get("data"), dict) or "file" not in raw["data"]:  # before its other keys: they may be
        # a config from before issue 25, whose rows were lists under [data]
        raise ConfigError(path, "data.file", 'missing (expected [data] file = "your data.csv or .npz"; rows listed '
                          "in a config go in a CSV file now: docs/configuration.md)")
    # task first: the variants' budget keys depend on it
    schema = {k: v for k, v in SCHEMA.items() if k != "variants"}
    outputs = _per_output_tasks(raw.get("task"), path, base)
    given = {k: v for k, v in raw.items() if k != "variants" and not (k == "task" and outputs is not None)}
    cfg = _table(given, schema, "", path, base)
    if outputs is not None:
        cfg["task"] = {"outputs": outputs}
    cfg["variants"] = _variants(raw.get("variants", {}), task_kinds(cfg), path, base)
    cfg = {k: cfg[k] for k in SCHEMA}  # the schema's order
    if cfg["bundle"]["name"] is None:
        cfg["bundle"]["name"] = _default_bundle_name(base)
    _relations(cfg, path)
    if "prefer" in (raw.get("bundle") or {}) and cfg["bundle"]["model"] != "auto":
        raise ConfigError(path, "bundle.prefer", 'expected only with bundle.model = "auto" (it says what auto '
                          f"chooses by), got bundle.model = {cfg['bundle']['model']!r}")
    return cfg


def origin_of(path: str | Path) -> Path:
    """The folder relative paths in the config at ``path`` start from: the one recorded in a
    ``config.origin`` beside it (a copy's), else the config's own folder (absolute, symbolic
    links kept, as make's ``$(abspath ...)`` gives it)."""
    path = Path(path)
    recorded = path.parent / ORIGIN_NAME
    try:
        content = recorded.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return Path(os.path.abspath(path.parent))  # as make's $(abspath $(dir CONFIG)) spells it
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(recorded, "file", f"cannot read: {e}") from None
    if not content or not Path(content).is_absolute():
        raise ConfigError(recorded, "file", f"expected the absolute folder of the original config, got {content!r}")
    return Path(content)


def load(path: str | Path) -> dict[str, Any]:
    """Read, parse and validate a TOML config file (paths relative to ``origin_of(path)``).

    Raises:
        ConfigError: the file is missing, not TOML, or not a valid config.
    """
    path = Path(path)
    try:
        content = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file", f"not found (expected a TOML config; the presets are {presets()})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "file", f"cannot read: {e}") from None
    try:
        raw = tomllib.loads(content)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "file", f"not valid TOML: {e}") from None
    return validate(raw, path, origin_of(path))


def input_files(cfg: dict[str, Any]) -> list[str]:
    """The files outside the config a run reads: the data file(s), the builder's and the oracle's
    .py, a trained model (absolute paths)."""
    files = [cfg["data"]["file"]]
    if isinstance(cfg["data"]["validation"], str):
        files.append(cfg["data"]["validation"])
    for ref in (cfg["model"]["builder"], cfg["verify"]["oracle"]):
        if ref:
            files.append(ref.rpartition(":")[0])
    if cfg["model"]["file"]:
        files.append(cfg["model"]["file"])
    return files


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
