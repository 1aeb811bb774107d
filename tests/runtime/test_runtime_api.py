"""`from runtime import Runner`: what it accepts, what it refuses, what it returns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime import BundleError, InputError, Runner, selfcheck
from runtime.runner import check_onnxruntime
from tests.support.bundles import resign


@pytest.fixture
def runner(bundle):
    with Runner.from_bundle(bundle) as r:
        yield r


def golden(bundle):
    return json.loads((bundle / "golden.json").read_text())


def test_predict_matches_the_golden_keras_outputs(runner, bundle):
    g = golden(bundle)  # rows: (64, 1) in, (64, 1) out
    got = runner.predict(np.array(g["inputs"], np.float32))
    assert got.shape == (64,)  # the one-value model's answer: one value per row
    np.testing.assert_allclose(got, np.array(g["outputs"], np.float32).reshape(-1), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize(
    "values, n",
    [(100.0, 1), (7, 1), ([1.0, 2.0, 3.0], 3), (np.arange(4.0), 4), (np.zeros((5, 1), np.float32), 5),
     (np.array([1, 2], np.int64), 2), (np.float64(3.5), 1), (np.array([[2.0]]), 1)],
)
def test_predict_accepts_numbers_lists_and_arrays_and_returns_shape_n(runner, values, n):
    y = runner.predict(values)
    assert y.shape == (n,) and y.dtype == np.float32
    np.testing.assert_allclose(y, 1.8 * np.asarray(values, np.float64).reshape(-1) + 32, atol=0.3)


@pytest.mark.parametrize(
    "values, message",
    [
        ("abc", r"input: expected numbers, got 'abc' \(dtype <U3\)"),
        ([1.0, "x"], r"input: expected numbers"),
        ([], r"input: empty, expected at least one value"),
        (np.zeros((2, 2)), r"input: expected shape \(n,\) or \(n, 1\), got \(2, 2\)"),
        (np.zeros((1, 1, 1)), r"input: expected shape"),
        (float("nan"), r"input\[0\] = nan: expected a number, got NaN"),
        ([0.0, float("inf")], r"input\[1\] = inf: expected a finite number"),
        (np.array([1.0, -np.inf]), r"input\[1\] = -inf: expected a finite number"),
        (-273.16, r"input\[0\] = -273\.16: outside the valid range \[-273\.15, inf\] degC \(below absolute zero\)"),
        (np.array([5.0, -274.0]), r"input\[1\] = -274\.0: outside the valid range"),
        (1e39, r"input\[0\] = 1e\+39: outside float32 range"),
        (10**400, r"input\[0\] = 1000.*: outside float32 range"),
        (True, r"expected numbers, got True \(dtype bool\)"),
        ([[1, 2], [3]], r"input: expected numbers"),
    ],
)
def test_predict_refuses_bad_input_naming_it(runner, values, message):
    with pytest.raises(InputError, match=message):
        runner.predict(values)


def test_float32_absolute_zero_is_accepted_and_just_below_is_not(runner):
    assert runner.predict(np.float32(-273.15)).shape == (1,)
    assert runner.predict(np.array([-273.15], np.float32)).shape == (1,)
    assert runner.predict(-273.15).shape == (1,)
    with pytest.raises(InputError, match="below absolute zero"):
        runner.predict(np.float64(-273.1500001))


def test_context_manager_releases_the_session(bundle):
    with Runner.from_bundle(bundle) as r:
        assert r.predict(0.0).shape == (1,)
    assert r.session is None


class Counting:
    """A session wrapper that counts the model calls made through it (as serve's watchdog test wraps one)."""

    def __init__(self, session):
        self.inner, self.calls = session, 0

    def run(self, *args):
        self.calls += 1
        return self.inner.run(*args)


@pytest.mark.parametrize("kind", ["tutorial", "image"])
def test_the_runner_calls_onnxruntime_beneath_its_wrapper_and_a_session_set_later_through_its_own(
        bundle, request, kind):
    if kind == "image":
        pytest.importorskip("onnx", reason="builds its bundle with the onnx package, which a device's venv lacks "
                                           "(make runtime-check)")
    b = bundle if kind == "tutorial" else request.getfixturevalue("image_bundle")
    x = np.asarray(golden(b)["inputs"], np.float32)[:1]
    with Runner.from_bundle(b) as r:
        session = r.session
        assert r._session_run == session._sess.run  # onnxruntime's checks before each call are the runner's own
        want = session.run(None, {r.input_name: x})[0]
        np.testing.assert_array_equal(r.predict_unchecked(x), want.reshape(r.predict_unchecked(x).shape))
        np.testing.assert_array_equal(r.predict(x).reshape(-1), want.reshape(-1))
        r.session = counting = Counting(session)
        r.predict(x), r.predict_unchecked(x), r.answer(x)
        assert counting.calls == 3
    assert r.session is None and r._session_run is None


def test_an_old_onnxruntime_is_named_with_the_version_needed():
    model = {"file": "model.onnx", "opset": 17, "ir_version": 8, "min_onnxruntime": "1.12"}
    check_onnxruntime("1.12.0", model)
    with pytest.raises(BundleError, match=r"model\.onnx \| needs onnxruntime >= 1\.12 \(opset 17, IR version 8\); installed: 1\.11\.1"):
        check_onnxruntime("1.11.1", model)


def test_selfcheck_catches_golden_outputs_the_model_does_not_reproduce(bundle):
    g = golden(bundle)
    g["outputs"][3][0] += 0.01
    resign(bundle, "golden.json", json.dumps(g).encode())
    checks = selfcheck(bundle)
    assert [c["name"] for c in checks] == ["python", "signature", "manifest", "hashes", "onnxruntime", "load", "golden"]
    assert [c["ok"] for c in checks] == [True, True, True, True, True, True, False]
    assert "1 of 64 golden outputs differ" in checks[-1]["detail"]


def test_a_resigned_corrupt_model_gets_a_clear_load_error(bundle):
    resign(bundle, "model.onnx", (bundle / "model.onnx").read_bytes()[:-40])
    with pytest.raises(BundleError, match=r"model\.onnx \| onnxruntime .* cannot load it"):
        Runner.from_bundle(bundle)


def test_a_resigned_model_whose_io_differs_from_its_signature_is_refused_at_load(bundle):
    """onnxruntime loads a model whose input shape was altered (or whose output was renamed) and
    fails only when asked to predict: the runner compares its input and output with the
    signature at load (one line, exit 1)."""
    onnx = pytest.importorskip("onnx", reason="edits the model with the onnx package, which a device's venv lacks "
                                               "(make runtime-check)")

    original = (bundle / "model.onnx").read_bytes()
    m = onnx.load_from_string(original)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    del dims[:]
    dims.add().dim_value = 1  # rank 1: (1,) instead of (batch, 1)
    resign(bundle, "model.onnx", m.SerializeToString())
    with pytest.raises(BundleError, match=r"^model\.onnx \| input celsius: tensor\(float\) of shape \[1\], the "
                                          r"signature says tensor\(float\) of shape \[-1, 1\] \(-1: the batch\)$"):
        Runner.from_bundle(bundle)

    m = onnx.load_from_string(original)
    (out,) = m.graph.output
    for node in m.graph.node:
        node.output[:] = ["y" if o == out.name else o for o in node.output]
    out.name = "y"
    resign(bundle, "model.onnx", m.SerializeToString())
    with pytest.raises(BundleError, match=r"^model\.onnx \| its outputs are \['y'\], the signature says "
                                          r"\['fahrenheit'\]$"):
        Runner.from_bundle(bundle)


def test_a_model_newer_than_this_onnxruntime_gets_a_one_line_load_error(bundle):
    model = bytearray((bundle / "model.onnx").read_bytes())
    assert model[:2] == b"\x08\x08"  # field 1, ir_version = 8, comes first in an ONNX file
    model[1] = 99
    resign(bundle, "model.onnx", bytes(model))
    with pytest.raises(BundleError, match=r"model\.onnx \| onnxruntime .* cannot load it: .*IR version: 99") as e:
        Runner.from_bundle(bundle)
    assert "\n" not in e.value.message  # onnxruntime's own message ends in one


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["model"].pop("opset"), r"model\.opset: expected an integer, got None"),
        (lambda m: m["golden"].update(atol="1e-5"), r"golden\.atol: expected an integer or a number, got '1e-5'"),
        (lambda m: m.update(files=[]), r"files: expected a table"),
        (lambda m: m.update(format="other/2"), r"expected format 'edge-bundle/1', got 'other/2'"),
    ],
)
def test_a_resigned_manifest_of_the_wrong_shape_is_refused_naming_the_key(bundle, edit, message):
    from runtime.manifest import sha256_bytes

    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    raw = json.dumps(m).encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.json.sha256").write_text(f"{sha256_bytes(raw)}  manifest.json\n")
    with pytest.raises(BundleError, match=message):
        Runner.from_bundle(bundle)
    assert [(c["name"], c["ok"]) for c in selfcheck(bundle)][-2:] == [("signature", True), ("manifest", False)]
