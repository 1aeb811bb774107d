"""Config validation: every key checked, with a message naming it (and the nearest known key),
before TensorFlow loads; one schema, every default in one place."""

from __future__ import annotations

import json
import math
import tomllib

import pytest

from export.formats import VARIANTS
from pipeline import config
from pipeline.errors import ConfigError
from tests.support import forkrun
from tests.support.core import MINIMAL, pipeline, preset_with, PRESETS, ROOT


def preset(name: str = "default") -> dict:
    return tomllib.loads((PRESETS / f"{name}.toml").read_text())


@pytest.mark.parametrize("name", ["default", "tutorial"])
def test_presets_are_valid_and_are_ordinary_configs(name):
    cfg = config.load(PRESETS / f"{name}.toml")
    assert cfg["model"]["layers"] == [1] and cfg["data"]["standardize"] is False
    assert cfg["data"]["file"] == str(PRESETS / "celsius.csv") and cfg["data"]["validation"] == 0
    assert cfg["verify"]["oracle"] == f"{PRESETS / 'fahrenheit.py'}:oracle"
    assert (cfg["model"]["input_name"], cfg["model"]["output_name"]) == ("celsius", "fahrenheit")
    assert (cfg["train"]["optimizer"], cfg["train"]["learning_rate"], cfg["train"]["batch_size"]) == ("adam", 0.1, "all")
    assert config.input_files(cfg) == [str(PRESETS / "celsius.csv"), str(PRESETS / "fahrenheit.py")]
    from pipeline import dataset

    ds = dataset.load(cfg)
    assert ds.x_train.reshape(-1).tolist() == [-40.0, -10.0, 0.0, 8.0, 15.0, 22.0, 38.0]
    assert ds.y_train.tolist() == [-40.0, 14.0, 32.0, 46.0, 59.0, 72.0, 100.0]
    assert ds.oracle_rows == len(ds.x_val) == 2000 and ds.y_val[0] == pytest.approx(-99.95 * 1.8 + 32)


def test_tutorial_preset_is_the_tutorial():
    t = config.load(PRESETS / "tutorial.toml")["train"]
    assert (t["epochs"], t["batch_size"], t["seed"], t["loss"]) == (500, "all", 0, "mean_squared_error")


def mutate(path: str, value):
    raw = preset()
    *parents, leaf = path.split(".")
    table = raw
    for p in parents:
        table = table.setdefault(p, {})
    if value is DELETE:
        del table[leaf]
    else:
        table[leaf] = value
    return raw


DELETE = object()


