"""Config validation: every key checked, with a message naming it, before TensorFlow loads; the
defaults a partial config takes, in both modes."""

from __future__ import annotations

import json
import math
import tomllib

import pytest

from export.formats import VARIANTS
from pipeline import config
from pipeline.errors import ConfigError
from tests.conftest import MINIMAL, PRESETS, edited, pipeline, preset_with


def preset(name: str = "default") -> dict:
    return tomllib.loads((PRESETS / f"{name}.toml").read_text())


@pytest.mark.parametrize("name", ["default", "tutorial"])
def test_presets_are_valid(name):
    cfg = config.load(PRESETS / f"{name}.toml")
    assert cfg["model"]["layers"] == [1]
    assert cfg["data"]["celsius"] == [-40.0, -10.0, 0.0, 8.0, 15.0, 22.0, 38.0]
    assert cfg["data"]["fahrenheit"] == [-40.0, 14.0, 32.0, 46.0, 59.0, 72.0, 100.0]
    assert (cfg["train"]["optimizer"], cfg["train"]["learning_rate"]) == ("adam", 0.1)


def test_tutorial_preset_is_the_tutorial():
    t = config.load(PRESETS / "tutorial.toml")["train"]
    assert (t["steps"], t["seed"], t["loss"]) == (500, 0, "mean_squared_error")


def mutate(path: str, value):
    raw = preset()
    *parents, leaf = path.split(".")
    table = raw
    for p in parents:
        table = table[p]
    if value is DELETE:
        del table[leaf]
    else:
        table[leaf] = value
    return raw


DELETE = object()


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("train.stepz", 5, r"train\.stepz: unknown key \(expected one of: loss, optimizer"),
        ("train.steps", "500", r"train\.steps: expected an integer >= 1 .*got '500'"),
        ("train.steps", 0, r"train\.steps: expected an integer >= 1"),
        ("train.steps", True, r"train\.steps: expected an integer"),
        ("train.learning_rate", -0.1, r"train\.learning_rate: expected a number > 0, got -0\.1"),
        ("train.learning_rate", float("nan"), r"train\.learning_rate: expected a number > 0, got nan"),
        ("verify.grid_min", float("inf"), r"verify\.grid_min: expected a finite number, got inf"),
        ("train.optimizer", "adamax", r"train\.optimizer: expected one of 'adam', 'sgd'"),
        ("train.loss", 3, r"train\.loss: expected one of 'mean_squared_error'"),
        ("data.celsius", [], r"data\.celsius: expected a non-empty list of finite numbers"),
        ("data.celsius", [1, "x"], r"data\.celsius: expected a non-empty list"),
        ("data.fahrenheit", [1.0, 2.0], r"data\.fahrenheit: expected as many values as data\.celsius \(7\), got 2"),
        ("model.layers", [4, 2], r"model\.layers: expected a non-empty list of unit counts .* ending in 1"),
        ("model.layers", [0, 1], r"model\.layers: expected"),
        ("model.activation", "swish", r"model\.activation: expected one of"),
        ("export.opset", 21, r"export\.opset: expected an integer >= 13 and <= 18, got 21"),
        ("export.ir_version", 7, r"export\.ir_version: expected >= 8 for opset 17, got 7"),
        ("verify.onnx.atol", 0, r"verify\.onnx\.atol: expected a number > 0, got 0"),
        ("verify.tflite.rtol", "1e-6", r"verify\.tflite\.rtol: expected a number > 0"),
        ("verify.tflite.bogus", 1, r"verify\.tflite\.bogus: unknown key"),
        ("verify.grid_max", -300.0, r"verify\.grid_max: expected > verify\.grid_min"),
        ("verify.onnx", 1e-5, r"verify\.onnx: expected a table"),
        ("runtime.valid_max_celsius", -300.0, r"runtime\.valid_max_celsius: expected > runtime\.valid_min_celsius"),
        ("runtime.golden_count", 0, r"runtime\.golden_count: expected an integer >= 1"),
    ],
)
def test_bad_values_are_refused_naming_the_key(path, value, message):
    with pytest.raises(ConfigError, match=message):
        config.validate(mutate(path, value))


