"""Issue 27, section 1: an honest verdict. verify measures the trivial baseline on the validation
rows (the majority class; the training mean and median) and a model that does not beat it by
``verify.baseline_margin`` fails verify, in one line naming both figures, with no bundle;
``verify.baseline = "warn"`` makes that a warning. When BatchNormalization layers' moving
statistics saw too few updates, the line says so and what to do.

The judge's arithmetic is tested on made-up references (no TensorFlow); the rest runs the real
pipeline on small made-up data: a classifier of labels that are noise, a model that came trained
but never was, and a BatchNormalization model trained too short and then long enough.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.engine import Judge, Outputs
from tests.support.core import pipeline


# --- the judge, on made-up references -----------------------------------------------------------

def judge(task: str, y_val, keras_y, *, counts=(), mean=(), median=(), margin: float = 0.1, targets=("y",),
          max_mae: float | None = None) -> Judge:
    """A Judge over a reference whose probe rows are all validation rows (a regression's y_val
    (n, k) for the k ``targets``)."""
    keras_y = np.float32(keras_y).reshape(len(y_val), -1)
    n = len(y_val)
    ref = {"x": np.zeros((n, 1), np.float32), "group": np.zeros(n, np.int8), "group_names": np.array(["validation"]),
           "keras_y": keras_y, "y_val": np.asarray(y_val, np.int64 if task == "classification" else np.float64),
           "output_kind": np.array("logits" if task == "classification" else "values"),
           "labels": np.array(["a", "b"] if task == "classification" else [], dtype=str),
           "input_shape": np.array([1]), "range_min": np.array([-1.0]), "range_max": np.array([1.0]),
           "oracle_rows": np.array(0), "train_counts": np.array(counts, np.int64),
           "train_mean": np.array(mean, np.float64), "train_median": np.array(median, np.float64),
           "target_names": np.array(list(targets) if task == "regression" else [], dtype=str)}
    cfg = {"task": {"kind": task}, "verify": {"large_batch": 2, "baseline_margin": margin, "baseline": "fail",
                                              "max_mae": max_mae}}
    return Judge(cfg, ref)


def logits(classes) -> list:
    return [[1.0, 0.0] if c == 0 else [0.0, 1.0] for c in classes]


def test_the_majority_class_is_the_training_rows_and_is_scored_on_the_validation_rows():
    y_val = [0] * 40 + [1] * 60  # the validation rows' own majority is b; the training rows' is a
    j = judge("classification", y_val, logits(y_val), counts=[70, 30])
    b = j.baseline()
    assert (b["label"], b["accuracy"], b["train_share"]) == ("a", 0.4, 0.7)
    assert j.baseline_failure("keras", j.keras_accuracy, b) is None  # 100 % beats it


@pytest.mark.parametrize("right,fails", [(45, True), (46, False)])
def test_a_classifier_must_remove_the_margins_share_of_the_baselines_error(right, fails):
    """Baseline 40 % right (error 60 %); margin 0.1: error at most 54 %, so 46 of 100 right passes, 45 does not."""
    y_val = [0] * 40 + [1] * 60
    pred = [0] * 40 + [1] * (right - 40) + [0] * (100 - right)
    j = judge("classification", y_val, logits(pred), counts=[70, 30])
    line = j.baseline_failure("keras", j.keras_accuracy, j.baseline())
    assert (line is not None) == fails, line
    if fails:
        assert line == ("keras accuracy 45.0% does not beat the majority-class baseline 40.0% (always 'a', 70.0% of "
                        "the training rows) on 100 validation rows; verify.baseline_margin 0.1 needs at least 46.0%")


def test_a_regressions_baseline_is_the_better_of_the_training_mean_and_median():
    y_val = [0.0, 1.0, 2.0, 10.0]
    j = judge("regression", y_val, [1.0] * 4, mean=[3.25], median=[1.5])
    b = j.baseline()
    assert b["kind"] == "training median" and b["median"]["mae"] == pytest.approx(2.75)
    assert b["mean"]["mae"] == pytest.approx((3.25 + 2.25 + 1.25 + 6.75) / 4) and b["mae"] == b["median"]["mae"]
    line = j.baseline_failure("keras", j.keras_accuracy, b)  # predicting 1.0: MAE 2.75, the median's own
    assert line == ("keras MAE 2.75 does not beat the baseline of always predicting the training median (1.5), MAE "
                    "2.75 (mean: 3.375) on 4 validation rows; verify.baseline_margin 0.1 needs at most 2.475")
    exact = judge("regression", y_val, y_val, mean=[3.25], median=[1.5])
    assert exact.baseline_failure("keras", exact.keras_accuracy, exact.baseline()) is None


def test_a_regression_of_several_targets_beats_the_baseline_on_each_target():
    """East learned, north not (always the training mean): the whole's MAE beats the baseline's, but
    verify holds each target to its own and names the one that learned nothing."""
    east = np.array([0.0, 2.0, 4.0, 6.0])
    north = np.array([10.0, 30.0, 10.0, 30.0])
    y_val = np.stack([east, north], axis=1)
    keras_y = np.stack([east, np.full(4, 20.0)], axis=1)
    j = judge("regression", y_val, keras_y, mean=[3.0, 20.0], median=[3.0, 20.0], targets=("east", "north"))
    b = j.baseline()
    assert set(b["targets"]) == {"east", "north"} and b["targets"]["east"]["mae"] == pytest.approx(2.0)
    assert b["targets"]["north"]["mae"] == pytest.approx(10.0) and b["mae"] == pytest.approx(6.0)
    acc = j.keras_accuracy
    assert acc["mae"] == pytest.approx(5.0) and acc["mae"] < 0.9 * b["mae"]  # the whole would pass
    assert acc["targets"]["east"]["mae"] == 0.0 and acc["targets"]["north"]["mae"] == pytest.approx(10.0)
    line = j.baseline_failure("keras", acc, b)
    assert line == ("keras MAE of 'north' 10 does not beat the baseline of always predicting the training mean (20), "
                    "MAE 10 (median: 10) on 4 validation rows; verify.baseline_margin 0.1 needs at most 9")
    learned = judge("regression", y_val, y_val, mean=[3.0, 20.0], median=[3.0, 20.0], targets=("east", "north"))
    assert learned.baseline_failure("keras", learned.keras_accuracy, learned.baseline()) is None


def test_max_mae_and_a_variants_budget_hold_for_each_target():
    y_val = np.array([[0.0, 100.0], [1.0, 200.0], [2.0, 300.0], [3.0, 400.0]])
    keras_y = y_val + [[0.1, 4.0], [-0.1, -4.0], [0.1, 4.0], [-0.1, -4.0]]  # east off by 0.1, north by 4
    j = judge("regression", y_val, keras_y, mean=[1.5, 250.0], median=[1.5, 250.0], targets=("east", "north"),
              max_mae=3.0)
    assert j.accuracy_failure("keras", j.keras_accuracy) == (
        "keras accuracy: MAE of 'north' 4 on 4 validation rows (allowed 3); worst 4 at validation row 0")
    worse = {"accuracy": j.accuracy(Outputs("v", y_val + [[0.2, 4.0]] * 4, y_val)), "parity": {"range": {}}}
    assert j.over_budget(worse, {}) == ["MAE of 'east' 0.2 > 0.105 (1.05x Keras's)"]  # north: 4 <= 4.2
    assert j.over_budget(worse, {"max_mae": 1.0, "max_err": 0.5}) == [
        "MAE of 'north' 4 > 1", "max error of 'north' 4 > 0.5"]


def test_the_batch_norm_hint_needs_few_updates_and_a_gap_between_training_and_validation():
    y_val = [0] * 50 + [1] * 50
    j = judge("classification", y_val, logits([0] * 100), counts=[50, 50])  # 50 % on the validation rows
    acc = j.keras_accuracy
    few = {"batch_norm": [{"layer": "bn", "momentum": 0.99}], "steps": 120, "final_train_score": 0.95}
    hint = j.batch_norm_hint(few, acc)
    assert hint == ("hint: training accuracy 95.0%, validation 50.0%; the 1 BatchNormalization layer(s) (momentum "
                    "0.99) had 120 updates, so their moving statistics still hold 30% of their initial values: train "
                    "longer (train.epochs; about 459 steps bring that under 1 %) or give those layers a lower "
                    "momentum (0.9 needs 44 steps)")
    assert j.batch_norm_hint({**few, "steps": 600}, acc) is None  # 0.2 % left: the statistics are the data's
    assert j.batch_norm_hint({**few, "final_train_score": 0.55}, acc) is None  # no gap: it learned nothing anywhere
    assert j.batch_norm_hint({**few, "batch_norm": []}, acc) is None
    assert j.batch_norm_hint({}, acc) is None  # a model that came trained: nothing recorded


# --- the pipeline, on small made-up data ----------------------------------------------------------

def write_csv(path: Path, x: np.ndarray, y: np.ndarray, labels: list[str]) -> None:
    rows = ["a,b,label"] + [f"{u:.4f},{v:.4f},{labels[c]}" for (u, v), c in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")


def run_all(tmp_path: Path, config: str) -> tuple:
    (tmp_path / "edge.toml").write_text(config)
    build, dist = tmp_path / "build", tmp_path / "dist"
    r = pipeline("all", "--config", str(tmp_path / "edge.toml"), "--build", str(build), "--dist", str(dist))
    return r, build, dist


def errors(r) -> list[str]:
    return [ln for ln in r.stderr.decode().splitlines() if not ln.startswith("WARNING:tf2onnx")]


# These builds prove verify's verdict on the model, not the variants: one variant (a third of the
# build's work less than six).
ONE_VARIANT = "\n[variants.onnx-fp16]\n"
NOISE = ('[data]\nfile = "noise.csv"\ntarget = "label"\n\n[task]\nkind = "classification"\n\n[train]\nepochs = 5\n'
         + ONE_VARIANT)


@pytest.mark.slow
def test_a_classifier_of_noise_fails_verify_naming_the_baseline_and_a_warning_lets_it_ship(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(np.int64)  # 70 % "calm": labels that owe nothing to the features
    write_csv(tmp_path / "noise.csv", rng.normal(size=(400, 2)), y, ["calm", "storm"])
    r, build, dist = run_all(tmp_path, NOISE)
    assert r.returncode == 1, r.stdout.decode()[-2000:] + r.stderr.decode()[-2000:]
    lines = errors(r)
    assert "Traceback" not in r.stderr.decode()
    assert re.fullmatch(r"error: verify: keras accuracy \d+\.\d% does not beat the majority-class baseline \d+\.\d% "
                        r"\(always 'calm', \d+\.\d% of the training rows\) on 80 validation rows; "
                        r"verify.baseline_margin 0.1 needs at least \d+\.\d%", lines[0]), lines
    assert lines[1].startswith("error: verify failed: 1 check(s); report ") and len(lines) == 2, lines
    assert not (dist / "bundle.tar.gz").exists() and not (dist / "bundle").exists()
    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["passed"] is False and report["baseline"]["beaten"] is False
    assert report["baseline"]["label"] == "calm"
    assert "Keras does **not** beat it" in (build / "verify" / "report.md").read_text()

    # Those who know why: a warning, the same line, and the bundle (verify and bundle again, no retraining).
    (tmp_path / "edge.toml").write_text(NOISE + '\n[verify]\nbaseline = "warn"\n')
    for stage in ("verify", "bundle"):
        r = pipeline(stage, "--config", str(tmp_path / "edge.toml"), "--build", str(build), "--dist", str(dist))
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        if stage == "verify":
            assert errors(r) == ["warning: " + lines[0].removeprefix("error: ")], errors(r)
            assert "baseline (majority class 'calm')" in r.stdout.decode()
    assert (dist / "bundle.tar.gz").is_file()
    assert "- WARNING: keras accuracy" in (build / "verify" / "report.md").read_text()


@pytest.mark.slow
def test_a_model_that_came_trained_but_never_was_fails_the_same_check(tmp_path):
    from export.tfenv import tensorflow

    _, keras = tensorflow()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    write_csv(tmp_path / "data.csv", x, (x[:, 0] > 0.5).astype(np.int64), ["low", "high"])  # about 70 % low
    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(2, kernel_initializer="zeros",
                                                                  bias_initializer="zeros")]).save(tmp_path / "m.keras")
    r, build, dist = run_all(tmp_path, '[data]\nfile = "data.csv"\ntarget = "label"\n\n[task]\nkind = '
                                       '"classification"\n\n[model]\nfile = "m.keras"\n' + ONE_VARIANT)
    assert r.returncode == 1, r.stdout.decode()[-2000:]
    line = errors(r)[0]  # all-zero logits: one class for every row
    assert line.startswith("error: verify: keras accuracy ") and "does not beat the majority-class baseline" in line, line
    assert "hint:" not in line  # nothing was trained here: nothing to say about its training
    assert not (dist / "bundle.tar.gz").exists()


BN_MODEL = '''import keras


def build(input_shape, num_outputs):
    return keras.Sequential([keras.Input(shape=tuple(input_shape)), keras.layers.BatchNormalization(),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(num_outputs)])
'''


@pytest.mark.slow
def test_batch_norm_trained_too_short_gets_the_hint_and_trained_long_enough_passes(tmp_path):
    """Two blobs far from zero, not standardized: in training, BatchNormalization's batch statistics
    separate them; after 15 updates its moving statistics are still mostly their initial values
    (mean 0, variance 1), so at inference every row lands in one class. 40 epochs of 12 steps
    (480 updates at momentum 0.99: 0.8 % left) fix it."""
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 75)
    x = np.float32(100 + 4 * y[:, None] + rng.normal(size=(150, 2)))
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    (tmp_path / "model.py").write_text(BN_MODEL)
    config = ('[data]\nfile = "blobs.npz"\nstandardize = false\n\n[task]\nkind = "classification"\n'
              'labels = ["left", "right"]\n\n[model]\nbuilder = "model.py:build"\n' + ONE_VARIANT +
              '\n[train]\nbatch_size = 10\nlearning_rate = 0.01\n')
    r, build, dist = run_all(tmp_path, config + "epochs = 1\n")
    assert r.returncode == 1, r.stdout.decode()[-2000:]
    line = errors(r)[0]
    assert "does not beat the majority-class baseline" in line, line
    assert re.search(r"; hint: training accuracy \d+\.\d%, validation \d+\.\d%; the 1 BatchNormalization layer\(s\) "
                     r"\(momentum 0\.99\) had 12 updates, so their moving statistics still hold 89% of their "
                     r"initial values: train longer \(train\.epochs; about 459 steps bring that under 1 %\)", line), line
    assert not (dist / "bundle.tar.gz").exists()

    r, build, dist = run_all(tmp_path, config + "epochs = 40\n")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["baseline"]["beaten"] and report["accuracy"]["keras"]["accuracy"] >= 0.9, report["accuracy"]
    assert (dist / "bundle.tar.gz").is_file()
