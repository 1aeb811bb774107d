"""The device runner for any signature: `Runner` on hand-made bundles (a 13-feature tabular
classifier, an 8x8x1 image classifier, a 4-feature regression) and on the tutorial's bundle
with a signature added. Real onnxruntime; the models are built with onnx.helper in conftest."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from runtime import BundleError, InputError, Runner, manifest, selfcheck
from runtime.signature import Signature
from tests.support.bundles import resign, sig_compute, signature_bundle, WINE_FEATURES
from tests.support.core import one_error_line, runtime_cli


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


@pytest.mark.parametrize("at", [(0, 0, 0), (3, 4, 0), (7, 7, 0)])
@pytest.mark.parametrize("bad, problem", [(np.nan, "is NaN"), (np.inf, "= inf: expected a finite number"),
                                          (-np.inf, "= -inf: expected a finite number"),
                                          (17, "= 17: outside the valid range [0, 16]"),
                                          (-0.5, "= -0.5: outside the valid range [0, 16]")])
def test_one_float32_example_is_refused_as_a_batch_is(image_bundle, at, bad, problem):
    """The fast path of one small float32 example (alone or as a batch of one) refuses what the
    batch path refuses, with its message, wherever the bad value is, and leaves the input as it was."""
    x = golden_inputs(image_bundle)[:1].copy()
    x[(0, *at)] = bad
    before = x.copy()
    feature = f"feature 'x[{at[0]},{at[1]},{at[2]}]' {problem}"
    with Runner.from_bundle(image_bundle) as r:
        for given in (x, x[0]):
            with pytest.raises(InputError) as e:
                r.predict(given)
            assert e.value.message == f"input[0]: {feature}"
        with pytest.raises(InputError) as e:  # the same example second in a batch: the batch path
            r.predict(np.concatenate([golden_inputs(image_bundle)[:1], x]))
        assert e.value.message == f"input[1]: {feature}"
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("first, second, message", [
    (np.inf, -np.inf, "feature 'x[0,0,0]' = inf: expected a finite number"),  # they sum to NaN
    (17, np.nan, "feature 'x[0,0,0]' = 17: outside the valid range [0, 16]"),
    (np.nan, -1, "feature 'x[0,0,0]' is NaN"),
])
def test_one_float32_example_with_two_bad_values_names_the_first(image_bundle, first, second, message):
    x = golden_inputs(image_bundle)[:1].copy()
    x[0, 0, 0, 0], x[0, 7, 7, 0] = first, second
    with Runner.from_bundle(image_bundle) as r:
        for given in (x, x[0]):
            with pytest.raises(InputError) as e:
                r.predict(given)
            assert e.value.message == f"input[0]: {message}"


def test_one_float32_example_is_answered_as_given_not_as_checked(image_bundle):
    """The check sorts a copy of the values: the model still sees the example as given."""
    x = golden_inputs(image_bundle)[:2]
    want = sig_compute("image")(x)
    with Runner.from_bundle(image_bundle) as r:
        for i in range(2):
            given = x[i:i + 1].copy()
            np.testing.assert_allclose(r.predict(given), want[i:i + 1], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(r.predict(given[0]), want[i], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(given, x[i:i + 1])


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
    assert [c["name"] for c in checks if c["ok"]] == ["python", "signature", "manifest", "hashes", "onnxruntime", "load", "golden"]
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
    assert selfcheck(image_bundle)[2]["detail"] == e.value.message


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


# --- the signature's serialized form: to_dict, from_dict, build (what the build side calls) ------


def same(a: Signature, b: Signature) -> None:
    """``a`` and ``b`` equal field by field: arrays by dtype and value, the rest by type and value."""
    for f in dataclasses.fields(Signature):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray), f.name
            assert x.dtype == y.dtype, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert type(x) is type(y) and x == y, (f.name, x, y)


def plain(doc) -> None:
    """``doc`` holds JSON's own types only (no numpy scalar, no tuple) and no NaN nor infinity."""
    if isinstance(doc, dict):
        assert all(isinstance(k, str) for k in doc)
        for v in doc.values():
            plain(v)
    elif isinstance(doc, list):
        for v in doc:
            plain(v)
    else:
        assert doc is None or type(doc) in (str, int, float), (type(doc), doc)
        assert type(doc) is not float or math.isfinite(doc), doc
    json.dumps(doc, allow_nan=False)