def validate(raw: dict) -> dict:
    return config.validate(raw, base=PRESETS)


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("train.epochz", 5, r"train\.epochz: unknown key \(did you mean train\.epochs\? expected one of: loss, "),
        ("train.steps", 5, r"train\.steps: unknown key: train\.epochs, with train\.batch_size = \"all\""),
        ("verify.max_mae_f", 1, r"verify\.max_mae_f: unknown key: verify\.max_mae$"),
        ("train.epochs", "500", r"train\.epochs: expected an integer >= 1 .*got '500'"),
        ("train.epochs", 0, r"train\.epochs: expected an integer >= 1"),
        ("train.epochs", True, r"train\.epochs: expected an integer"),
        ("train.batch_size", "some", r"train\.batch_size: expected \"all\" \(every training row in each step\) or an "
                                     r"integer >= 1, got 'some'"),
        ("train.learning_rate", -0.1, r"train\.learning_rate: expected a number > 0, got -0\.1"),
        ("train.learning_rate", float("nan"), r"train\.learning_rate: expected a number > 0, got nan"),
        ("verify.range", [0, float("nan")], r"verify\.range: expected \[lo, hi\] with lo < hi"),
        ("verify.oracle_range", [0, float("inf")], r"verify\.oracle_range: expected \[lo, hi\] with lo < hi \(finite"),
        ("verify.oracle", "nope.py:oracle", r"verify\.oracle: expected 'file\.py:function' .* does not exist"),
        ("verify.probes", ["grid"], r"verify\.probes: expected a list with \"validation\" in it"),
        ("verify.probes", ["validation", "grids"], r"verify\.probes: expected a list of at least 1 distinct probe "
                                                   r"groups \(of training, .*\); 'grids' is not one"),
        ("train.optimizer", "adamax", r"train\.optimizer: expected one of 'adam', 'sgd'"),
        ("train.loss", 3, r"train\.loss: expected one of 'auto', 'mean_squared_error'"),
        ("data.validation", 1.0, r"data\.validation: expected a fraction >= 0 and < 1"),
        ("data.target", "kelvin", None),  # refused with the data (test_dataset), not here
        ("model.layers", [0, 1], r"model\.layers: expected"),
        ("model.activation", "swish", r"model\.activation: expected one of"),
        ("model.input_name", "in put", r"model\.input_name: expected a tensor name"),
        ("model.output_name", "celsius", r"model\.output_name: expected a name other than model\.input_name"),
        ("export.opset", 21, r"export\.opset: expected an integer >= 13 and <= 18, got 21"),
        ("export.ir_version", 7, r"export\.ir_version: expected >= 8 for opset 17, got 7"),
        ("verify.onnx.atol", 0, r"verify\.onnx\.atol: expected a number > 0, got 0"),
        ("verify.tflite.rtol", "1e-6", r"verify\.tflite\.rtol: expected a number > 0"),
        ("verify.tflite.bogus", 1, r"verify\.tflite\.bogus: unknown key"),
        ("verify.onnx", 1e-5, r"verify\.onnx: expected a table"),
        ("runtime.valid_max", -300.0, r"runtime\.valid_max: expected > runtime\.valid_min"),
        ("runtime.golden_count", 0, r"runtime\.golden_count: expected an integer >= 1"),
    ],
)
def test_bad_values_are_refused_naming_the_key(path, value, message):
    if message is None:
        validate(mutate(path, value))
        return
    with pytest.raises(ConfigError, match=message) as e:
        validate(mutate(path, value))
    assert "\n" not in e.value.message


def test_unknown_top_level_table():
    raw = preset()
    raw["trian"] = {}
    with pytest.raises(ConfigError, match=r"trian: unknown key \(did you mean train\? expected one of: data, task, "):
        validate(raw)


def test_an_oracle_comes_with_its_range_and_zero_validation_needs_one():
    raw = mutate("verify.oracle_range", DELETE)
    with pytest.raises(ConfigError, match=r"verify\.oracle_range: expected verify\.oracle and verify\.oracle_range "
                                          r"together"):
        validate(raw)
    raw = mutate("verify.oracle", DELETE)
    del raw["verify"]["oracle_range"]
    with pytest.raises(ConfigError, match=r"data\.validation: expected a fraction > 0 or a validation file: 0 holds "
                                          r"out no row, which needs verify\.oracle"):
        validate(raw)


def test_ints_become_floats_and_hash_ignores_formatting(tmp_path):
    a = preset_with(tmp_path / "a.toml", ("learning_rate = 0.1", "learning_rate   =   0.1"))
    a.write_text("# a comment\n" + a.read_text())
    ca, cb = config.load(a), config.load(PRESETS / "default.toml")
    assert isinstance(ca["verify"]["range"][0], float)
    assert config.config_hash(ca) != config.config_hash(cb)  # the data's absolute path differs
    assert config.canonical_json(ca).replace(str(tmp_path), str(PRESETS)) == config.canonical_json(cb)
    cb["train"]["epochs"] += 1
    assert config.config_hash(config.load(PRESETS / "default.toml")) != config.config_hash(cb)


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: file: not valid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match=r"nope\.toml: file: not found"):
        config.load(tmp_path / "nope.toml")


def test_cli_refuses_bad_config_in_one_line_without_loading_tensorflow(tmp_path):
    bad = preset_with(tmp_path / "bad.toml", ("epochs = 2000", "epochs = -5"))
    code = (
        "import sys; from pipeline.__main__ import main; "
        f"rc = main(['train', '--config', {str(bad)!r}, '--build', {str(tmp_path / 'b')!r}]); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules); sys.exit(rc)"
    )
    r = pipeline_code(code)
    assert r.returncode == 2
    assert r.stdout.decode().split() == ["False", "False"]
    lines = r.stderr.decode().splitlines()
    assert lines == [f"error: config error: {bad}: train.epochs: expected an integer >= 1 and <= 10000000, got -5"]
    assert not (tmp_path / "b").exists()


