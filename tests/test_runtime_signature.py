"""The device runner for any signature: `Runner` on hand-made bundles (a 13-feature tabular
classifier, an 8x8x1 image classifier, a 4-feature regression) and on the tutorial's bundle
with a signature added. Real onnxruntime; the models are built with onnx.helper in conftest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime import BundleError, InputError, Runner, manifest, selfcheck
from tests.conftest import resign, sig_compute, signature_bundle


def golden_inputs(bundle: Path) -> np.ndarray:
    return np.asarray(json.loads((bundle / "golden.json").read_text())["inputs"], np.float32)


def rewrite_manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / manifest.MANIFEST).read_text())
    edit(m)
    for name, raw in manifest.encode(m).items():
        (bundle / name).write_bytes(raw)


def tutorial_signature(bundle: Path) -> dict:
    return {
        "task": "regression", "labels": None, "output_kind": "values",
        "input": {"name": "celsius", "dtype": "float32", "shape": [-1, 1], "features": ["celsius"]},
        "output": {"name": "fahrenheit", "dtype": "float32", "shape": [-1, 1], "names": ["fahrenheit"]},
        "valid": {"min": [-273.15], "max": [None]}, "observed": {"min": [-40.0], "max": [100.0]},
    }


@pytest.fixture
def tutorial_with_signature(bundle) -> Path:
    """The pipeline's tutorial bundle, its manifest given a signature and a model name."""
    def edit(m):
        m["signature"] = tutorial_signature(bundle)  # known observed range: -40 to 100 degC
        m["model"]["name"] = "celsius-to-fahrenheit"
    rewrite_manifest(bundle, edit)
    return bundle


# --- predict ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, out", [("tabular", 3), ("image", 10), ("regression", 1)])
def test_predict_takes_a_batch_or_one_example_and_returns_what_the_model_computes(tmp_path, kind, out):
    b = signature_bundle(tmp_path / kind, kind)
    x = golden_inputs(b)
    want = sig_compute(kind)(x)
    with Runner.from_bundle(b) as r:
        assert not r.scalar
        y = r.predict(x)
        assert y.dtype == np.float32 and y.shape == (len(x), out)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        one = r.predict(x[3])
        assert one.dtype == np.float32 and one.shape == (out,)
        np.testing.assert_allclose(one, want[3], rtol=1e-5, atol=1e-5)
        assert r.predict(x[3].tolist()).shape == (out,)  # nested lists too
        assert r.predict(x.astype(np.float64)).shape == (len(x), out)
        assert r.predict(x[:1]).shape == (1, out)  # a batch of one stays a batch


TABULAR_OK = [13.0] + [1.0] * 12


def tabular(**at) -> list[float]:
    row = list(TABULAR_OK)
    for name, v in at.items():
        row[["alcohol", "malic_acid", "proline"].index(name) if name != "proline" else 12] = v
    return row


@pytest.mark.parametrize(
    "values, message, index",
    [
        ([1.0] * 12, "input: expected 13 features, got 12", None),
        ([[1.0] * 12] * 2, "input: expected 13 features, got 12", None),
        ([1.0] * 14, "input: expected 13 features, got 14", None),  # too many values
        (5.0, "input: expected 13 features, got 1", None),
        ([TABULAR_OK] * 3 + [tabular(alcohol=float("nan"))], "input[3]: feature 'alcohol' is NaN", 3),
        ([tabular(alcohol=120)], "input[0]: feature 'alcohol' = 120: outside the valid range [0, 100]", 0),
        (tabular(alcohol=-0.5), "input[0]: feature 'alcohol' = -0.5: outside the valid range [0, 100]", 0),
        ([TABULAR_OK, tabular(malic_acid=float("inf"))], "input[1]: feature 'malic_acid' = inf: expected a finite number", 1),
        ([tabular(proline=1e39)], "input[0]: feature 'proline' = 1e+39: outside float32 range", 0),
        (["1"] * 13, "input: expected numbers", None),
        ([True] * 13, "input: expected numbers", None),
        ([[1.0] * 13, [1.0] * 12], "input: expected numbers", None),  # ragged
        ([], "input: empty, expected at least one example", None),
        (np.zeros((0, 13)), "input: empty, expected at least one example", None),
        (np.zeros((2, 13, 1)), r"input shape (2, 13, 1) expected (n, 13)", None),
    ],
)
def test_tabular_refusals_name_the_problem_in_one_line(tabular_bundle, values, message, index):
    with Runner.from_bundle(tabular_bundle) as r, pytest.raises(InputError) as e:
        r.predict(values)
    assert e.value.message.startswith(message) and "\n" not in e.value.message
    assert e.value.index == index