INF = math.inf


def tabular_regression() -> Signature:
    """Five features, one of them unbounded below and one above, observed as plain floats."""
    return Signature.build(
        model_name="houses", task="regression", output_kind="values", labels=None, input_name="x",
        output_name="price", shape=(5,), output_shape=(1,), features=["rooms", "area", "age", "lat", "lon"],
        output_names=["price"], valid_min=[0, 0.0, -INF, -90, -180], valid_max=[50, INF, 300, 90, 180.0],
        observed_min=[1, 20.5, 0, 47.1, 7.2], observed_max=[9, 310.25, 120, 47.9, 8.6])


def image_classification() -> Signature:
    """8x8x1 pixels in, 10 logits out: the build side's numpy arrays (int64 shape, float32 bounds)."""
    return Signature.build(
        model_name="digits", task="classification", output_kind="logits", labels=[str(i) for i in range(10)],
        input_name="inputs", output_name="outputs", shape=np.array([8, 8, 1]), output_shape=(10,),
        features=[f"x[{i},{j},0]" for i in range(8) for j in range(8)], output_names=[str(i) for i in range(10)],
        valid_min=np.zeros(64, np.float32), valid_max=np.full(64, 16, np.float32),
        observed_min=np.zeros(64, np.float32), observed_max=np.full(64, 15.5, np.float32))


def one_feature() -> Signature:
    """One feature in, one value out, valid above 0 only, no observed range."""
    return Signature.build(
        model_name="volts-to-lux", task="regression", output_kind="values", labels=None, input_name="volts",
        output_name="lux", shape=[1], output_shape=[1], features=("volts",), output_names=("lux",),
        valid_min=[0.0], valid_max=[INF])


@pytest.mark.parametrize("make", [tabular_regression, image_classification, one_feature])
def test_to_dict_is_the_manifest_table_and_from_dict_reads_it_back(make):
    s = make()
    d = s.to_dict()
    manifest.check_signature(d)
    plain(d)
    assert list(d) == ["task", "labels", "output_kind", "input", "output", "valid", "observed"]
    assert d["input"]["shape"] == [-1, *s.shape] and d["output"]["shape"] == [-1, *s.output_shape]
    same(Signature.from_dict(d, s.model_name), s)
    same(Signature.from_dict(json.loads(json.dumps(d)), s.model_name), s)  # as a device reads it
    assert s.declared and s.summary == manifest.signature_summary({"model": {"name": s.model_name}, "signature": d})


def test_to_dict_writes_unbounded_as_null_and_an_unknown_observed_range_as_null():
    d = tabular_regression().to_dict()
    assert d["valid"] == {"min": [0.0, 0.0, None, -90.0, -180.0], "max": [50.0, None, 300.0, 90.0, 180.0]}
    assert d["observed"]["max"] == [9.0, 310.25, 120.0, 47.9, 8.6]  # the numbers given, not float32's
    assert one_feature().to_dict()["observed"] is None and one_feature().observed_min is None
    assert image_classification().to_dict()["labels"] == [str(i) for i in range(10)]


SIG_KINDS = ("tabular", "image", "regression", "scalar")


def _bundles(tmp_path, bundle) -> list[Path]:
    """A bundle of each kind conftest builds, and the pipeline's own (the tutorial's, with the
    signature its bundle stage writes)."""
    return [*(signature_bundle(tmp_path / kind, kind) for kind in SIG_KINDS), bundle]


