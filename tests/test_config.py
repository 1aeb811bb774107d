"""Config validation: every key checked, with a message naming it, before TensorFlow loads."""

from __future__ import annotations

import tomllib

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from tests.conftest import PRESETS, edited, pipeline, preset_with


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
        ("train.seed", DELETE, r"train\.seed: missing"),
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