def test_unknown_top_level_table():
    raw = preset()
    raw["trian"] = {}
    with pytest.raises(ConfigError, match=r"trian: unknown key \(expected one of: data, model, train"):
        config.validate(raw)


def test_ints_become_floats_and_hash_ignores_formatting(tmp_path):
    text = (PRESETS / "default.toml").read_text()
    a = tmp_path / "a.toml"
    a.write_text("# a comment\n" + edited(text, ("learning_rate = 0.1", "learning_rate   =   0.1")))
    ca, cb = config.load(a), config.load(PRESETS / "default.toml")
    assert isinstance(ca["data"]["celsius"][0], float)
    assert config.config_hash(ca) == config.config_hash(cb)
    cb["train"]["steps"] += 1
    assert config.config_hash(ca) != config.config_hash(cb)


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: file: not valid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match=r"nope\.toml: file: not found"):
        config.load(tmp_path / "nope.toml")


def test_cli_refuses_bad_config_in_one_line_without_loading_tensorflow(tmp_path):
    bad = tmp_path / "bad.toml"
    preset_with(bad, ("steps = 2000", "steps = -5"))
    code = (
        "import sys; from pipeline.__main__ import main; "
        f"rc = main(['train', '--config', {str(bad)!r}, '--build', {str(tmp_path / 'b')!r}]); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules); sys.exit(rc)"
    )
    r = pipeline_code(code)
    assert r.returncode == 2
    assert r.stdout.decode().split() == ["False", "False"]
    lines = r.stderr.decode().splitlines()
    assert lines == [f"error: config error: {bad}: train.steps: expected an integer >= 1 and <= 10000000, got -5"]
    assert not (tmp_path / "b").exists()


def pipeline_code(code: str):
    import subprocess
    import sys

    from tests.conftest import ROOT

    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=120)


def test_unknown_stage_is_a_usage_error():
    r = pipeline("deploy")
    assert r.returncode == 2
    assert b"invalid choice: 'deploy'" in r.stderr


# --- defaults: a config names only what differs ---