@pytest.mark.parametrize(
    "shape, message",
    [((8, 8), "input shape (8, 8) expected (8, 8, 1)"), ((64,), "input shape (64,) expected (8, 8, 1)"),
     ((2, 8, 8), "input shape (2, 8, 8) expected (8, 8, 1)"),
     ((3, 8, 8, 2), "input shape (3, 8, 8, 2) expected (n, 8, 8, 1)"),
     ((1, 2, 8, 8, 1), "input shape (1, 2, 8, 8, 1) expected (n, 8, 8, 1)")],
)
def test_image_refuses_a_wrong_shape_naming_both(image_bundle, shape, message):
    with Runner.from_bundle(image_bundle) as r, pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        r.predict(np.zeros(shape, np.float32))


def test_image_refuses_a_pixel_outside_its_valid_range_naming_example_and_feature(image_bundle):
    x = np.zeros((4, 8, 8, 1), np.float32)
    x[2, 1, 3, 0] = 17
    with Runner.from_bundle(image_bundle) as r:
        with pytest.raises(InputError) as e:
            r.predict(x)
        assert e.value.message == "input[2]: feature 'x[1,3,0]' = 17: outside the valid range [0, 16]"
        x[2, 1, 3, 0] = np.nan
        with pytest.raises(InputError, match=r"^input\[2\]: feature 'x\[1,3,0\]' is NaN$"):
            r.predict(x)
        x[2, 1, 3, 0] = 16  # the bound itself is valid
        assert r.predict(x).shape == (4, 10)


def test_float32_input_is_held_to_the_bounds_rounded_to_float32(tabular_bundle):
    """As the tutorial's -273.15: a bound typed as float32 is accepted."""
    signature_bundle(tabular_bundle, "tabular", valid={"min": [0.1] + [None] * 12, "max": [99.9] + [None] * 12})
    with Runner.from_bundle(tabular_bundle) as r:
        for v in (0.1, 99.9):
            assert r.predict(np.float32(tabular(alcohol=v))).shape == (3,)
            assert r.predict(tabular(alcohol=v)).shape == (3,)
        with pytest.raises(InputError, match="outside the valid range"):
            r.predict(tabular(alcohol=99.90001))


# --- labels and observed ranges ------------------------------------------------------------


@pytest.mark.parametrize("kind, labels", [("tabular", ["a", "b", "c"]), ("image", [str(i) for i in range(10)])])
def test_labels_of_names_the_largest_output(tmp_path, kind, labels):
    b = signature_bundle(tmp_path / kind, kind)
    x = np.random.default_rng(0).random((50, *golden_inputs(b).shape[1:]), dtype=np.float32) * 10
    with Runner.from_bundle(b) as r:
        y = r.predict(x)
        want = [labels[i] for i in sig_compute(kind)(x).argmax(axis=1)]
        assert r.labels_of(y) == want
        assert r.labels_of(r.predict(x[7])) == [want[7]]  # one example's output
        assert r.labels == labels and r.signature.task == "classification"


def test_labels_of_refuses_a_regression_and_a_wrong_size(regression_bundle, tabular_bundle):
    with Runner.from_bundle(regression_bundle) as r, pytest.raises(InputError, match="is a regression; only a classification"):
        r.labels_of(np.zeros((2, 1), np.float32))
    with Runner.from_bundle(tabular_bundle) as r, pytest.raises(InputError, match="outputs of 3 values each"):
        r.labels_of(np.zeros((2, 4), np.float32))


