"""`serve`'s endpoints without a socket: ``serve_app.App`` called with a request's method, path,
headers and body on hand-made signature bundles (tests/support/bundles.py: wine, digits, a
regression, volts -> lux, the two-input multi model), each loaded once per module through the
service's own self-check. Status, content type, headers and body of every answer, and what
/metrics counts. That the transport writes these answers byte for byte, and goes on after each
refusal, is tests/runtime/test_serve_v2.py's wire test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime import codec, Runner
from runtime.serve_app import Answer, App
from runtime.serve_http import Limits
from runtime.serve_metrics import Metrics
from runtime.serve_state import Snapshot, check_and_load
from tests.support.bundles import (MULTI_LABELS, multi_bundle, multi_compute, multi_examples, sig_compute,
                                   signature_bundle, WINE_FEATURES)

# onnxruntime's float32 MatMul and Softmax against numpy's float64 of the same math: a few
# float32 ulps apart (measured: at most 2.4e-7 on the multi model).
TOL = {"rtol": 1e-5, "atol": 1e-5}


class Client:
    """One App over one model snapshot, called as the transport calls it."""

    def __init__(self, snapshot: Snapshot, token: bytes | None = None, **limits):
        self.snapshot = snapshot
        self.app = App(Limits(**limits), Metrics(), token)

    def __call__(self, method: str, path: str, body=None, headers=None) -> Answer:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return self.app(method, path, headers or {}, data or b"", self.snapshot)

    def json(self, method: str, path: str, body=None, headers=None):
        """(status, the parsed JSON body) of an answer that must be JSON."""
        a = self(method, path, body, headers)
        assert a.ctype == "application/json", a
        return a.status, json.loads(a.body)

    def metrics(self) -> dict[str, float]:
        a = self("GET", "/metrics")
        assert a.status == 200 and a.ctype == "text/plain; version=0.0.4; charset=utf-8"
        out = {}
        for line in a.body.decode().splitlines():
            if not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


def snapshot_of(bundle: Path, healthy: bool = True) -> Snapshot:
    model, checks = check_and_load(bundle, 1)
    assert model is not None, checks
    return Snapshot(model, tuple(checks), healthy)


def model_sha(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    made = {kind: signature_bundle(root / kind, kind) for kind in ("tabular", "image", "regression", "scalar")}
    made["multi"] = multi_bundle(root / "multi")
    return made


@pytest.fixture(scope="module")
def snapshots(bundles) -> dict[str, Snapshot]:
    return {kind: snapshot_of(path) for kind, path in bundles.items()}


@pytest.fixture
def wine(snapshots) -> Client:
    return Client(snapshots["tabular"])


@pytest.fixture
def digits(snapshots) -> Client:
    return Client(snapshots["image"])


@pytest.fixture
def volts(snapshots) -> Client:
    return Client(snapshots["scalar"])


@pytest.fixture
def multi(snapshots) -> Client:
    return Client(snapshots["multi"], max_values=1000)


def row(**at) -> list[float]:
    r = [13.0] + [1.0] * 12
    for name, v in at.items():
        r[WINE_FEATURES.index(name)] = v
    return r


# --- routing, methods, the token ------------------------------------------------------------------


def test_unknown_paths_are_404_and_wrong_methods_405_with_allow(wine):
    a = wine("GET", "/nope")
    assert (a.status, a.endpoint, a.headers, a.close) == (404, "other", None, False)
    assert json.loads(a.body)["error"].startswith("no such endpoint '/nope'; endpoints: /predict, /healthz, /info, "
                                                  "/metrics, /v2, /v2/health/live")
    a = wine("GET", "/predict")
    assert (a.status, a.endpoint, a.headers) == (405, "/predict", {"Allow": "POST"})
    assert a.body == b'{"error": "/predict takes POST, got GET"}'
    a = wine("DELETE", "/healthz")
    assert (a.status, a.headers) == (405, {"Allow": "GET"})
    assert wine("GET", "/healthz?verbose=1").status == 200  # the query is not part of the path
    a = wine("POST", "/healthz", b"{}")  # the body left unread; the connection is not closed for that
    assert (a.status, a.close) == (405, False)


def test_the_token_guards_every_endpoint_but_health(snapshots):
    c = Client(snapshots["tabular"], token=b"s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
                    {"Authorization": "Bearer"}):
        a = c("POST", "/predict", {"inputs": row()}, headers)
        assert (a.status, a.headers, a.close) == (401, {"WWW-Authenticate": "Bearer"}, True), headers
        assert a.body == b'{"error": "missing or wrong bearer token (Authorization: Bearer ...)"}'
    a = c("GET", "/metrics")
    assert (a.status, a.close) == (401, False)  # a GET has no body left unread: its connection goes on
    for path in ("/v2/models/wine", "/info"):
        assert c("GET", path).status == 401
    assert c("POST", "/v2/models/wine/infer", infer()).status == 401
    good = {"Authorization": "Bearer  s3cret-token "}  # the value's spaces are not the token's
    assert c("POST", "/predict", {"inputs": row()}, good).status == 200
    assert c("POST", "/v2/models/wine/infer", infer(), good).status == 200
    assert c("GET", "/metrics", None, good).status == 200
    for path in ("/healthz", "/v2/health/live", "/v2/health/ready"):
        assert c("GET", path).status == 200, path


def test_head_answers_before_the_body_or_names_the_endpoint_that_reads_it(wine):
    """The transport reads a body only when ``head`` asks for it: a refusal from the head leaves it unread."""
    app, snap = wine.app, wine.snapshot
    assert app.head("POST", "/predict", {}, snap) == "/predict"
    assert app.head("POST", "/v2/models/wine/infer", {}, snap) == "/v2/models/{model}/infer"
    assert app.head("POST", "/v2/models/wine/versions/nope/infer", {}, snap).status == 404
    assert isinstance(app.head("GET", "/v2/models/wine", {}, snap), Answer)


# --- health, info, metrics ----------------------------------------------------------------------


def test_health_info_and_metrics(snapshots, bundles):
    snap = snapshots["tabular"]
    c = Client(snap, max_values=123)
    status, h = c.json("GET", "/healthz")
    assert status == 200 and h["healthy"] is True and h["model"] == model_sha(bundles["tabular"])
    assert h["bundle"] == str(bundles["tabular"].resolve()) and h["checks"] == list(snap.checks)
    status, info = c.json("GET", "/info")
    assert status == 200 and info["model"] == model_sha(bundles["tabular"]) and info["model_name"] == "wine"
    assert info["limits"] == {**vars(Limits()), "max_values": 123}
    assert {"python", "numpy", "onnxruntime"} <= set(info["versions"])
    assert c.json("POST", "/predict", {"inputs": [row(), row()]})[0] == 200
    assert c.json("POST", "/predict", {"inputs": [row(alcohol=-1)]})[0] == 400
    got = c.metrics()
    assert got[f'edge_model_info{{sha256="{info["model"]}"}}'] == 1 and got["edge_model_healthy"] == 1
    assert got['edge_inputs_outside_observed_total{feature="alcohol"}'] == 0


def test_info_shows_the_speed_the_deploys_gate_recorded_for_the_release(snapshots, bundles, tmp_path):
    """GET /info's device_speed: the release folder's .edge-speed.json as the deploy's gate wrote it
    (deploy/roles/edge/files/release.py), read at load; null without one; a garbled one says so."""
    assert Client(snapshots["scalar"]).json("GET", "/info")[1]["device_speed"] is None
    import shutil

    release = tmp_path / "release"
    shutil.copytree(bundles["scalar"], release)
    record = {"ok": True, "release": "r1", "threads": 1, "calls": 300, "p50_us": 12.5, "p99_us": 40.25,
              "peak_rss_mb": 57.5, "machine": "x86_64", "onnxruntime": "1.23.2", "emulated": False}
    (release / ".edge-speed.json").write_text(json.dumps(record))
    status, info = Client(snapshot_of(release)).json("GET", "/info")
    assert status == 200 and info["device_speed"] == record
    for garbled, why in [(b'{"ok": tr', "unreadable: .edge-speed.json: "),
                         (b"[1]", "unreadable: .edge-speed.json: expected a JSON object, got list"),
                         (b"\xff\xfe", "unreadable: .edge-speed.json: ")]:
        (release / ".edge-speed.json").write_bytes(garbled)
        status, info = Client(snapshot_of(release)).json("GET", "/info")
        assert status == 200 and info["device_speed"]["ok"] is False, info["device_speed"]
        assert info["device_speed"]["reason"].startswith(why), info["device_speed"]


def test_an_unhealthy_snapshot_is_503_on_health_and_readiness_and_still_answers(snapshots):
    snap = snapshots["tabular"]
    failed = ({"name": "golden", "ok": False, "detail": "golden.json | sha256 mismatch"},)
    c = Client(Snapshot(snap.model, failed, False))
    assert c.json("GET", "/healthz") == (503, {"healthy": False, "model": snap.model.sha256,
                                               "bundle": str(snap.model.bundle), "checks": list(failed)})
    assert c.json("GET", "/v2/health/ready") == (503, {"ready": False})
    assert c.json("GET", "/v2/models/wine/ready") == (503, {"name": "wine", "ready": False})
    assert c.json("GET", "/v2/health/live") == (200, {"live": True})
    assert c("POST", "/v2/models/wine/infer", infer()).status == 200  # the old model still serves
    assert c.metrics()["edge_model_healthy"] == 0


# --- POST /predict: a named scalar model's own request --------------------------------------------


def test_a_one_feature_model_answers_its_own_names_in_the_runners_float32(volts, bundles):
    sha = model_sha(bundles["scalar"])
    with Runner.from_bundle(bundles["scalar"]) as r:
        want, three = r.predict([1, 2]), r.predict([3])
    out = ",".join("%.9g" % v for v in want.tolist())
    a = volts("POST", "/predict", b'{"volts": [1, 2]}')
    assert a == Answer(200, f'{{"lux":[{out}],"model":"{sha}"}}'.encode(), "/predict", "application/json", None, 2)
    status, doc = volts.json("POST", "/predict", {"volts": 3})  # one number, not a list
    assert status == 200 and np.float32(doc["lux"]).tolist() == three.tolist()  # %.9g reads back to the float32
    assert volts.json("POST", "/predict", {"celsius": [1, 2]}) == (
        400, {"error": 'body: expected {"volts": number or [numbers]} or {"inputs": [...]}'})
    assert volts.json("POST", "/predict", {"volts": [1, -2]}) == (
        400, {"error": "input[1] = -2: outside the valid range [0, inf]", "index": 1})
    volts("POST", "/predict", {"volts": [11, 12, 3]})  # observed 0..10: two counted
    volts("POST", "/predict", {"volts": [-1]})  # refused: not counted
    assert volts.metrics()['edge_inputs_outside_observed_total{feature="volts"}'] == 2


# --- POST /predict {"inputs": ...} --------------------------------------------------------------


def test_predict_inputs_answers_a_batch_or_one_example_with_labels(wine, bundles):
    x = [row(), row(alcohol=12, proline=800), row(alcohol=14.5, ash=30)]
    want = sig_compute("tabular")(x)
    a = wine("POST", "/predict", {"inputs": x})
    assert (a.status, a.endpoint, a.values) == (200, "/predict", 3)
    doc = json.loads(a.body)
    assert doc["model"] == model_sha(bundles["tabular"])
    with Runner.from_bundle(bundles["tabular"]) as r:
        np.testing.assert_array_equal(np.float32(doc["outputs"]), r.predict(x))  # %.9g: exact
    np.testing.assert_allclose(doc["outputs"], want, rtol=1e-5, atol=1e-5)
    assert doc["labels"] == ["abc"[i] for i in want.argmax(axis=1)]
    status, doc = wine.json("POST", "/predict", {"inputs": x[1]})  # one example: its output, its label
    assert status == 200 and np.shape(doc["outputs"]) == (3,) and doc["labels"] == "abc"[int(want[1].argmax())]


def test_predict_inputs_on_an_image_and_a_regression(digits, snapshots):
    x = (np.random.default_rng(5).random((4, 8, 8, 1)) * 16).astype(np.float32)
    status, doc = digits.json("POST", "/predict", {"inputs": x.tolist()})
    assert status == 200 and np.shape(doc["outputs"]) == (4, 10)
    np.testing.assert_allclose(doc["outputs"], sig_compute("image")(x), rtol=1e-5, atol=1e-5)
    assert doc["labels"] == [str(i) for i in sig_compute("image")(x).argmax(axis=1)]
    status, doc = Client(snapshots["regression"]).json("POST", "/predict", {"inputs": [[0.5, 0.5, 0.5, 0.5], [0] * 4]})
    assert status == 200 and "labels" not in doc and np.shape(doc["outputs"]) == (2, 1)


TABULAR_BAD = [
    ({"inputs": [1.0] * 12}, "input: expected 13 features, got 12", None),
    ({"inputs": [[1.0] * 14]}, "input: expected 13 features, got 14", None),  # too many values
    (b'{"inputs": [' + json.dumps(row()).encode() + b", [NaN" + b", 1" * 12 + b"]]}", "input[1]: feature 'alcohol' is NaN", 1),
    ({"inputs": [row(alcohol=120)]}, "input[0]: feature 'alcohol' = 120: outside the valid range [0, 100]", 0),
    ({"inputs": [row(), row(), row(), row(alcohol=-1)]}, "input[3]: feature 'alcohol' = -1: outside the valid range", 3),
    ({"inputs": ["13"] * 13}, "input: expected numbers", None),
    ({"inputs": [[1.0] * 13, [1.0] * 12]}, "input: expected numbers", None),
    ({"inputs": []}, "input: empty, expected at least one example", None),
    ({"inputs": [[True] * 13]}, "input: expected numbers", None),
    ({"celsius": [1]}, 'body: expected {"inputs": [one example, or a batch of them]}', None),
    ([row()], 'body: expected {"inputs": [one example, or a batch of them]}', None),
    (b'{"inputs": [1,', "body: not valid JSON", None),
    (b"\xff{}", "body: not valid JSON", None),
    (b"[" * 5000 + b"]" * 5000, "body: not valid JSON", None),
    (b"", "body: not valid JSON", None),
    ({"inputs": [[1.0] * 13] * 8}, "input: 104 values, at most 100 per request (--max-values)", None),
]


@pytest.mark.parametrize("body, error, index", TABULAR_BAD)
def test_bad_inputs_are_400_naming_the_problem(snapshots, body, error, index):
    c = Client(snapshots["tabular"], max_values=100)
    a = c("POST", "/predict", body)
    assert (a.status, a.endpoint, a.values, a.close) == (400, "/predict", 0, False)
    doc = json.loads(a.body)
    assert doc["error"].startswith(error), doc
    assert doc.get("index") == index and "\n" not in doc["error"]
    assert c.metrics()['edge_inputs_outside_observed_total{feature="alcohol"}'] == 0


@pytest.mark.parametrize(
    "x, error",
    [(np.zeros((8, 8)), "input shape (8, 8) expected (8, 8, 1)"),
     (np.zeros((2, 8, 8, 2)), "input shape (2, 8, 8, 2) expected (n, 8, 8, 1)"),
     (np.full((1, 8, 8, 1), 17.0), "input[0]: feature 'x[0,0,0]' = 17: outside the valid range [0, 16]")],
)
def test_an_image_of_the_wrong_shape_or_range_is_400(digits, x, error):
    status, doc = digits.json("POST", "/predict", {"inputs": x.tolist()})
    assert status == 400 and doc["error"] == error


# --- POST /predict on a model of several inputs and outputs ---------------------------------------


def test_predict_answers_one_output_per_name(multi, bundles):
    x = multi_examples(3, seed=5)
    want = multi_compute(**x)
    a = multi("POST", "/predict", {"inputs": {k: v.tolist() for k, v in x.items()}})
    assert (a.status, a.values) == (200, 3)
    doc = json.loads(a.body)
    assert doc["model"] == model_sha(bundles["multi"]) and list(doc["outputs"]) == ["kind", "level"]
    with Runner.from_bundle(bundles["multi"]) as r:
        exact = r.predict(x)
    for name in ("kind", "level"):
        np.testing.assert_array_equal(np.float32(doc["outputs"][name]), exact[name])  # %.9g: exact
        np.testing.assert_allclose(doc["outputs"][name], want[name], **TOL)
    assert doc["labels"] == {"kind": [MULTI_LABELS[i] for i in want["kind"].argmax(axis=1)]}
    one = {"image": x["image"][1].tolist(), "readings": x["readings"][1].tolist()}
    status, doc = multi.json("POST", "/predict", {"inputs": one})
    assert status == 200 and np.shape(doc["outputs"]["kind"]) == (3,) and np.shape(doc["outputs"]["level"]) == (1,)
    assert doc["labels"] == {"kind": MULTI_LABELS[int(want["kind"][1].argmax())]}
    status, doc = multi.json("POST", "/predict", {"inputs": {**one, "readings": [-20, 1000, 50]}})
    assert status == 200  # t = -20: valid (from -50) but outside the observed range (from -10): counted
    got = multi.metrics()
    assert got['edge_inputs_outside_observed_total{feature="readings.t"}'] == 1
    assert got['edge_inputs_outside_observed_total{feature="readings.p"}'] == 0
    status, info = multi.json("GET", "/info")
    assert [t["name"] for t in info["signature"]["inputs"]] == ["image", "readings"]


def test_bad_predict_requests_of_several_inputs_are_400_naming_the_input(multi):
    one = {"image": np.zeros((4, 4, 1)).tolist(), "readings": [0.0, 1000.0, 50.0]}
    bad = [
        ({"inputs": [1, 2, 3]}, "input: expected a dict of arrays by input name ('image', 'readings'), got list"),
        ({"inputs": {"image": one["image"]}}, "input 'readings': missing; the model takes 'image', 'readings'"),
        ({"inputs": {**one, "depth": [1]}}, "input 'depth': not an input of the model; it takes 'image', 'readings'"),
        ({"inputs": {**one, "readings": [1, 1e39, 1]}},
         "input 'readings'[0]: feature 'p' = 1e+39: outside float32 range (|x| <= 3.4e38)"),
        ({"inputs": {"image": np.zeros((2, 4, 4, 1)).tolist(), "readings": np.zeros((3, 3)).tolist()}},
         "input: expected one batch size for every input, got 'image' 2, 'readings' 3 examples"),
        ({"inputs": {k: np.zeros((2, 4, 4, 1)).tolist() for k in ("image",)} | {"readings": np.zeros((40, 3)).tolist(),
                                                                                   "x": np.zeros(1000).tolist()}},
         "input: 1152 values, at most 1000 per request (--max-values)"),
    ]
    for body, error in bad:
        status, doc = multi.json("POST", "/predict", body)
        assert status == 400 and doc["error"] == error, doc


@pytest.mark.parametrize("body", [{"image": [[[0.5]] * 4] * 4, "readings": [1, 2, 3]}, {"celsius": 1}, [1, 2], 5,
                                  {"input": {}}])
def test_a_body_without_inputs_on_several_inputs_is_400_naming_them_and_the_form(multi, body):
    assert multi.json("POST", "/predict", body) == (400, {"error": (
        'body: expected {"inputs": {"image": [...], "readings": [...]}} (one example or a batch per input, by name)')})


def test_the_refusal_of_a_body_without_inputs_on_one_input_of_several_outputs_allows_its_batch_alone():
    with pytest.raises(codec.BadRequest) as e:
        codec.decode(b'{"x": [1]}', 10, None, ["x"])
    assert e.value.doc == {"error": 'body: expected {"inputs": {"x": [...]}} or {"inputs": [...]} (one example or a '
                                    'batch per input, by name)'}


# --- the Open Inference Protocol v2 -------------------------------------------------------------


def test_v2_server_health_and_model_metadata(wine, bundles):
    assert wine.json("GET", "/v2") == (200, {"name": "edge-model", "version": "1", "extensions": ["binary_tensor_data"]})
    assert wine.json("GET", "/v2/health/live") == (200, {"live": True})
    assert wine.json("GET", "/v2/health/ready") == (200, {"ready": True})
    version = model_sha(bundles["tabular"])[:12]
    status, meta = wine.json("GET", "/v2/models/wine")
    assert status == 200
    assert {k: meta[k] for k in ("name", "versions", "platform", "inputs", "outputs")} == {
        "name": "wine", "versions": [version], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "inputs", "datatype": "FP32", "shape": [-1, 13]}],
        "outputs": [{"name": "outputs", "datatype": "FP32", "shape": [-1, 3]}]}
    assert meta["parameters"]["labels"] == ["a", "b", "c"]
    assert wine.json("GET", f"/v2/models/wine/versions/{version}")[1] == meta
    assert wine.json("GET", "/v2/models/wine/ready") == (200, {"name": "wine", "ready": True})


def test_v2_infer_with_flat_or_nested_data_echoes_the_id(digits, bundles):
    x = (np.random.default_rng(6).random((3, 8, 8, 1)) * 16).astype(np.float32)
    want = sig_compute("image")(x)
    version = model_sha(bundles["image"])[:12]
    for data in (x.reshape(-1).tolist(), x.tolist()):
        body = {"id": "req-1", "inputs": [{"name": "inputs", "shape": [3, 8, 8, 1], "datatype": "FP32", "data": data}],
                "outputs": [{"name": "outputs"}]}
        a = digits("POST", "/v2/models/digits/infer", body)
        assert (a.status, a.endpoint, a.values, a.headers) == (200, "/v2/models/{model}/infer", 3, None), a
        doc = json.loads(a.body)
        assert (doc["model_name"], doc["model_version"], doc["id"]) == ("digits", version, "req-1")
        [out] = doc["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("outputs", "FP32", [3, 10])
        assert len(out["data"]) == 30  # flat, row-major
        np.testing.assert_allclose(np.reshape(out["data"], (3, 10)), want, rtol=1e-5, atol=1e-5)
    body = {"inputs": [{"name": "inputs", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": x[0].reshape(-1).tolist()}]}
    status, doc = digits.json("POST", f"/v2/models/digits/versions/{version}/infer", body)
    assert status == 200 and "id" not in doc and doc["outputs"][0]["shape"] == [1, 10]


def infer(shape=(1, 13), data=None, **tensor):
    """An infer request for the wine model: ``data`` (default: one good row) as tensor "inputs"."""
    t = {"name": "inputs", "shape": list(shape) if isinstance(shape, tuple) else shape, "datatype": "FP32",
         "data": row() if data is None else data, **tensor}
    return {"inputs": [t]}


@pytest.mark.parametrize(
    "body, error",
    [
        (infer(name="x"), "inputs[0].name: expected 'inputs', got 'x'"),
        (infer(datatype="INT64"), "inputs[0].datatype: expected 'FP32', got 'INT64'"),
        (infer(shape=(1, 12), data=[1.0] * 12), "inputs[0].shape [1, 12] expected [n, 13]"),
        (infer(shape=(13,), data=row()), "inputs[0].shape [13] expected [n, 13]"),
        (infer(shape=(2, 13), data=row()), "inputs[0].data: expected 26 values for shape [2, 13], got 13"),
        (infer(shape="1x13"), "inputs[0].shape: expected a list of sizes"),
        (infer(data=["13"] * 13), "inputs[0].data: expected numbers"),
        (infer(data=[[1.0] * 13, [1.0]]), "inputs[0].data: expected numbers, flat or nested (not ragged)"),
        (infer(data=row(alcohol=120)), "input[0]: feature 'alcohol' = 120: outside the valid range [0, 100]"),
        (infer(shape=(0, 13), data=[]), "inputs[0]: empty, expected at least one example"),
        (infer(shape=(100000, 13)), "inputs[0]: 1300000 values, at most 100000 per request (--max-values)"),
        ({"inputs": [infer()["inputs"][0]] * 2}, "inputs: expected one input tensor ('inputs'), got 2"),
        ({**infer(), "outputs": [{"name": "probs"}]}, "outputs[0].name: expected 'outputs', got 'probs'"),
        ({"celsius": [1]}, 'body: expected an inference request {"inputs"'),
        (b"[1, 2", "body: not valid JSON"),
    ],
)
def test_v2_bad_infer_requests_are_400_naming_the_problem(wine, body, error):
    a = wine("POST", "/v2/models/wine/infer", body)
    assert (a.status, a.endpoint, a.close) == (400, "/v2/models/{model}/infer", False)
    assert json.loads(a.body)["error"].startswith(error), a


def binary_call(client: Client, path: str, doc: dict, data: bytes = b"", header: str | None = None):
    """(the answer, its JSON part, its binary part) of one infer request in the binary tensor data
    extension's layout: the JSON, then ``data``; Inference-Header-Content-Length ``header`` (default:
    the JSON's length)."""
    head = json.dumps(doc).encode()
    a = client("POST", path, head + data, {"Inference-Header-Content-Length": str(len(head)) if header is None else header})
    n = int((a.headers or {}).get("Inference-Header-Content-Length", len(a.body)))
    return a, json.loads(a.body[:n]), a.body[n:]