def test_the_signatures_of_the_bundles_read_and_write_back_unchanged(tmp_path, bundle):
    for b in _bundles(tmp_path, bundle):
        m = json.loads((b / manifest.MANIFEST).read_text())
        d = m["signature"]
        s = Signature.from_dict(d, m["model"]["name"])
        assert s.to_dict() == d, b.name
        assert json.dumps(s.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True), b.name  # 1.0 stays 1.0
        same(Signature.of(m), s)


def build_args(d: dict, name: str) -> dict:
    """``Signature.build``'s arguments for the manifest table ``d``, as the build side holds them."""
    inp, out, obs = d["input"], d["output"], d.get("observed") or {}
    return dict(model_name=name, task=d["task"], output_kind=d["output_kind"], labels=d["labels"],
                input_name=inp["name"], output_name=out["name"], shape=tuple(inp["shape"][1:]),
                output_shape=tuple(out["shape"][1:]), features=inp["features"], output_names=out["names"],
                valid_min=[-INF if v is None else v for v in d["valid"]["min"]],
                valid_max=[INF if v is None else v for v in d["valid"]["max"]],
                observed_min=obs.get("min"), observed_max=obs.get("max"))


def test_build_makes_the_signature_the_bundles_carry(tmp_path, bundle):
    for b in _bundles(tmp_path, bundle):
        m = json.loads((b / manifest.MANIFEST).read_text())
        s = Signature.build(**build_args(m["signature"], m["model"]["name"]))
        assert s.to_dict() == m["signature"], b.name
        assert s.summary == manifest.signature_summary(m), b.name
        same(s, Signature.of(m))


def _with(**changes) -> dict:
    args = build_args(one_feature().to_dict(), "volts-to-lux")
    args.update(changes)
    return args


@pytest.mark.parametrize(
    "changes, message",
    [
        # what manifest.check_signature refuses, in its words
        (dict(task="clustering"), "signature.task: expected 'regression' or 'classification', got 'clustering'"),
        (dict(output_kind="odds"), "signature.output_kind: expected 'values' or 'logits' or 'probabilities'"),
        (dict(input_name=None), "signature.input.name: expected a string, got None"),
        (dict(shape=(0,)), "signature.input.shape: expected a list of integers, batch first (-1), then sizes >= 1"),
        (dict(shape=(1.0,)), "signature.input.shape: expected a list of integers"),
        (dict(shape=13), "signature.input.shape: expected a list of integers, batch first (-1), then sizes >= 1, got 13"),
        (dict(features=["volts", "amps"]), "signature.input.features: expected 1 names (the product of shape [1]), got 2"),
        (dict(output_names="lux"), "signature.output.names: expected a list of strings, got 'lux'"),
        (dict(task="classification", output_names=None), "signature.labels: expected 1 labels for a classification"),
        (dict(valid_max=[1.0, 2.0]), "signature.valid.max: expected a list of 1 values (a number or null per feature)"),
        (dict(valid_min=["0"]), "signature.valid.min: expected a list of 1 values"),
        (dict(observed_min=[0.0]), "signature.observed.max: expected a list of 1 values (a number per feature), got None"),
        # what the manifest cannot hold: JSON has no NaN nor infinity, and null is unbounded
        (dict(valid_min=[math.nan]), "signature.valid.min: expected a finite number or -inf per feature, got nan for 'volts'"),
        (dict(valid_min=[INF]), "signature.valid.min: expected a finite number or -inf per feature, got inf for 'volts'"),
        (dict(valid_max=[-INF]), "signature.valid.max: expected a finite number or inf per feature, got -inf for 'volts'"),
        (dict(observed_min=[-INF], observed_max=[1.0]),
         "signature.observed.min: expected a finite number per feature, got -inf for 'volts'"),
        (dict(labels=["lux"]), "signature.labels: expected null for a regression, got ['lux']"),
        (dict(model_name=""), "model.name: expected a non-empty string, got ''"),
    ],
)
def test_build_refuses_what_a_device_would_refuse_in_one_line(changes, message):
    with pytest.raises(ValueError) as e:
        Signature.build(**_with(**changes))
    assert e.value.args[0].startswith(f"manifest.json | {message}"), e.value.args[0]
    assert "\n" not in e.value.args[0]


