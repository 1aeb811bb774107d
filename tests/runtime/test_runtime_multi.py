"""Models of several inputs and outputs, bound by name (issue 27): a hand-made ONNX model of two
inputs (image (n, 4, 4, 1), readings (n, 3)) and two outputs (kind: a softmax over 3 classes;
level: a linear function), whose graph lists both in the other order than its signature, in a
bundle made by tests/support/bundles.py (golden outputs from numpy's own math). Real onnxruntime
and the real CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from runtime import BundleError, InputError, Runner, manifest, selfcheck
from runtime.signature import MultiSignature, Signature
from tests.support.bundles import (MULTI_LABELS, multi_bundle, multi_compute, multi_examples, multi_model,
                                   multi_signature, resign)
from tests.support.core import one_error_line, runtime_cli

# onnxruntime's float32 MatMul and Softmax against numpy's float64 of the same math: a few
# float32 ulps apart (measured: at most 2.4e-7 here).
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture
def multi(tmp_path) -> Path:
    return multi_bundle(tmp_path / "multi")


@pytest.fixture
def runner(multi):
    with Runner.from_bundle(multi) as r:
        yield r


def example(i: int = 0, **at) -> dict:
    """One valid example (no batch dimension) by input name; ``at``: readings replaced by name."""
    x = multi_examples(4)
    one = {"image": x["image"][i], "readings": x["readings"][i].astype(np.float64)}  # room for 1e39
    for name, v in at.items():
        one["readings"][["t", "p", "h"].index(name)] = v
    return one


# --- selfcheck and golden data -----------------------------------------------------------------


def test_selfcheck_passes_with_every_output_and_its_labels(multi):
    checks = selfcheck(multi)
    assert all(c["ok"] for c in checks), checks
    assert checks[-1]["detail"].startswith("12 golden examples, 48 outputs of 2 tensors within atol 0.0001")
    assert checks[-1]["detail"].endswith("labels equal (kind)")


def test_a_tampered_golden_output_fails_naming_the_output(multi):
    g = json.loads((multi / "golden.json").read_text())
    g["outputs"]["level"][3][0] += 0.5
    resign(multi, "golden.json", json.dumps(g).encode())
    failed = selfcheck(multi)[-1]
    assert not failed["ok"] and failed["name"] == "golden" and failed["exit_code"] == 1
    assert failed["detail"].startswith("golden.json | output 'level': 1 of 12 golden outputs differ: worst at "
                                       "input[3] output[0]"), failed


def test_golden_data_in_the_single_tensor_form_is_refused(tmp_path):
    b = multi_bundle(tmp_path / "m", golden={"inputs": [[1.0]], "outputs": [[2.0]]})
    failed = selfcheck(b)[-1]
    assert not failed["ok"] and "for a model of several inputs or outputs" in failed["detail"]


# --- Runner.predict: dicts by name ---------------------------------------------------------------


def test_predict_takes_and_gives_dicts_by_name_for_a_batch_and_one_example(runner):
    assert runner.multi and not runner.scalar and runner.name == "multi"
    x = multi_examples(5, seed=3)
    want = multi_compute(x["image"], x["readings"])
    y = runner.predict(x)
    assert list(y) == ["kind", "level"]  # the signature's order, whatever the graph's
    assert y["kind"].dtype == np.float32 and y["kind"].shape == (5, 3) and y["level"].shape == (5, 1)
    for name in y:
        np.testing.assert_allclose(y[name], want[name], **TOL)
    one = runner.predict({"readings": x["readings"][2].tolist(), "image": x["image"][2]})  # any key order, lists too
    assert one["kind"].shape == (3,) and one["level"].shape == (1,)
    np.testing.assert_allclose(one["kind"], want["kind"][2], **TOL)
    np.testing.assert_allclose(one["level"], want["level"][2], **TOL)
    assert runner.predict({k: v[:1] for k, v in x.items()})["kind"].shape == (1, 3)  # a batch of one stays one
    assert runner.predict({k: v.astype(np.float64) for k, v in x.items()})["level"].shape == (5, 1)
    assert runner.labels_of(y["kind"], "kind") == [MULTI_LABELS[i] for i in want["kind"].argmax(axis=1)]


@pytest.mark.parametrize("n", [1, 7])
def test_predict_unchecked_runs_the_batch_by_name(runner, n):
    x = multi_examples(n, seed=n)
    y = runner.predict_unchecked(x)
    np.testing.assert_allclose(y["kind"], multi_compute(**x)["kind"], **TOL)


def two(image_n: int = 2, readings_n: int = 2) -> dict:
    x = multi_examples(max(image_n, readings_n))
    return {"image": x["image"][:image_n], "readings": x["readings"][:readings_n]}


@pytest.mark.parametrize(
    "values, message, index",
    [
        ([1.0, 2.0], r"^input: expected a dict of arrays by input name \('image', 'readings'\), got list$", None),
        (np.zeros((1, 3)), r"^input: expected a dict of arrays by input name .*got ndarray$", None),
        ({"image": np.zeros((1, 4, 4, 1))}, r"^input 'readings': missing; the model takes 'image', 'readings'$", None),
        ({**two(), "x": [1]}, r"^input 'x': not an input of the model; it takes 'image', 'readings'$", None),
        (two(2, 3), r"^input: expected one batch size for every input, got 'image' 2, 'readings' 3 examples$", None),
        ({**example(), "readings": [1.0, 2.0]}, r"^input 'readings': expected 3 features, got 2$", None),
        ({**example(), "image": np.zeros((4, 4))}, r"^input 'image' shape \(4, 4\) expected \(4, 4, 1\)$", None),
        (example(p=1e39), r"^input 'readings'\[0\]: feature 'p' = 1e\+39: outside float32 range", 0),
        (example(t=61), r"^input 'readings'\[0\]: feature 't' = 61: outside the valid range \[-50, 60\]$", 0),
        (example(h=float("nan")), r"^input 'readings'\[0\]: feature 'h' is NaN$", 0),
        ({**example(), "image": np.full((4, 4, 1), 2.0)},
         r"^input 'image'\[0\]: feature 'image\[0,0,0\]' = 2: outside the valid range \[0, 1\]$", 0),
        ({**example(), "readings": ["a", "b", "c"]}, r"^input 'readings': expected numbers", None),
    ],
)
def test_each_refusal_is_one_line_naming_the_tensor(runner, values, message, index):
    with pytest.raises(InputError, match=message) as e:
        runner.predict(values)
    assert "\n" not in e.value.message and e.value.index == index


def test_a_refused_row_of_a_batch_is_named_by_its_index(runner):
    x = multi_examples(4)
    readings = x["readings"].astype(np.float64)
    readings[2, 1] = 1e39
    with pytest.raises(InputError, match=r"^input 'readings'\[2\]: feature 'p' = 1e\+39: outside float32 range"):
        runner.predict({"image": x["image"], "readings": readings})


def test_outside_observed_is_counted_per_input_and_feature(runner):
    x = multi_examples(3)
    x["readings"][:, 0] = [-20, 50, 0]  # t observed -10..40: two outside
    counts = runner.outside_observed(x)
    assert counts["readings"].tolist() == [2, 0, 0] and counts["image"].tolist() == [0] * 16


def test_labels_of_needs_a_classification_output(runner):
    with pytest.raises(InputError, match=r"^labels: output 'level' is a regression"):
        runner.labels_of([[1.0]], "level")
    with pytest.raises(InputError, match=r"^labels: expected the name of an output \('kind', 'level'\), got None$"):
        runner.labels_of([[1.0, 2.0, 3.0]])


# --- check_io: bound by name ---------------------------------------------------------------------


def test_check_io_refuses_a_model_whose_tensor_names_differ_from_the_signature(tmp_path):
    b = multi_bundle(tmp_path / "m", model=multi_model(input_names=("picture", "readings")))
    with pytest.raises(BundleError, match=r"^model\.onnx \| its inputs are \['picture', 'readings'\], "
                                          r"the signature says \['image', 'readings'\]$"):
        Runner.from_bundle(b)
    failed = selfcheck(b)[-1]
    assert failed["name"] == "load" and not failed["ok"]


def test_check_io_refuses_a_shape_the_signature_does_not_say(tmp_path):
    sig = multi_signature()
    sig["inputs"][1]["shape"] = [-1, 4]
    sig["inputs"][1]["features"] = ["t", "p", "h", "q"]
    for rng in ("valid", "observed"):
        for end in ("min", "max"):
            sig["inputs"][1][rng][end] = [*sig["inputs"][1][rng][end], 0.0]
    b = multi_bundle(tmp_path / "m", inputs=sig["inputs"], golden={"inputs": {}, "outputs": {}})
    with pytest.raises(BundleError, match=r"^model\.onnx \| input readings: tensor\(float\) of shape \['N', 3\], "
                                          r"the signature says tensor\(float\) of shape \[-1, 4\]"):
        Runner.from_bundle(b)


# --- the signature table: check_signature, MultiSignature ------------------------------------------


def edited(path: str, value):
    sig = multi_signature()
    *keys, last = path.split(".")
    t = sig
    for k in keys:
        t = t[int(k)] if k.isdigit() else t[k]
    t[int(last) if last.isdigit() else last] = value
    return sig


@pytest.mark.parametrize(
    "sig, message",
    [
        (edited("inputs", []), r"signature\.inputs: expected a non-empty list of tensor tables, got \[\]"),
        (edited("inputs.1.shape", [-1, 0]), r"signature\.inputs\[1\]\.shape: expected a list of integers, batch first"),
        (edited("inputs.1.features", ["t", "p"]), r"signature\.inputs\[1\]\.features: expected 3 names \(the product "
                                                   r"of shape \[3\]\), got 2"),
        (edited("inputs.1.name", "image"), r"signature\.inputs\[1\]\.name: expected a name unique among the inputs, "
                                           r"got 'image'"),
        (edited("inputs.0.valid.max", [1.0] * 15), r"signature\.inputs\[0\]\.valid\.max: expected a list of 16 values"),
        (edited("inputs.1.observed.min", [0.0, None, 0.0]), r"signature\.inputs\[1\]\.observed\.min: expected a list "
                                                            r"of 3 values \(a number per feature\)"),
        (edited("inputs.0.dtype", "int8"), r"signature\.inputs\[0\]\.dtype: expected 'float32', got 'int8'"),
        (edited("outputs.0.names", None), r"signature\.outputs\[0\]\.labels: expected 3 labels for a classification"),
        (edited("outputs.1.task", "ranking"), r"signature\.outputs\[1\]\.task: expected 'regression' or "
                                              r"'classification', got 'ranking'"),
        (edited("outputs.1.output_kind", "odds"), r"signature\.outputs\[1\]\.output_kind: expected 'values' or"),
        (edited("outputs.1.name", "kind"), r"signature\.outputs\[1\]\.name: expected a name unique among the outputs"),
        (edited("outputs", None), r"signature\.outputs: expected a non-empty list of tensor tables, got None"),
    ],
)
def test_check_signature_refuses_a_malformed_multi_signature_in_one_line(sig, message):
    with pytest.raises(BundleError, match="^manifest\\.json \\| " + message):
        manifest.check_signature(sig)


def test_a_malformed_multi_signature_is_refused_at_load(tmp_path):
    b = multi_bundle(tmp_path / "m", outputs=edited("outputs.1.task", "ranking")["outputs"])
    r = runtime_cli(b, "selfcheck")
    assert r.returncode == 1
    assert one_error_line(r).startswith("error: selfcheck manifest: manifest.json | signature.outputs[1].task:")


def build_args() -> dict:
    return {
        "model_name": "multi",
        "inputs": [
            {"name": "image", "shape": (4, 4, 1), "features": [f"image[{i},{j},0]" for i in range(4) for j in range(4)],
             "valid_min": np.zeros(16), "valid_max": np.ones(16), "observed_min": np.zeros(16),
             "observed_max": np.ones(16)},
            {"name": "readings", "shape": [3], "features": ["t", "p", "h"], "valid_min": [-50.0, -np.inf, -np.inf],
             "valid_max": np.array([60.0, np.inf, np.inf]), "observed_min": [-10, 900, 0],
             "observed_max": [40, 1100, 100]},
        ],
        "outputs": [
            {"name": "kind", "shape": (3,), "names": MULTI_LABELS, "task": "classification",
             "output_kind": "probabilities", "labels": None},
            {"name": "level", "shape": (1,), "names": ["level"], "task": "regression", "output_kind": "values",
             "labels": None},
        ],
    }


def test_build_writes_the_manifest_table_and_from_dict_reads_it_back():
    sig = MultiSignature.build(**build_args())
    d = sig.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d  # plain JSON types
    want = multi_signature()
    for t in want["inputs"]:
        t["observed"] = {k: [float(v) for v in vs] for k, vs in t["observed"].items()}
    want["outputs"][0]["labels"] = MULTI_LABELS  # a classification's labels are written out, as Signature does
    assert d == want
    manifest.check_signature(d)
    back = MultiSignature.from_dict(d, "multi")
    assert back.to_dict() == d and back.input_names == ["image", "readings"]
    assert back.output("kind").labels == MULTI_LABELS and back.output("level").labels is None
    m = {"model": {"name": "multi"}, "signature": d}
    assert isinstance(Signature.of(m), MultiSignature) and Signature.of(m).summary["outputs"][0]["labels"] == MULTI_LABELS


@pytest.mark.parametrize(
    "where, key, value, message",
    [
        ("inputs", "shape", (0,), r"signature\.inputs\[1\]\.shape: expected a list of integers"),
        ("inputs", "valid_min", [np.nan, 0, 0], r"signature\.inputs\[1\]\.valid\.min: expected a finite number or "
                                                r"-inf per feature, got nan for 't'"),
        ("inputs", "observed_max", [np.inf, 1, 1], r"signature\.inputs\[1\]\.observed\.max: expected a finite number "
                                                   r"per feature, got inf for 't'"),
        ("outputs", "labels", ["x"], r"signature\.outputs\[1\]\.labels: expected null for a regression"),
        ("outputs", "name", "kind", r"signature\.outputs\[1\]\.name: expected a name unique among the outputs"),
    ],
)
def test_build_raises_one_value_error_line(where, key, value, message):
    args = copy.deepcopy(build_args())
    args[where][1][key] = value
    with pytest.raises(ValueError, match="^manifest\\.json \\| " + message):
        MultiSignature.build(**args)


# --- the CLI: predict --input FILE.npz, info, stream ------------------------------------------------


def test_cli_predict_reads_an_npz_of_one_array_per_input(multi, tmp_path):
    x = multi_examples(3, seed=11)
    want = multi_compute(**x)
    np.savez(tmp_path / "x.npz", readings=x["readings"], image=x["image"])
    r = runtime_cli(multi, "predict", "--input", str(tmp_path / "x.npz"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        kind, level = line.split(" ")
        label, *values = kind.removeprefix("kind=").split(",")
        assert label == MULTI_LABELS[int(want["kind"][i].argmax())]
        np.testing.assert_allclose(np.float32(values), want["kind"][i], **TOL)
        np.testing.assert_allclose(float(level.removeprefix("level=")), want["level"][i, 0], **TOL)
    r = runtime_cli(multi, "predict", "--input", str(tmp_path / "x.npz"), "--json")
    doc = json.loads(r.stdout)
    assert doc["model"] == "multi" and set(doc["outputs"]) == {"kind", "level"}
    np.testing.assert_allclose(doc["outputs"]["level"], want["level"], **TOL)
    assert doc["labels"] == {"kind": [MULTI_LABELS[i] for i in want["kind"].argmax(axis=1)]}
    assert doc["outside_observed"]["readings"] == {"t": 0, "p": 0, "h": 0}


def test_cli_predict_refusals_are_one_line_and_exit_2(multi, tmp_path):
    x = multi_examples(2)
    np.savez(tmp_path / "missing.npz", image=x["image"])
    np.savez(tmp_path / "extra.npz", depth=x["readings"], **x)
    bad = {**x, "readings": x["readings"].astype(np.float64)}
    bad["readings"][1, 1] = 1e39
    np.savez(tmp_path / "bad.npz", **bad)
    (tmp_path / "rows.csv").write_text("1,2,3\n")
    cases = [
        (("--input", str(tmp_path / "missing.npz")),
         f"error: --input {tmp_path / 'missing.npz'}: no array 'readings'; expected one array per input: "
         "'image', 'readings'"),
        (("--input", str(tmp_path / "extra.npz")),
         f"error: --input {tmp_path / 'extra.npz'}: array 'depth' is not an input of the model; expected one array "
         "per input: 'image', 'readings'"),
        (("--input", str(tmp_path / "bad.npz")),
         f"error: --input {tmp_path / 'bad.npz'}: input 'readings'[1]: feature 'p' = 1e+39: outside float32 range "
         "(|x| <= 3.4e38)"),
        (("--input", str(tmp_path / "rows.csv")),
         f"error: --input {tmp_path / 'rows.csv'}: not a .npz file (numpy.savez); expected one array per input: "
         "'image', 'readings'"),
        (("1", "2", "3"), "error: predict: model 'multi' has several inputs or outputs; give its examples as "
                          "--input FILE.npz (one array per input: 'image', 'readings')"),
    ]
    for args, line in cases:
        r = runtime_cli(multi, "predict", *args)
        assert r.returncode == 2 and one_error_line(r) == line and r.stdout == b""


def test_cli_predict_takes_an_npz_for_a_single_input_bundle_too(regression_bundle, tmp_path):
    x = np.float32([[0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0]])
    np.savez(tmp_path / "named.npz", inputs=x)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "other.npz", y=x)
    want = runtime_cli(regression_bundle, "predict", "--input", "-", stdin=b"0.5,0.5,0.5,0.5\n0,0,0,0\n").stdout
    for name in ("named.npz", "x.npz"):
        r = runtime_cli(regression_bundle, "predict", "--input", str(tmp_path / name))
        assert r.returncode == 0 and r.stdout == want
    r = runtime_cli(regression_bundle, "predict", "--input", str(tmp_path / "other.npz"))
    assert r.returncode == 2 and one_error_line(r) == (
        f"error: --input {tmp_path / 'other.npz'}: array 'y' is not an input of the model; expected one array "
        "per input: 'inputs' (or 'x')")


def test_cli_info_lists_every_tensor(multi):
    r = runtime_cli(multi, "info")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sig = doc["signature"]
    assert [(t["name"], t["shape"], t["features"]) for t in sig["inputs"]] == [
        ("image", [-1, 4, 4, 1], 16), ("readings", [-1, 3], 3)]
    assert [(t["name"], t["task"], t["labels"]) for t in sig["outputs"]] == [
        ("kind", "classification", MULTI_LABELS), ("level", "regression", None)]
    assert sorted(t["name"] for t in doc["model_inputs"]) == ["image", "readings"]


def test_cli_stream_takes_a_json_object_a_line_by_input_name_and_answers_as_predict_does(multi, tmp_path):
    """One example a line, its inputs by name in any order; each answer the line `predict --input
    FILE.npz` gives for that example; a bad line gets its error line in place and the stream goes on."""
    x = multi_examples(3)
    rows = [json.dumps({"readings": x["readings"][i].tolist(), "image": x["image"][i].tolist()}) for i in range(3)]
    missing = json.dumps({"image": x["image"][0].tolist()})
    batch = json.dumps({k: v[:2].tolist() for k, v in x.items()})
    deep = '{"image": ' + "[" * 1000 + "}"  # nested past the JSON decoder's recursion limit
    stdin = "\n".join([rows[0], "not json", rows[1], missing, "", "[1, 2]", batch, rows[2], deep, "[" * 1000]) + "\n"
    r = runtime_cli(multi, "stream", stdin=stdin.encode())
    assert r.returncode == 2, r.stderr
    assert one_error_line(r) == "error: stream: 7 bad line(s); each got an 'error:' line in its place"
    out = r.stdout.decode().splitlines()
    np.savez(tmp_path / "x.npz", **x)
    want = runtime_cli(multi, "predict", "--input", str(tmp_path / "x.npz")).stdout.decode().splitlines()
    assert len(want) == 3 and [out[0], out[2], out[7]] == want, (out, want)
    level = multi_compute(x["image"], x["readings"])["level"]
    assert float(out[0].split("level=")[1]) == pytest.approx(float(level[0, 0]), rel=1e-5)
    form = '{"image": [...], "readings": [...]}'
    assert out[1] == f"error: line 2: 'not json': not JSON, expected one example as {form}"
    assert out[3] == "error: line 4: input 'readings': missing; the model takes 'image', 'readings'"
    assert out[4] == f"error: line 5: empty line, expected one example as {form}"
    assert out[5] == f"error: line 6: expected a JSON object, one example per input: {form}"
    assert out[6] == "error: line 7: a batch of 2 examples, expected one example a line"
    assert out[8].startswith("error: line 9: ") and out[9].startswith("error: line 10: ") and len(out) == 10, out[8:]


# --- serve: POST /predict and the Open Inference Protocol v2 --------------------------------------
# Its endpoints on this model are tests/runtime/test_serve_app.py's (no socket); the wire, one real
# server answering as the app does, tests/runtime/test_serve_v2.py's.


def test_the_watchdogs_proof_runs_zeros_of_one_example_per_input(runner):
    import time
    import types

    from runtime import serve

    model = types.SimpleNamespace(runner=runner, signature=runner.signature)
    models = types.SimpleNamespace(snapshot=types.SimpleNamespace(model=model))
    loop = types.SimpleNamespace(is_alive=lambda: True)
    w = serve.Watchdog(20.0, models, types.SimpleNamespace(turned=time.monotonic()), loop)
    assert w.proof() is None  # the real runner answered {"image": zeros, "readings": zeros}