def test_v2_binary_tensor_data_in_and_out_is_the_runners_float32_bit_for_bit(digits, bundles):
    """tritonclient's defaults: the input as binary data after the JSON, the output asked for as
    binary (for the request, or per output); and every mix with JSON. The answer is Runner.predict's
    float32, bit for bit, whichever way each side travels."""
    x = (np.random.default_rng(7).random((5, 8, 8, 1)) * 16).astype(np.float32)
    with Runner.from_bundle(bundles["image"]) as r:
        want = r.predict(x)
    tensor = {"name": "inputs", "shape": [5, 8, 8, 1], "datatype": "FP32"}
    as_binary = {**tensor, "parameters": {"binary_data_size": x.nbytes}}
    as_json = {**tensor, "data": x.reshape(-1).tolist()}
    path = "/v2/models/digits/infer"
    cases = [  # (the request's JSON, binary data after it, the output comes back as binary)
        ({"id": "b", "inputs": [as_binary], "parameters": {"binary_data_output": True}}, x.tobytes(), True),
        ({"inputs": [as_binary], "outputs": [{"name": "outputs", "parameters": {"binary_data": True}}]}, x.tobytes(), True),
        ({"inputs": [as_binary]}, x.tobytes(), False),
        ({"inputs": [as_binary], "parameters": {"binary_data_output": True},
          "outputs": [{"name": "outputs", "parameters": {"binary_data": False}}]}, x.tobytes(), False),  # its own say
        ({"inputs": [as_json], "outputs": [{"name": "outputs", "parameters": {"binary_data": True}}]}, b"", True),
    ]
    for doc, data, binary_out in cases:
        a, head, rest = binary_call(digits, path, doc, data)
        assert (a.status, a.values) == (200, 5), head
        [out] = head["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("outputs", "FP32", [5, 10]), out
        if binary_out:
            assert a.ctype == "application/octet-stream" and a.headers == {"Inference-Header-Content-Length": len(a.body) - 200}
            assert out["parameters"] == {"binary_data_size": 200} and "data" not in out and len(rest) == 200
            got = np.frombuffer(rest, "<f4").reshape(5, 10)
        else:
            assert a.ctype == "application/json" and a.headers is None
            assert rest == b"" and "parameters" not in out
            got = np.float32(out["data"]).reshape(5, 10)
        assert got.tobytes() == want.tobytes(), (doc, got, want)
        assert head.get("id") == doc.get("id")


def wine_binary(n: int = 1, **parameters) -> dict:
    return {"inputs": [{"name": "inputs", "shape": [n, 13], "datatype": "FP32",
                        "parameters": {"binary_data_size": 52 * n, **parameters}}]}


ROW = np.float32(row()).tobytes()


@pytest.mark.parametrize(
    "doc, data, header, error",
    [
        (wine_binary(), ROW, "x", "Inference-Header-Content-Length: expected the JSON part's size in bytes"),
        (wine_binary(), ROW, "99999", "Inference-Header-Content-Length: expected the JSON part's size in bytes"),
        (wine_binary(binary_data_size=48), ROW[:48], None,
         "inputs[0].parameters.binary_data_size: 48 bytes, expected 52 (13 FP32 values for shape [1, 13])"),
        (wine_binary(binary_data_size="52"), ROW, None, "inputs[0].parameters.binary_data_size: expected a size in bytes"),
        (wine_binary(), ROW[:40], None, "body: 40 bytes after the JSON part, expected the input's binary_data_size 52"),
        (wine_binary(), ROW + b"\0", None, "body: 53 bytes after the JSON part, expected the input's binary_data_size 52"),
        (wine_binary(2), ROW, None, "body: 52 bytes after the JSON part, expected the input's binary_data_size 104"),
        ({"inputs": [{**wine_binary()["inputs"][0], "data": row()}]}, ROW, None,
         "inputs[0]: both data and binary_data_size"),
        (infer(), ROW, None, "body: 52 bytes after the JSON part, but no input has a binary_data_size"),
        ({**wine_binary(), "parameters": {"binary_data_output": 1}}, ROW, None,
         "request.parameters.binary_data_output: expected true or false, got 1"),
        ({**wine_binary(), "outputs": [{"name": "outputs", "parameters": {"binary_data": "yes"}}]}, ROW, None,
         "outputs[0].parameters.binary_data: expected true or false, got 'yes'"),
        ({**wine_binary(), "outputs": [{"name": "outputs", "parameters": [True]}]}, ROW, None,
         "outputs[0].parameters: expected an object, got list"),
        (wine_binary(), np.float32(row(alcohol=120)).tobytes(), None,
         "input[0]: feature 'alcohol' = 120: outside the valid range [0, 100]"),
        (wine_binary(), np.float32(row(alcohol=np.nan)).tobytes(), None, "input[0]: feature 'alcohol' is NaN"),
    ],
    ids=["header-not-a-number", "header-past-the-body", "size-not-the-shapes", "size-a-string", "short", "long",
         "shape-of-two-bytes-of-one", "data-and-binary", "bytes-for-no-input", "output-flag-not-bool",
         "binary-data-not-bool", "output-parameters-not-an-object", "outside-the-valid-range", "nan"],
)
def test_v2_bad_binary_requests_are_400_naming_the_problem(wine, doc, data, header, error):
    a, head, _ = binary_call(wine, "/v2/models/wine/infer", doc, data, header)
    assert (a.status, a.ctype, a.headers) == (400, "application/json", None) and head["error"].startswith(error), head


def test_v2_binary_data_without_its_header_is_400(wine):
    """The binary part's bytes with no Inference-Header-Content-Length: the whole body is read as
    JSON, which it is not."""
    status, doc = wine.json("POST", "/v2/models/wine/infer", json.dumps(wine_binary()).encode() + ROW)
    assert status == 400 and doc["error"].startswith("body: not valid JSON"), doc
    status, doc = wine.json("POST", "/v2/models/wine/infer", wine_binary())  # the JSON alone: no bytes for it
    assert status == 400 and doc["error"] == ("body: 0 bytes after the JSON part, expected the input's "
                                              "binary_data_size 52 (and the Inference-Header-Content-Length header)")


def test_v2_nan_in_infer_data_is_400(wine):
    body = json.dumps(infer()).replace("13.0", "NaN", 1).encode()
    assert wine.json("POST", "/v2/models/wine/infer", body) == (
        400, {"error": "input[0]: feature 'alcohol' is NaN", "index": 0})


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/v2/models/nope", 404), ("GET", "/v2/models/nope/ready", 404), ("POST", "/v2/models/nope/infer", 404),
     ("GET", "/v2/models/wine/versions/0000/ready", 404), ("GET", "/v2/models/wine/infer", 405),
     ("POST", "/v2/health/ready", 405), ("GET", "/v2/models/wine/explain", 404), ("GET", "/v2/models", 404),
     ("POST", "/v2/models/wine/versions/0000/infer", 404)],
)
def test_v2_unknown_models_and_paths_are_json_errors(wine, method, path, status):
    a = wine(method, path, infer() if method == "POST" else None)
    doc = json.loads(a.body)
    assert a.status == status and isinstance(doc, dict) and doc["error"]
    if "nope" in path:
        assert doc["error"].startswith("unknown model 'nope'; this server serves model 'wine' version ")
    if "nope" in path or "0000" in path:  # an unknown model's POST: its body is left unread
        assert a.close == (method == "POST") and a.endpoint != "other"