def test_build_is_keyword_only():
    with pytest.raises(TypeError):
        Signature.build("volts-to-lux", "regression")  # type: ignore[misc]


# --- a model of one named feature in and one named value out: its names, not the tutorial's ------


def test_named_scalar_is_one_named_feature_in_and_one_named_value_out(tutorial_without_signature, tmp_path):
    assert one_feature().named_scalar and (one_feature().features, one_feature().output_names) == (["volts"], ["lux"])
    tutorial = Signature.build(**_with(features=["celsius"], output_names=["fahrenheit"]))
    assert tutorial.named_scalar
    with Runner.from_bundle(tutorial_without_signature) as r:  # made before signatures: the implied names
        assert r.signature.named_scalar and (r.signature.features, r.signature.output_names) == (["celsius"], ["fahrenheit"])
    for kind in ("tabular", "image", "regression"):  # more than one value in or out
        with Runner.from_bundle(signature_bundle(tmp_path / kind, kind)) as r:
            assert not r.signature.named_scalar
    assert not Signature.build(**_with(output_names=None)).named_scalar  # no name to answer under
    # names that would collide with the keys the requests and answers carry, or with each other
    for changes in (dict(features=["inputs"]), dict(output_names=["model"]), dict(features=["outside_observed"]),
                    dict(features=["lux"])):
        s = Signature.build(**_with(**changes))
        assert s.scalar and not s.named_scalar, changes


def test_a_one_feature_model_predicts_under_its_own_names(scalar_bundle, tmp_path):
    compute = sig_compute("scalar")
    want = ["%.9g" % v for v in compute([[1.0], [2.0]]).reshape(-1).tolist()]
    assert cli_ok(scalar_bundle, "predict", "1", "2").splitlines() == want
    doc = json.loads(cli_ok(scalar_bundle, "predict", "1", "2", "--json"))
    assert list(doc) == ["volts", "lux", "outside_observed"]
    assert doc["volts"] == [1.0, 2.0] and ["%.9g" % v for v in doc["lux"]] == want
    assert doc["outside_observed"] == {"volts": 0}  # observed 0..10
    assert json.loads(cli_ok(scalar_bundle, "predict", "--json", "-0", "11"))["outside_observed"] == {"volts": 1}
    (tmp_path / "v.csv").write_text("volts\n1\n2\n")
    doc = json.loads(cli_ok(scalar_bundle, "predict", "--input", str(tmp_path / "v.csv"), "--json"))
    assert list(doc) == ["volts", "lux", "outside_observed"] and ["%.9g" % v for v in doc["lux"]] == want


@pytest.mark.parametrize(
    "args, message",
    [
        (["-1"], "error: argument 1 = '-1': outside the valid range [0, inf]"),  # no degC: volts are not Celsius
        (["1", "abc"], "error: argument 2 = 'abc': expected a number"),
        (["1_000"], "error: argument 1 = '1_000': expected a number (no digit separators)"),
    ],
)
def test_a_one_feature_model_refuses_without_the_tutorials_unit(scalar_bundle, args, message):
    r = runtime_cli(scalar_bundle, "predict", *args)
    assert r.returncode == 2 and one_error_line(r) == message


def test_a_one_feature_model_streams_without_the_tutorials_unit(scalar_bundle):
    r = runtime_cli(scalar_bundle, "stream", stdin=b"1\nabc\n\n-1\n1_0\n2\n")
    out = r.stdout.decode().splitlines()
    want = ["%.9g" % v for v in sig_compute("scalar")([[1.0], [2.0]]).reshape(-1).tolist()]
    assert out == [want[0], "error: line 2: 'abc': expected a number", "error: line 3: empty line, expected a number",
                   "error: line 4: '-1': outside the valid range [0, inf]",
                   "error: line 5: '1_0': expected a number (no digit separators)", want[1]]
    assert r.returncode == 2 and one_error_line(r) == "error: stream: 4 bad line(s); each got an 'error:' line in its place"