def test_outside_observed_counts_per_feature(tabular_bundle):
    # alcohol observed in [11, 15], the other twelve in [0, 1000]
    rows = [tabular(alcohol=10), tabular(alcohol=16), tabular(alcohol=12), tabular(malic_acid=-1),
            tabular(alcohol=15, proline=1001)]
    with Runner.from_bundle(tabular_bundle) as r:
        got = r.outside_observed(rows)
        assert got.dtype == np.int64 and got.shape == (13,)
        want = np.zeros(13, np.int64)
        want[0], want[1], want[12] = 2, 1, 1
        assert got.tolist() == want.tolist()
        assert r.outside_observed(tabular(alcohol=13)).tolist() == [0] * 13
        with pytest.raises(InputError, match="feature 'alcohol' = 120"):  # validated as predict does
            r.outside_observed(tabular(alcohol=120))


# --- the tutorial's model: unchanged, with and without a signature ----------------------------


@pytest.fixture
def tutorial_without_signature(bundle) -> Path:
    """The tutorial's bundle as made before signatures: no signature, no model name."""
    def edit(m):
        m.pop("signature", None)
        m["model"].pop("name", None)
    rewrite_manifest(bundle, edit)
    return bundle


def test_a_bundle_without_signature_is_the_tutorial_scalar_model(tutorial_without_signature):
    with Runner.from_bundle(tutorial_without_signature) as runner:
        check_the_old_tutorial(runner)
    assert all(c["ok"] for c in selfcheck(tutorial_without_signature))


def check_the_old_tutorial(runner):
    assert runner.scalar and not runner.signature.declared
    assert runner.name == "celsius-to-fahrenheit" and runner.signature.features == ["celsius"]
    assert runner.predict([0, 100]).shape == (2,)
    assert runner.outside_observed([1e6]).tolist() == [0]  # no observed range recorded: nothing counted


@pytest.mark.parametrize(
    "values, message",
    [(-273.16, r"^input\[0\] = -273\.16: outside the valid range \[-273\.15, inf\] degC \(below absolute zero\)$"),
     (float("nan"), r"^input\[0\] = nan: expected a number, got NaN$"),
     (np.zeros((2, 2)), r"^input: expected shape \(n,\) or \(n, 1\), got \(2, 2\)$"),
     ([], r"^input: empty, expected at least one value$")],
)
def test_the_tutorial_with_a_signature_keeps_its_behaviour_and_messages(tutorial_with_signature, values, message):
    with Runner.from_bundle(tutorial_with_signature) as r:
        assert r.scalar and r.signature.declared
        assert r.predict(100.0).shape == (1,) and r.predict([[1.0], [2.0]]).shape == (2,)
        with pytest.raises(InputError, match=message):
            r.predict(values)


def test_the_tutorial_with_a_signature_counts_outside_observed_and_passes_selfcheck(tutorial_with_signature):
    assert all(c["ok"] for c in selfcheck(tutorial_with_signature))
    with Runner.from_bundle(tutorial_with_signature) as r:
        assert r.outside_observed([-41, 0, 100, 101, 500]).tolist() == [3]
        assert r.outside_observed(np.float32([100.0])).tolist() == [0]


# --- selfcheck on signature golden data ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["tabular", "image", "regression"])
def test_selfcheck_passes_on_signature_golden_data(tmp_path, kind):
    checks = selfcheck(signature_bundle(tmp_path / kind, kind))
    assert [c["name"] for c in checks if c["ok"]] == ["python", "manifest", "hashes", "onnxruntime", "load", "golden"]
    assert "16 golden examples" in checks[-1]["detail"]
    assert ("16 labels equal" in checks[-1]["detail"]) == (kind != "regression")


def test_selfcheck_fails_on_a_perturbed_golden_output(image_bundle):
    g = json.loads((image_bundle / "golden.json").read_text())
    g["outputs"][5][2] += 1e-2
    resign(image_bundle, "golden.json", json.dumps(g).encode())
    checks = selfcheck(image_bundle)
    assert checks[-1]["name"] == "golden" and not checks[-1]["ok"]
    assert checks[-1]["detail"].startswith("golden.json | 1 of 160 golden outputs differ: worst at input[5] output[2]")