def test_metrics_count_inputs_outside_the_observed_range_per_feature(wine):
    # alcohol observed in [11, 15], the other twelve in [0, 1000]; refused inputs are not counted
    wine("POST", "/predict", {"inputs": [row(alcohol=10), row(alcohol=16), row(alcohol=12)]})
    wine("POST", "/predict", {"inputs": row(proline=2000)})
    wine("POST", "/v2/models/wine/infer", infer(data=row(alcohol=20, ash=-1)))
    assert wine("POST", "/predict", {"inputs": [row(alcohol=120)]}).status == 400  # refused: not counted
    got = {k: v for k, v in wine.metrics().items() if k.startswith("edge_inputs_outside_observed_total")}
    assert got['edge_inputs_outside_observed_total{feature="alcohol"}'] == 3
    assert got['edge_inputs_outside_observed_total{feature="ash"}'] == 1
    assert got['edge_inputs_outside_observed_total{feature="proline"}'] == 1
    assert got['edge_inputs_outside_observed_total{feature="hue"}'] == 0
    assert len(got) == 13


# --- v2 on a model of several inputs and outputs ----------------------------------------------


def v2_tensor(name: str, arr: np.ndarray, binary: bool = False) -> dict:
    t = {"name": name, "shape": list(arr.shape), "datatype": "FP32"}
    if binary:
        return {**t, "parameters": {"binary_data_size": arr.nbytes}}
    return {**t, "data": arr.reshape(-1).tolist()}