def test_cli_refuses_a_bad_bundle_priority_in_one_line(tmp_path):
    bad = preset_with(tmp_path / "bad.toml", ('model = "onnx-fp32"', 'model = "auto"\nprefer = "fastest"'))
    r = pipeline("config", "--config", str(bad), "--build", str(tmp_path / "b"))
    assert r.returncode == 2  # docs/exit-codes.md: bad config
    assert r.stderr.decode().splitlines() == [
        f"error: config error: {bad}: bundle.prefer: expected one of 'speed', 'size', got 'fastest'"]


def pipeline_code(code: str):
    return forkrun.python("-c", code, cwd=ROOT, timeout=120)


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
    raw["train"]["epochs"] = 7
    cfg = validate(raw)
    want = config.load(PRESETS / "default.toml")
    want["train"]["epochs"] = 7
    assert cfg == want


def test_every_default_is_in_the_one_schema(tmp_path):
    """A config of nothing but its data takes every other value from config.SCHEMA."""
    cfg = config.load(write(tmp_path, '[data]\nfile = "d.csv"\ntarget = "y"\n'.replace("d.csv", str(PRESETS / "celsius.csv"))
                            .replace('"y"', '"fahrenheit"')))
    for section, keys in config.SCHEMA.items():
        for key, spec in keys.items():
            if isinstance(spec, tuple) and spec[1] is not config.REQUIRED and (section, key) not in (
                    ("bundle", "name"), ("data", "target")):
                assert cfg[section][key] == spec[1], (section, key)
    assert cfg["variants"]["onnx-fp16"] == {"max_mae": None, "max_err": None, "parity": None}


def test_variants_named_are_the_ones_built(tmp_path):
    default = config.load(PRESETS / "default.toml")["variants"]
    assert len([k for k in default if k in VARIANTS]) == 6
    one = config.load(preset_with(tmp_path / "one.toml", ("[variants.tflite-fp16]\nmax_mae = 0.12\nmax_err = 0.3\n"
                                                           "parity = 0.25\n", "")))["variants"]
    assert "tflite-fp16" not in one and len(one) == len(default) - 1
    with pytest.raises(ConfigError, match=r"variants\.onnx-fp16: expected a budget table"):
        config.load(write(tmp_path, "[data]\nfile = 'x.csv'\n[variants]\nonnx-fp16 = true\n".replace(
            "x.csv", str(PRESETS / "celsius.csv")).replace("[variants]", "target = 'fahrenheit'\n[variants]")))


def minimal(tmp_path, text: str = MINIMAL):
    (tmp_path / "data.csv").write_text("a,label\n1,x\n2,y\n3,x\n4,y\n")
    (tmp_path / "model.py").write_text("def build(shape, k):\n    pass\n")
    return write(tmp_path, text, "edge.toml")


def test_the_issues_minimal_config_is_complete(tmp_path):
    cfg = config.load(minimal(tmp_path))
    budget = {"max_accuracy_drop": 0.01, "min_agreement": 0.99}
    assert cfg == {
        "data": {"file": str(tmp_path / "data.csv"), "target": "label", "features": None, "validation": 0.2,
                 "standardize": True},
        "task": {"kind": "classification", "labels": None},
        "model": {"builder": f"{tmp_path / 'model.py'}:build", "file": None, "layers": None, "activation": "relu",
                  "input_name": "inputs", "output_name": "outputs"},
        "train": {"loss": "auto", "optimizer": "adam", "learning_rate": 0.001, "epochs": 50, "batch_size": 32,
                  "seed": 0},
        "export": {"opset": 17, "ir_version": 8},
        "verify": {"probes": ["training", "validation", "synthetic", "edge"], "range": None, "grid_points": 4096,
                   "synthetic_count": 256, "random_count": 1024, "seed": 1, "large_batch": 256, "oracle": None,
                   "oracle_range": None, "oracle_points": 2000, "max_mae": None, "min_accuracy": None,
                       "baseline": "fail", "baseline_margin": 0.1,
                   "onnx": {"atol": 1e-5, "rtol": 1e-4}, "tflite": {"atol": 1e-5, "rtol": 1e-4}},
        "variants": {"calibration": "training", "calibration_count": 300, **{v: budget for v in VARIANTS}},
        "bundle": {"model": "onnx-fp32", "name": tmp_path.name, "prefer": "speed"},
        "runtime": {"valid_min": -math.inf, "valid_max": math.inf, "valid": {}, "golden_count": 64},
    }
    assert config.input_files(cfg) == [str(tmp_path / "data.csv"), str(tmp_path / "model.py")]
    json.loads(config.canonical_json(cfg))  # None and inf stay valid JSON
    assert len(config.config_hash(cfg)) == 64