def test_a_one_feature_model_without_an_output_name_answers_as_any_model(tmp_path):
    b = signature_bundle(tmp_path / "scalar", "scalar", output={"name": "outputs", "dtype": "float32", "shape": [-1, 1]})
    want = ["%.9g" % v for v in sig_compute("scalar")([[1.0], [2.0]]).reshape(-1).tolist()]
    assert cli_ok(b, "predict", "1", "2").splitlines() == want
    doc = json.loads(cli_ok(b, "predict", "1", "2", "--json"))
    assert list(doc) == ["model", "outputs", "outside_observed"] and doc["model"] == "volts-to-lux"
    assert [["%.9g" % v for v in row] for row in doc["outputs"]] == [[w] for w in want]


def test_the_tutorial_made_before_signatures_keeps_celsius_and_fahrenheit(tutorial_without_signature):
    doc = json.loads(cli_ok(tutorial_without_signature, "predict", "--json", "100", "37.5"))
    assert list(doc) == ["celsius", "fahrenheit"] and doc["celsius"] == [100.0, 37.5]
    r = runtime_cli(tutorial_without_signature, "predict", "abc")
    assert one_error_line(r) == "error: argument 1 = 'abc': expected a number in degrees Celsius"


# --- the command line: predict (one example, --input), stream, info ---------------------------


def cli_ok(bundle: Path, *args: str, stdin: bytes | None = None) -> str:
    r = runtime_cli(bundle, *args, stdin=stdin)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    return r.stdout.decode()


def answer_lines(kind: str, x) -> list[str]:
    """The text answers predict and stream must print for the examples ``x``: computed here."""
    y = sig_compute(kind)(x)
    labels = {"tabular": "abc", "image": "0123456789"}.get(kind)
    lines = [",".join("%.9g" % v for v in row) for row in y.tolist()]
    return [f"{labels[int(np.argmax(row))]},{line}" for row, line in zip(y, lines)] if labels else lines


def close_lines(got: list[str], want: list[str]) -> None:
    """Equal labels, outputs within float32 rounding of the numpy reference."""
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        g_cells, w_cells = g.split(","), w.split(",")
        assert len(g_cells) == len(w_cells)
        if not w_cells[0][0].isdigit() and not w_cells[0].startswith("-"):
            assert g_cells.pop(0) == w_cells.pop(0)  # the label
        np.testing.assert_allclose(np.float64(g_cells), np.float64(w_cells), rtol=1e-5, atol=1e-5)


def test_predict_one_example_from_the_command_line(tabular_bundle, image_bundle):
    row = tabular(alcohol=16)  # observed alcohol is 11..15: answered, and counted
    out = cli_ok(tabular_bundle, "predict", *map(str, row))
    close_lines(out.splitlines(), answer_lines("tabular", [row]))
    doc = json.loads(cli_ok(tabular_bundle, "predict", "--json", *map(str, row)))
    want = sig_compute("tabular")([row])
    np.testing.assert_allclose(doc["outputs"], want, rtol=1e-5, atol=1e-5)
    assert doc["labels"] == ["abc"[int(want[0].argmax())]] and doc["model"] == "wine"
    assert doc["outside_observed"] == {n: int(n == "alcohol") for n in WINE_FEATURES}
    pixels = np.arange(64) % 17
    out = cli_ok(image_bundle, "predict", *map(str, pixels), "--threads", "1")
    close_lines(out.splitlines(), answer_lines("image", pixels.reshape(1, 8, 8, 1)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["1"] * 12, "error: input: expected 13 features, got 12"),
        (["1"] * 14, "error: input: expected 13 features, got 14"),  # too many values
        (["120"] + ["1"] * 12, "error: input[0]: feature 'alcohol' = 120: outside the valid range [0, 100]"),
        (["nan"] + ["1"] * 12, "error: input[0]: feature 'alcohol' is NaN"),
        (["13", "-inf"] + ["1"] * 11, "error: input[0]: feature 'malic_acid' = -inf: expected a finite number"),
        (["1"] * 12 + ["abc"], "error: argument 13 = 'abc': expected a number"),
        (["1_0"] + ["1"] * 12, "error: argument 1 = '1_0': expected a number (no digit separators)"),
    ],
)
def test_predict_refuses_a_bad_example_in_one_line_exit_2(tabular_bundle, args, message):
    r = runtime_cli(tabular_bundle, "predict", *args)
    assert r.returncode == 2 and r.stdout == b""
    assert one_error_line(r) == message