def test_v2_metadata_and_infer_bind_tensors_by_name_in_json_and_binary(multi, bundles):
    status, meta = multi.json("GET", "/v2/models/multi")
    assert status == 200
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 4, 4, 1]},
                              {"name": "readings", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "kind", "datatype": "FP32", "shape": [-1, 3]},
                               {"name": "level", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["parameters"]["outputs"]["kind"]["labels"] == MULTI_LABELS
    x = multi_examples(4, seed=9)
    with Runner.from_bundle(bundles["multi"]) as r:
        want = r.predict(x)
    path = "/v2/models/multi/infer"
    # JSON, the inputs in the other order, every output
    status, doc = multi.json("POST", path, {"id": "j", "inputs": [v2_tensor("readings", x["readings"]),
                                                                   v2_tensor("image", x["image"])]})
    assert status == 200 and doc["id"] == "j" and [o["name"] for o in doc["outputs"]] == ["kind", "level"]
    for o in doc["outputs"]:
        assert o["shape"] == list(want[o["name"]].shape)
        np.testing.assert_array_equal(np.float32(o["data"]).reshape(o["shape"]), want[o["name"]])
    # one output asked for
    status, doc = multi.json("POST", path, {"inputs": [v2_tensor("image", x["image"]),
                                                       v2_tensor("readings", x["readings"])],
                                            "outputs": [{"name": "level"}]})
    assert status == 200 and [o["name"] for o in doc["outputs"]] == ["level"]
    # binary in (both inputs, in the request's order), one output binary and one JSON
    doc = {"inputs": [v2_tensor("readings", x["readings"], True), v2_tensor("image", x["image"], True)],
           "outputs": [{"name": "level", "parameters": {"binary_data": True}}, {"name": "kind"}]}
    a, head, rest = binary_call(multi, path, doc, x["readings"].tobytes() + x["image"].tobytes())
    assert (a.status, a.ctype, a.values) == (200, "application/octet-stream", 4), head
    level, kind = head["outputs"]
    assert level["parameters"] == {"binary_data_size": 16} and len(rest) == 16
    assert np.frombuffer(rest, "<f4").reshape(4, 1).tobytes() == want["level"].tobytes()
    np.testing.assert_array_equal(np.float32(kind["data"]).reshape(4, 3), want["kind"])
    # binary in for one input, JSON for the other, every output binary
    doc = {"inputs": [v2_tensor("image", x["image"], True), v2_tensor("readings", x["readings"])],
           "parameters": {"binary_data_output": True}}
    a, head, rest = binary_call(multi, path, doc, x["image"].tobytes())
    assert a.status == 200 and [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [48, 16]
    assert rest == want["kind"].tobytes() + want["level"].tobytes()


def test_v2_bad_multi_requests_are_400_naming_the_tensor(multi):
    x = multi_examples(2)
    img, rd = v2_tensor("image", x["image"]), v2_tensor("readings", x["readings"])
    cases = [
        ({"inputs": [img]}, "inputs: no tensor 'readings'; expected one per model input: 'image', 'readings'"),
        ({"inputs": [img, img]}, "inputs[1].name: 'image' is given twice; expected one tensor per input"),
        ({"inputs": [img, {**rd, "name": "depth"}]},
         "inputs[1].name: expected one of the model's inputs ('image', 'readings'), got 'depth'"),
        ({"inputs": [img, {**rd, "shape": [2, 4]}]}, "inputs[1].shape [2, 4] expected [n, 3] for 'readings'"),
        ({"inputs": [img, {**rd, "data": [1.0] * 5}]}, "inputs[1].data: expected 6 values for shape [2, 3], got 5"),
        ({"inputs": [img, v2_tensor("readings", x["readings"][:1])]},
         "input: expected one batch size for every input, got 'image' 2, 'readings' 1 examples"),
        ({"inputs": [img, rd], "outputs": [{"name": "depth"}]},
         "outputs[0].name: expected one of the model's outputs ('kind', 'level'), got 'depth'"),
    ]
    for body, error in cases:
        status, doc = multi.json("POST", "/v2/models/multi/infer", body)
        assert status == 400 and doc["error"] == error, doc
    doc = {"inputs": [v2_tensor("image", x["image"], True), v2_tensor("readings", x["readings"], True)]}
    a, head, _ = binary_call(multi, "/v2/models/multi/infer", doc, x["image"].tobytes())
    assert a.status == 400 and head["error"].startswith("body: 128 bytes after the JSON part, fewer than the "
                                                        "binary_data_size of inputs[1]"), head