def test_regression_defaults_and_variant_budgets(tmp_path):
    text = MINIMAL.replace('kind = "classification"', 'kind = "regression"').replace('"label"', '"a"')
    text += "[variants.onnx-int8-static]\nparity = 0.5\n[bundle]\nname = 'wine-1'\n"
    cfg = config.load(minimal(tmp_path, text))
    assert cfg["variants"] == {"calibration": "training", "calibration_count": 300,
                               "onnx-int8-static": {"max_mae": None, "max_err": None, "parity": 0.5}}
    assert cfg["bundle"] == {"model": "onnx-fp32", "name": "wine-1", "prefer": "speed"}


def test_auto_takes_the_priority_it_is_given(tmp_path):
    for prefer in ("speed", "size"):
        cfg = config.load(minimal(tmp_path, MINIMAL + f"[bundle]\nmodel = 'auto'\nprefer = '{prefer}'\n"))
        assert cfg["bundle"]["model"] == "auto" and cfg["bundle"]["prefer"] == prefer


@pytest.mark.parametrize("extra, message", [
    ("[train]\nsteps = 3\n", r"train\.steps: unknown key: train\.epochs"),
    ("[verify]\ngrid_min = 0\n", r"verify\.grid_min: unknown key: verify\.range = \[min, max\]"),
    ("[variants]\ncalibration_points = 3\n", r"variants\.calibration_points: unknown key: variants\.calibration_count"),
    ("[variants.onnx-fp16]\nparity = 1.0\n", r"variants\.onnx-fp16\.parity: unknown key for task\.kind = "
                                             r"'classification' \(expected one of: max_accuracy_drop, min_agreement\)"),
    ("[verify]\noracle = 'model.py:build'\noracle_range = [0, 1]\n", r"verify\.oracle: expected only with "
                                                                   r"task\.kind = \"regression\""),
    ("[variants.onnx-fp16]\nmax_accuracy_drop = 2\n", r"variants\.onnx-fp16\.max_accuracy_drop: expected a "
                                                      r"number > 0 and <= 1, got 2"),
    ("[train]\nloss = 'huber'\n", r"train\.loss: expected 'auto' or 'sparse_categorical_crossentropy' for a "
                                  r"classification, got 'huber'"),
    ("[verify]\nmin_accuracy = 1.5\n", r"verify\.min_accuracy: expected a number > 0 and <= 1, got 1\.5"),
    ("[bundle]\nname = 'a b'\n", r"bundle\.name: expected a name of letters"),
    ("[bundle]\nmodel = 'onnx-fp16'\n[variants.onnx-int8-static]\n", r"bundle\.model: expected a variant that is "
                                                                      r"built"),
    ("[bundle]\nmodel = 'auto'\nprefer = 'fast'\n", r"bundle\.prefer: expected one of 'speed', 'size', got 'fast'$"),
    ("[bundle]\nmodel = 'auto'\nprefer = 1\n", r"bundle\.prefer: expected one of 'speed', 'size', got 1$"),
    ("[bundle]\nprefer = 'size'\n", r"bundle\.prefer: expected only with bundle\.model = \"auto\" \(it says what "
                                    r"auto chooses by\), got bundle\.model = 'onnx-fp32'$"),
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
    ('file = "data.csv"\nvalidation = 1.0', r"data\.validation: expected a fraction >= 0 and < 1"),
    ('file = "data.csv"\nvalidation = 0.2', r"data\.target: missing \(a CSV needs the name of the column"),
    ('file = "data.csv"\ntarget = "label"\nfeatures = ["a", "label"]', r"data\.features: expected feature "
                                                                      r"columns other than the target"),
    ('file = "data.csv"\ntarget = "label"\nfeatures = ["a", "a"]', r"data\.features: expected a list of at least 1 "
                                                                  r"distinct feature columns; 'a' appears twice"),
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