def test_predict_reads_csv_json_lines_and_npy_from_a_file_or_stdin(image_bundle, tmp_path):
    x = (np.random.default_rng(3).random((5, 8, 8, 1)) * 16).astype(np.float32)
    want = answer_lines("image", x)
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in x.reshape(5, -1)) + "\n"
    header = ",".join(f"p{i}" for i in range(64)) + "\n"
    jsonl = "".join(json.dumps(e) + "\n" for e in x.tolist())  # nested, one example a line
    (tmp_path / "x.csv").write_text(header + csv + "\n")  # a header row and a blank last line: skipped
    (tmp_path / "x.jsonl").write_text(jsonl)
    np.save(tmp_path / "x.npy", x)
    for path in ("x.csv", "x.jsonl", "x.npy"):
        close_lines(cli_ok(image_bundle, "predict", "--input", str(tmp_path / path)).splitlines(), want)
        stdin = (tmp_path / path).read_bytes()
        close_lines(cli_ok(image_bundle, "predict", "--input", "-", stdin=stdin).splitlines(), want)
    doc = json.loads(cli_ok(image_bundle, "predict", "--json", "--input", str(tmp_path / "x.npy")))
    np.testing.assert_allclose(doc["outputs"], sig_compute("image")(x), rtol=1e-5, atol=1e-5)
    assert doc["labels"] == [w.split(",")[0] for w in want]
    assert doc["outside_observed"]["x[0,0,0]"] == int((x[:, 0, 0, 0] > 15).sum())  # observed pixels: 0..15
    assert sum(doc["outside_observed"].values()) == int((x > 15).sum())


@pytest.mark.parametrize(
    "content, message",
    [
        (b"13,1,1,1,1,1,1,1,1,1,1,1,1\n13,1\n", " line 2: expected 13 features, got 2"),
        (b"13,1,1,1,1,1,1,1,1,1,1,1,1\n\n" + b"nan" + b",1" * 12 + b"\n", " line 3: feature 'alcohol' is NaN"),
        (b"120" + b",1" * 12 + b"\n", " line 1: feature 'alcohol' = 120: outside the valid range [0, 100]"),
        (b"13,x" + b",1" * 11 + b"\n", " line 1: feature 'malic_acid' = 'x': expected a number"),
        (b"[13, 1]\n", " line 1: expected 13 features, got 2"),
        (b'["13"' + b", 1" * 12 + b"]\n", " line 1: expected numbers in the JSON array"),
        (b"[13, 1,\n", " line 1: not a JSON array of numbers"),
        (b"13" + b",1" * 13 + b"\n", " line 1: expected 13 features, got 14"),
        (b"\n\n", ": no examples"),
    ],
)
def test_predict_input_refusals_name_the_file_and_line(tabular_bundle, tmp_path, content, message):
    path = tmp_path / "rows.csv"
    path.write_bytes(content)
    r = runtime_cli(tabular_bundle, "predict", "--input", str(path))
    assert r.returncode == 2 and r.stdout == b""
    assert one_error_line(r).startswith(f"error: --input {path}{message}")
    r = runtime_cli(tabular_bundle, "predict", "--input", "-", stdin=content)
    assert r.returncode == 2 and one_error_line(r).startswith(f"error: --input stdin{message}")