def write(tmp_path, text: str, name: str = "c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_missing_key_takes_the_default():
    raw = mutate("train.seed", DELETE)
    raw["train"]["steps"] = 7
    cfg = config.validate(raw)
    want = config.load(PRESETS / "default.toml")
    want["train"]["steps"] = 7
    assert cfg == want


def test_partial_tutorial_configs_equal_the_presets(tmp_path):
    default, tutorial = config.load(PRESETS / "default.toml"), config.load(PRESETS / "tutorial.toml")
    assert config.load(write(tmp_path, "")) == default
    assert config.load(write(tmp_path, "[train]\nsteps = 500\n[verify]\nmax_mae_f = 3.5\n")) == tutorial
    assert config.tutorial_defaults() == default
    partial = config.load(write(tmp_path, "[verify.onnx]\natol = 2e-5\n"))
    assert partial["verify"]["onnx"] == {"atol": 2e-5, "rtol": 1e-6}
    assert partial["verify"]["tflite"] == default["verify"]["tflite"]
    assert config.config_hash(config.load(write(tmp_path, "[train]\nsteps = 2000\n"))) == config.config_hash(default)


def test_tutorial_variants_named_are_the_ones_built(tmp_path):
    default = config.load(PRESETS / "default.toml")["variants"]
    one = config.load(write(tmp_path, "[variants.onnx-fp16]\nparity_f = 0.5\n"))["variants"]
    assert one == {"calibration": "training", "calibration_points": 512,
                   "onnx-fp16": {"max_mae_f": 0.12, "max_err_f": 0.3, "parity_f": 0.5}}
    assert config.load(write(tmp_path, "[variants]\ncalibration = 'range'\n"))["variants"] == {
        **default, "calibration": "range"}
    skipped = config.load(write(tmp_path, "[variants]\ntflite-fp16 = false\n"))["variants"]
    assert "tflite-fp16" not in skipped and len(skipped) == len(default) - 1
    with pytest.raises(ConfigError, match=r"variants\.onnx-fp16: expected a budget table"):
        config.load(write(tmp_path, "[variants]\nonnx-fp16 = true\n"))


def test_dataset_keys_in_the_tutorial_mode_say_which_mode_they_belong_to(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.builder: unknown key in the tutorial mode: it belongs to the "
                                          r"dataset mode \(a config with \[data\] file = .*\); expected one of: "
                                          r"layers, activation$"):
        config.load(write(tmp_path, "[model]\nbuilder = 'm.py:build'\n"))
    with pytest.raises(ConfigError, match=r"task: unknown key in the tutorial mode"):
        config.load(write(tmp_path, "[task]\nkind = 'regression'\n"))




def minimal(tmp_path, text: str = MINIMAL):
    (tmp_path / "data.csv").write_text("a,label\n1,x\n2,y\n3,x\n4,y\n")
    (tmp_path / "model.py").write_text("def build(shape, k):\n    pass\n")
    return write(tmp_path, text, "edge.toml")


def test_the_issues_minimal_config_is_complete(tmp_path):
    cfg = config.load(minimal(tmp_path))
    assert config.is_dataset(cfg) and not config.is_dataset(config.load(PRESETS / "default.toml"))
    budget = {"max_accuracy_drop": 0.01, "min_agreement": 0.99}
    assert cfg == {
        "data": {"file": str(tmp_path / "data.csv"), "target": "label", "features": None, "validation": 0.2,
                 "standardize": True},
        "task": {"kind": "classification", "labels": None},
        "model": {"builder": f"{tmp_path / 'model.py'}:build", "file": None, "layers": None, "activation": "relu"},
        "train": {"loss": "auto", "optimizer": "adam", "learning_rate": 0.001, "epochs": 50, "batch_size": 32,
                  "seed": 0},
        "export": {"opset": 17, "ir_version": 8},
        "verify": {"synthetic_count": 256, "seed": 1, "large_batch": 256, "onnx": {"atol": 1e-5, "rtol": 1e-4},
                   "tflite": {"atol": 1e-5, "rtol": 1e-4}, "max_mae": None, "min_accuracy": None},
        "variants": {"calibration_count": 300, **{v: budget for v in VARIANTS}},
        "bundle": {"model": "onnx-fp32", "name": tmp_path.name},
        "runtime": {"valid_min": -math.inf, "valid_max": math.inf, "valid": {}, "golden_count": 64},
    }
    assert config.input_files(cfg) == [str(tmp_path / "data.csv"), str(tmp_path / "model.py")]
    json.loads(config.canonical_json(cfg))  # None and inf stay valid JSON
    assert len(config.config_hash(cfg)) == 64


def test_regression_defaults_and_variant_budgets(tmp_path):
    text = MINIMAL.replace('kind = "classification"', 'kind = "regression"').replace('"label"', '"a"')
    text += "[variants.onnx-int8-static]\nparity = 0.5\n[bundle]\nname = 'wine-1'\n"
    cfg = config.load(minimal(tmp_path, text))
    assert cfg["variants"] == {"calibration_count": 300, "onnx-int8-static": {"max_mae": None, "parity": 0.5}}
    assert cfg["bundle"] == {"model": "onnx-fp32", "name": "wine-1"}


@pytest.mark.parametrize("extra, message", [
    ("[train]\nsteps = 3\n", r"train\.steps: unknown key in the dataset mode: it belongs to the tutorial mode"),
    ("[verify]\ngrid_min = 0\n", r"verify\.grid_min: unknown key in the dataset mode: it belongs to the tutorial"),
    ("[runtime]\nvalid_min_celsius = 0\n", r"runtime\.valid_min_celsius: unknown key in the dataset mode"),
    ("[variants]\ncalibration = 'range'\n", r"variants\.calibration: unknown key in the dataset mode: it belongs "
                                            r"to the tutorial mode .*expected one of: calibration_count"),
    ("[variants.onnx-fp16]\nparity_f = 1.0\n", r"variants\.onnx-fp16\.parity_f: unknown key for task\.kind = "
                                               r"'classification' \(expected one of: max_accuracy_drop, min_agreement\)"),
    ("[variants.onnx-fp16]\nmax_accuracy_drop = 2\n", r"variants\.onnx-fp16\.max_accuracy_drop: expected a "
                                                      r"number > 0 and <= 1, got 2"),
    ("[train]\nloss = 'huber'\n", r"train\.loss: expected 'auto' or 'sparse_categorical_crossentropy' for a "
                                  r"classification, got 'huber'"),
    ("[verify]\nmin_accuracy = 1.5\n", r"verify\.min_accuracy: expected a number > 0 and <= 1, got 1\.5"),
    ("[bundle]\nname = 'a b'\n", r"bundle\.name: expected a name of letters"),
    ("[bundle]\nmodel = 'onnx-fp16'\n[variants.onnx-int8-static]\n", r"bundle\.model: expected a variant that is "
                                                                      r"built"),
    ("[runtime]\nvalid = { a = [1, 0] }\n", r"runtime\.valid: expected a table of feature name = \[lo, hi\]"),
    ("[task]\nlabels = ['x']\n", r"task: unknown key|task\.labels: expected a list of at least 2"),
    ("[data]\nstandardize = 1\n", r"data\.standardize: expected true or false, got 1"),
    ("[export]\nopset = 17\nir_version = 7\n", r"export\.ir_version: expected >= 8 for opset 17, got 7"),
])
def test_dataset_mode_refusals_name_the_key(tmp_path, extra, message):
    text = MINIMAL
    for table in ("[task]", "[data]"):  # extend an existing table rather than repeat it
        if extra.startswith(table):
            text, extra = text.replace(table + "\n", extra), ""
    with pytest.raises(ConfigError, match=message) as e:
        config.load(minimal(tmp_path, text + extra))
    assert "\n" not in e.value.message


@pytest.mark.parametrize("data, message", [
    ('file = "data.txt"', r"data\.file: expected a path to a \.csv with a header row or an \.npz with arrays x "
                          r"and y \(a file ending in \.csv or \.npz\)"),
    ('file = "data.csv"\nvalidation = 1.0', r"data\.validation: expected a fraction > 0 and < 1"),
    ('file = "data.csv"\nvalidation = 0.2', r"data\.target: missing \(a CSV needs the name of the column"),
    ('file = "data.csv"\ntarget = "label"\nfeatures = ["a", "label"]', r"data\.features: expected feature "
                                                                      r"columns other than the target"),
    ('file = "data.csv"\ntarget = "label"\nfeatures = ["a", "a"]', r"data\.features: expected a non-empty list "
                                                                  r"of distinct .*'a' appears twice"),
])
def test_dataset_data_table_refusals(tmp_path, data, message):
    text = MINIMAL.replace('file = "data.csv"           # a CSV with a header row\ntarget = "label"\n'
                           'validation = 0.2', data)
    assert text != MINIMAL
    (tmp_path / "data.txt").write_text("")
    with pytest.raises(ConfigError, match=message):
        config.load(minimal(tmp_path, text))


def test_npz_takes_no_target(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"data\.target: expected no value for an \.npz"):
        config.load(write(tmp_path, '[data]\nfile = "d.npz"\ntarget = "y"\n'))


def test_a_copy_resolves_paths_against_its_recorded_origin(tmp_path):
    (tmp_path / "proj").mkdir()
    src = minimal(tmp_path / "proj")
    build = tmp_path / "build"
    build.mkdir()
    (build / "config.toml").write_bytes(src.read_bytes())
    (build / "config.origin").write_text(str(src.parent) + "\n")
    assert config.load(build / "config.toml") == config.load(src)
    (build / "config.origin").write_text("relative/folder\n")
    with pytest.raises(ConfigError, match=r"config\.origin: file: expected the absolute folder"):
        config.load(build / "config.toml")