def test_selfcheck_fails_when_a_golden_label_differs(tabular_bundle):
    """Outputs within a (here generous) tolerance, yet another class on top: labels_equal catches it."""
    g = json.loads((tabular_bundle / "golden.json").read_text())
    top = int(np.argmax(g["outputs"][4]))
    other = (top + 1) % 3
    g["outputs"][4][other] = g["outputs"][4][top] + 0.5
    resign(tabular_bundle, "golden.json", json.dumps(g).encode())
    rewrite_manifest(tabular_bundle, lambda m: m["golden"].update(atol=1e6))
    detail = selfcheck(tabular_bundle)[-1]["detail"]
    assert detail == (f"golden.json | 1 of 16 golden labels differ: first at input[4], got {'abc'[top]!r}, "
                      f"expected {'abc'[other]!r}")


def test_selfcheck_fails_on_golden_inputs_of_another_shape(image_bundle):
    g = json.loads((image_bundle / "golden.json").read_text())
    g["inputs"] = np.zeros((16, 8, 8)).tolist()
    resign(image_bundle, "golden.json", json.dumps(g).encode())
    assert selfcheck(image_bundle)[-1]["detail"] == "golden.json | inputs: expected shape (n, 8, 8, 1), got (16, 8, 8)"


# --- the manifest's signature is checked at load, one line naming the key ----------------------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["model"].update(name=5), "model.name: expected a string, got 5"),
        (lambda m: m.update(signature=[1]), "signature: expected a table, got [1]"),
        (lambda m: m["signature"].update(task="clustering"), "signature.task: expected 'regression' or 'classification'"),
        (lambda m: m["signature"]["input"].update(shape="8x8"), "signature.input.shape: expected a list of integers"),
        (lambda m: m["signature"]["input"].update(shape=[-1, 8, 0, 1]), "signature.input.shape: expected a list"),
        (lambda m: m["signature"]["input"].update(features=["a"] * 63),
         "signature.input.features: expected 64 names (the product of shape [8, 8, 1]), got 63"),
        (lambda m: m["signature"]["input"].update(dtype="int8"), "signature.input.dtype: expected 'float32'"),
        (lambda m: m["signature"]["output"].pop("name"), "signature.output.name: expected a string, got None"),
        (lambda m: m["signature"]["valid"].update(min=[0] * 63), "signature.valid.min: expected a list of 64 values"),
        (lambda m: m["signature"]["valid"].update(max=["16"] * 64), "signature.valid.max: expected a list of 64 values"),
        (lambda m: m["signature"]["observed"].update(min=[None] * 64),
         "signature.observed.min: expected a list of 64 values (a number per feature)"),
        (lambda m: m["signature"].update(labels=["0", "1"]), "signature.labels: expected 10 labels for a classification"),
        (lambda m: m["signature"].update(labels="0123456789"), "signature.labels: expected a list of strings or null"),
        (lambda m: m["golden"].update(labels_equal="yes"), "golden.labels_equal: expected true or false, got 'yes'"),
    ],
)
def test_a_bad_signature_is_refused_at_load_naming_the_key(image_bundle, edit, message):
    rewrite_manifest(image_bundle, edit)
    with pytest.raises(BundleError) as e:
        Runner.from_bundle(image_bundle)
    assert e.value.message.startswith(f"manifest.json | {message}"), e.value.message
    assert "\n" not in e.value.message
    assert selfcheck(image_bundle)[1]["detail"] == e.value.message


def test_a_signature_bundle_needs_no_valid_input_nor_model_io(image_bundle):
    def edit(m):
        m.pop("valid_input", None)
        m["model"].pop("input")
        m["model"].pop("output")
    rewrite_manifest(image_bundle, edit)
    with Runner.from_bundle(image_bundle) as r:
        assert r.name == "digits" and r.predict(np.zeros((8, 8, 1))).shape == (10,)


def test_a_bundle_without_signature_still_needs_its_valid_input(tutorial_without_signature):
    rewrite_manifest(tutorial_without_signature, lambda m: m.pop("valid_input"))
    with pytest.raises(BundleError, match=r"^manifest.json \| valid_input.min_celsius: expected"):
        Runner.from_bundle(tutorial_without_signature)