def test_predict_input_refuses_bad_npy_and_missing_files(image_bundle, tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((3, 8, 8)))
    x = np.zeros((3, 8, 8, 1))
    x[1, 0, 0, 0] = 17
    np.save(tmp_path / "bad.npy", x)
    (tmp_path / "fake.npy").write_bytes(b"not numpy")
    cases = {
        "flat.npy": f"error: --input {tmp_path / 'flat.npy'}: input shape (3, 8, 8) expected (8, 8, 1)",
        "bad.npy": f"error: --input {tmp_path / 'bad.npy'}: input[1]: feature 'x[0,0,0]' = 17: outside the valid range [0, 16]",
        "fake.npy": f"error: --input {tmp_path / 'fake.npy'}: not a .npy file (no numpy header)",
        "missing.csv": f"error: --input {tmp_path / 'missing.csv'}: cannot read: No such file or directory",
    }
    for name, message in cases.items():
        r = runtime_cli(image_bundle, "predict", "--input", str(tmp_path / name))
        assert r.returncode == 2 and one_error_line(r) == message


def test_predict_wants_values_or_input_not_both(tabular_bundle):
    r = runtime_cli(tabular_bundle, "predict")
    assert r.returncode == 2 and b"or --input FILE" in r.stderr and b"CELSIUS" in r.stderr
    r = runtime_cli(tabular_bundle, "predict", "1", "--input", "-")
    assert r.returncode == 2 and b"not both" in r.stderr


def test_stream_answers_each_line_and_refuses_bad_ones_in_place(tabular_bundle):
    good = [tabular(alcohol=12), tabular(alcohol=14.5, proline=900)]
    lines = [",".join(map(str, good[0])), json.dumps(good[1]), "13,1", "nan" + ",1" * 12, "",
             "13,x" + ",1" * 11, "120" + ",1" * 12, ",".join(map(str, good[0])) + "\r", "13" + ",1" * 13,
             "x" * 5000, ",".join(map(str, good[1]))]
    r = runtime_cli(tabular_bundle, "stream", stdin=("\n".join(lines) + "\n").encode())
    assert r.returncode == 2
    assert one_error_line(r) == "error: stream: 7 bad line(s); each got an 'error:' line in its place"
    out = r.stdout.decode().splitlines()
    assert len(out) == len(lines)
    close_lines([out[i] for i in (0, 1, 7, 10)], answer_lines("tabular", [good[0], good[1], good[0], good[1]]))
    assert out[2] == "error: line 3: expected 13 features, got 2"
    assert out[3] == "error: line 4: feature 'alcohol' is NaN"
    assert out[4] == "error: line 5: empty line, expected one example (a CSV row or a JSON array)"
    assert out[5] == "error: line 6: feature 'malic_acid' = 'x': expected a number"
    assert out[6] == "error: line 7: feature 'alcohol' = 120: outside the valid range [0, 100]"
    assert out[8] == "error: line 9: expected 13 features, got 14"
    assert out[9].startswith("error: line 10: line longer than")


def test_stream_takes_nested_json_and_flat_csv_for_an_image(image_bundle):
    x = (np.random.default_rng(4).random((3, 8, 8, 1)) * 16).astype(np.float32)
    lines = [json.dumps(x[0].tolist()), ",".join(map(repr, x[1].reshape(-1).tolist())), json.dumps(x[2].reshape(-1).tolist()),
             json.dumps(x[0].reshape(8, 8).tolist())]
    r = runtime_cli(image_bundle, "stream", stdin=("\n".join(lines) + "\n").encode())
    out = r.stdout.decode().splitlines()
    close_lines(out[:3], answer_lines("image", x))
    assert out[3] == "error: line 4: input shape (8, 8) expected (8, 8, 1)" and r.returncode == 2


def test_stream_regression_answers_values_only(regression_bundle):
    x = np.float32([[0.5, -0.5, 0.25, 1.0], [0, 0, 0, 0]])
    out = cli_ok(regression_bundle, "stream", stdin=b"0.5,-0.5,0.25,1\n[0,0,0,0]\n").splitlines()
    close_lines(out, answer_lines("regression", x))
    assert "," not in out[0]  # one output, no label: one number a line


def test_info_shows_the_model_name_and_signature(image_bundle):
    doc = json.loads(cli_ok(image_bundle, "info"))
    assert doc["model_name"] == "digits" and doc["loaded"] is True
    sig = doc["signature"]
    assert (sig["task"], sig["labels"], sig["output_kind"]) == ("classification", [str(i) for i in range(10)], "logits")
    assert sig["input"]["shape"] == [-1, 8, 8, 1] and sig["input"]["features"] == 64
    assert sig["output"] == {"name": "outputs", "shape": [-1, 10]}


def test_the_tutorial_cli_keeps_its_answers_and_takes_input_files(tutorial_with_signature, tmp_path):
    lines = cli_ok(tutorial_with_signature, "predict", "100", "37.5").splitlines()
    with Runner.from_bundle(tutorial_with_signature) as r:
        want = ["%.9g" % v for v in r.predict([100, 37.5]).tolist()]
    assert lines == want
    (tmp_path / "c.csv").write_text("celsius\n100\n37.5\n")
    assert cli_ok(tutorial_with_signature, "predict", "--input", str(tmp_path / "c.csv")).splitlines() == want
    doc = json.loads(cli_ok(tutorial_with_signature, "predict", "--json", "100", "101", "-41"))
    assert doc["celsius"] == [100, 101, -41] and len(doc["fahrenheit"]) == 3
    assert doc["outside_observed"] == {"celsius": 2}  # observed: -40 to 100 degC
    r = runtime_cli(tutorial_with_signature, "predict", "--input", "-", stdin=b"100\n-300\n")
    assert r.returncode == 2
    assert one_error_line(r) == ("error: --input stdin line 2: outside the valid range [-273.15, inf] degC "
                                 "(below absolute zero)")
    doc = json.loads(cli_ok(tutorial_with_signature, "info"))
    assert doc["model_name"] == "celsius-to-fahrenheit" and doc["signature"]["input"]["shape"] == [-1, 1]


@pytest.mark.parametrize("shape", [(8, 8, 1), (1, 8, 8, 1)])
@pytest.mark.parametrize("bad, problem", [(np.nan, "is NaN"), (np.inf, "= inf: expected a finite number"),
                                          (-np.inf, "= -inf: expected a finite number"),
                                          (16.5, "= 16.5: outside the valid range [0, 16]"),
                                          (-1e-30, "= -1e-30: outside the valid range [0, 16]")])
def test_one_float32_example_the_hot_path_refuses_each_bad_value(image_bundle, shape, bad, problem):
    """One float32 example (batched or not) is checked on a shorter path: each bad value, at
    the first, a middle and the last place, is still refused, naming that place."""
    with Runner.from_bundle(image_bundle) as r:
        for at in (0, 27, 63):
            x = np.full(64, 8.0, np.float32)
            x[at] = bad
            with pytest.raises(InputError) as e:
                r.predict(x.reshape(shape))
            i, j = divmod(at, 8)
            assert e.value.message == f"input[0]: feature 'x[{i},{j},0]' {problem}"
        assert r.predict(np.full(shape, 16.0, np.float32)).shape == shape[:-3] + (10,)


def test_one_float32_tabular_example_is_held_to_each_features_bounds(tabular_bundle):
    with Runner.from_bundle(tabular_bundle) as r:
        for row_, message in ((tabular(alcohol=100.5), "feature 'alcohol' = 100.5: outside"),
                              (tabular(proline=float("nan")), "feature 'proline' is NaN"),
                              (tabular(malic_acid=float("-inf")), "feature 'malic_acid' = -inf: expected a finite")):
            with pytest.raises(InputError, match=message):
                r.predict(np.float32(row_))
        assert r.predict(np.float32(tabular(alcohol=0, proline=-3e38))).shape == (3,)  # only alcohol is bounded
