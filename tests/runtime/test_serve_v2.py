"""`serve` for any signature: POST /predict with {"inputs": ...} and the Open Inference Protocol v2
(KServe, Triton) on hand-made signature bundles and on the tutorial's. Real servers on 127.0.0.1
ephemeral ports, a real HTTP client (urllib); every wait is for something observed."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

import numpy as np
import pytest

from runtime import Runner
from tests.support.bundles import sig_compute, WINE_FEATURES
from tests.support.server import Server

pytestmark = pytest.mark.slow  # starts servers


def call(server: Server, method: str, path: str, body=None, headers=None):
    """(status, parsed JSON or text) of one request with urllib."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, ctype, raw = r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers.get("Content-Type", ""), e.read()
    return status, (json.loads(raw) if ctype.startswith("application/json") else raw.decode())


def row(**at) -> list[float]:
    r = [13.0] + [1.0] * 12
    for name, v in at.items():
        r[WINE_FEATURES.index(name)] = v
    return r


def assert_still_answers(s: Server) -> None:
    """After a refusal the server goes on: a good request (zeros, valid for every model here)
    on a new connection gets its answer."""
    status, doc = call(s, "GET", "/v2/health/live")
    assert status == 200 and doc == {"live": True}
    name = call(s, "GET", "/info")[1]["model_name"]
    shape = call(s, "GET", f"/v2/models/{name}")[1]["inputs"][0]["shape"]
    status, doc = call(s, "POST", "/predict", {"inputs": np.zeros([2, *shape[1:]]).tolist()})
    assert status == 200 and np.shape(doc["outputs"])[0] == 2


@pytest.fixture
def wine(serve_bundle, tabular_bundle) -> Server:
    return serve_bundle(tabular_bundle)


@pytest.fixture
def digits(serve_bundle, image_bundle) -> Server:
    return serve_bundle(image_bundle)


def model_sha(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]


# --- POST /predict {"inputs": ...} --------------------------------------------------------------


def test_predict_inputs_answers_a_batch_or_one_example_with_labels(wine, tabular_bundle):
    x = [row(), row(alcohol=12, proline=800), row(alcohol=14.5, ash=30)]
    want = sig_compute("tabular")(x)
    status, doc = call(wine, "POST", "/predict", {"inputs": x})
    assert status == 200 and doc["model"] == model_sha(tabular_bundle)
    np.testing.assert_array_equal(np.float32(doc["outputs"]), Runner.from_bundle(tabular_bundle).predict(x))  # %.9g: exact
    np.testing.assert_allclose(doc["outputs"], want, rtol=1e-5, atol=1e-5)
    assert doc["labels"] == ["abc"[i] for i in want.argmax(axis=1)]
    status, doc = call(wine, "POST", "/predict", {"inputs": x[1]})  # one example: its output, its label
    assert status == 200 and np.shape(doc["outputs"]) == (3,) and doc["labels"] == "abc"[int(want[1].argmax())]


def test_predict_inputs_on_an_image_and_a_regression(digits, image_bundle, serve_bundle, regression_bundle):
    x = (np.random.default_rng(5).random((4, 8, 8, 1)) * 16).astype(np.float32)
    status, doc = call(digits, "POST", "/predict", {"inputs": x.tolist()})
    assert status == 200 and np.shape(doc["outputs"]) == (4, 10)
    np.testing.assert_allclose(doc["outputs"], sig_compute("image")(x), rtol=1e-5, atol=1e-5)
    assert doc["labels"] == [str(i) for i in sig_compute("image")(x).argmax(axis=1)]
    s = serve_bundle(regression_bundle)
    status, doc = call(s, "POST", "/predict", {"inputs": [[0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0]]})
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
    (b'{"inputs": [1,', "body: not valid JSON", None),
    ({"inputs": [[1.0] * 13] * 8}, "input: 104 values, at most 100 per request (--max-values)", None),
]


@pytest.mark.parametrize("body, error, index", TABULAR_BAD)
def test_bad_inputs_are_400_naming_the_problem_and_the_server_goes_on(serve_bundle, tabular_bundle, body, error, index):
    s = serve_bundle(tabular_bundle, "--max-values", "100")
    status, doc = call(s, "POST", "/predict", body)
    assert status == 400 and doc["error"].startswith(error), doc
    assert doc.get("index") == index and "\n" not in doc["error"]
    assert_still_answers(s)


@pytest.mark.parametrize(
    "x, error",
    [(np.zeros((8, 8)), "input shape (8, 8) expected (8, 8, 1)"),
     (np.zeros((2, 8, 8, 2)), "input shape (2, 8, 8, 2) expected (n, 8, 8, 1)"),
     (np.full((1, 8, 8, 1), 17.0), "input[0]: feature 'x[0,0,0]' = 17: outside the valid range [0, 16]")],
)
def test_an_image_of_the_wrong_shape_or_range_is_400(digits, x, error):
    status, doc = call(digits, "POST", "/predict", {"inputs": x.tolist()})
    assert status == 400 and doc["error"] == error
    assert_still_answers(digits)


def test_the_tutorial_takes_inputs_too_and_keeps_celsius(serve_bundle, bundle):
    s = serve_bundle(bundle)
    with Runner.from_bundle(bundle) as r:
        want = r.predict([100, 37.5]).tolist()
    status, doc = call(s, "POST", "/predict", {"inputs": [[100], [37.5]]})
    assert status == 200 and np.float32(doc["outputs"]).reshape(-1).tolist() == want and "labels" not in doc
    status, doc = call(s, "POST", "/predict", {"inputs": [100, 37.5]})
    assert status == 200 and np.float32(doc["outputs"]).reshape(-1).tolist() == want
    status, doc = call(s, "POST", "/predict", {"celsius": [100, 37.5]})
    assert status == 200 and np.float32(doc["fahrenheit"]).tolist() == want
    status, doc = call(s, "POST", "/predict", {"inputs": [[-300]]})
    assert status == 400 and doc["error"].startswith("input[0] = -300: outside the valid range [-273.15, inf] degC")
    status, doc = call(s, "POST", "/predict", {"kelvin": [1]})
    assert status == 400 and doc["error"].startswith('body: expected {"celsius": number or [numbers]}')


# --- the Open Inference Protocol v2 -------------------------------------------------------------


def test_v2_server_health_and_model_metadata(wine, tabular_bundle):
    assert call(wine, "GET", "/v2") == (200, {"name": "edge-model", "version": "1", "extensions": ["binary_tensor_data"]})
    assert call(wine, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(wine, "GET", "/v2/health/ready") == (200, {"ready": True})
    version = model_sha(tabular_bundle)[:12]
    status, meta = call(wine, "GET", "/v2/models/wine")
    assert status == 200
    assert {k: meta[k] for k in ("name", "versions", "platform", "inputs", "outputs")} == {
        "name": "wine", "versions": [version], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "inputs", "datatype": "FP32", "shape": [-1, 13]}],
        "outputs": [{"name": "outputs", "datatype": "FP32", "shape": [-1, 3]}]}
    assert meta["parameters"]["labels"] == ["a", "b", "c"]
    assert call(wine, "GET", f"/v2/models/wine/versions/{version}")[1] == meta
    assert call(wine, "GET", "/v2/models/wine/ready") == (200, {"name": "wine", "ready": True})


def test_v2_infer_with_flat_or_nested_data_echoes_the_id(digits, image_bundle):
    x = (np.random.default_rng(6).random((3, 8, 8, 1)) * 16).astype(np.float32)
    want = sig_compute("image")(x)
    version = model_sha(image_bundle)[:12]
    for data in (x.reshape(-1).tolist(), x.tolist()):
        body = {"id": "req-1", "inputs": [{"name": "inputs", "shape": [3, 8, 8, 1], "datatype": "FP32", "data": data}],
                "outputs": [{"name": "outputs"}]}
        status, doc = call(digits, "POST", "/v2/models/digits/infer", body)
        assert status == 200, doc
        assert (doc["model_name"], doc["model_version"], doc["id"]) == ("digits", version, "req-1")
        [out] = doc["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("outputs", "FP32", [3, 10])
        assert len(out["data"]) == 30  # flat, row-major
        np.testing.assert_allclose(np.reshape(out["data"], (3, 10)), want, rtol=1e-5, atol=1e-5)
    body = {"inputs": [{"name": "inputs", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": x[0].reshape(-1).tolist()}]}
    status, doc = call(digits, "POST", f"/v2/models/digits/versions/{version}/infer", body)
    assert status == 200 and "id" not in doc and doc["outputs"][0]["shape"] == [1, 10]


def test_v2_on_the_tutorial_bundle(serve_bundle, bundle):
    s = serve_bundle(bundle)
    status, meta = call(s, "GET", "/v2/models/celsius-to-fahrenheit")
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 1] and meta["outputs"][0]["shape"] == [-1, 1]
    name = meta["inputs"][0]["name"]
    body = {"inputs": [{"name": name, "shape": [2, 1], "datatype": "FP32", "data": [100, 37.5]}]}
    status, doc = call(s, "POST", "/v2/models/celsius-to-fahrenheit/infer", body)
    with Runner.from_bundle(bundle) as r:
        assert status == 200 and np.float32(doc["outputs"][0]["data"]).tolist() == r.predict([100, 37.5]).tolist()


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
    status, doc = call(wine, "POST", "/v2/models/wine/infer", body)
    assert status == 400 and doc["error"].startswith(error), doc
    assert_still_answers(wine)


def binary_call(server: Server, path: str, doc: dict, data: bytes = b"", header: str | None = None):
    """(status, headers, the JSON part, the binary part) of one infer request in the binary tensor data
    extension's layout: the JSON, then ``data``; Inference-Header-Content-Length ``header`` (default:
    the JSON's length)."""
    head = json.dumps(doc).encode()
    req = urllib.request.Request(server.url + path, data=head + data, method="POST", headers={
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)) if header is None else header})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    n = int(headers.get("Inference-Header-Content-Length", len(raw)))
    return status, headers, json.loads(raw[:n]), raw[n:]


def test_v2_binary_tensor_data_in_and_out_is_the_runners_float32_bit_for_bit(digits, image_bundle):
    """tritonclient's defaults: the input as binary data after the JSON, the output asked for as
    binary (for the request, or per output); and every mix with JSON. The answer is Runner.predict's
    float32, bit for bit, whichever way each side travels."""
    x = (np.random.default_rng(7).random((5, 8, 8, 1)) * 16).astype(np.float32)
    with Runner.from_bundle(image_bundle) as r:
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
        status, headers, head, rest = binary_call(digits, path, doc, data)
        assert status == 200, head
        [out] = head["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("outputs", "FP32", [5, 10]), out
        if binary_out:
            assert headers["Content-Type"] == "application/octet-stream"
            assert out["parameters"] == {"binary_data_size": 200} and "data" not in out and len(rest) == 200
            got = np.frombuffer(rest, "<f4").reshape(5, 10)
        else:
            assert headers["Content-Type"] == "application/json" and "Inference-Header-Content-Length" not in headers
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
    status, _, head, _ = binary_call(wine, "/v2/models/wine/infer", doc, data, header)
    assert status == 400 and head["error"].startswith(error), head
    assert_still_answers(wine)


def test_v2_binary_data_without_its_header_is_400(wine):
    """The binary part's bytes with no Inference-Header-Content-Length: the whole body is read as
    JSON, which it is not."""
    body = json.dumps(wine_binary()).encode() + ROW
    status, doc = call(wine, "POST", "/v2/models/wine/infer", body)
    assert status == 400 and doc["error"].startswith("body: not valid JSON"), doc
    status, doc = call(wine, "POST", "/v2/models/wine/infer", wine_binary())  # the JSON alone: no bytes for it
    assert status == 400 and doc["error"] == ("body: 0 bytes after the JSON part, expected the input's "
                                              "binary_data_size 52 (and the Inference-Header-Content-Length header)")


def test_v2_nan_in_infer_data_is_400(wine):
    body = json.dumps(infer()).replace("13.0", "NaN", 1).encode()
    status, doc = call(wine, "POST", "/v2/models/wine/infer", body)
    assert status == 400 and doc == {"error": "input[0]: feature 'alcohol' is NaN", "index": 0}


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/v2/models/nope", 404), ("GET", "/v2/models/nope/ready", 404), ("POST", "/v2/models/nope/infer", 404),
     ("GET", "/v2/models/wine/versions/0000/ready", 404), ("GET", "/v2/models/wine/infer", 405),
     ("POST", "/v2/health/ready", 405), ("GET", "/v2/models/wine/explain", 404), ("GET", "/v2/models", 404)],
)
def test_v2_unknown_models_and_paths_are_json_errors(wine, method, path, status):
    got, doc = call(wine, method, path, infer() if method == "POST" else None)
    assert got == status and isinstance(doc, dict) and doc["error"]
    if "nope" in path:
        assert doc["error"].startswith("unknown model 'nope'; this server serves model 'wine' version ")
    assert_still_answers(wine)


def test_v2_health_needs_no_token_but_infer_does(serve_bundle, tabular_bundle, tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    s = serve_bundle(tabular_bundle, "--token-file", str(tmp_path / "token"))
    assert call(s, "GET", "/v2/health/ready")[0] == 200 and call(s, "GET", "/v2/health/live")[0] == 200
    assert call(s, "GET", "/v2/models/wine")[0] == 401
    assert call(s, "POST", "/v2/models/wine/infer", infer())[0] == 401
    assert call(s, "POST", "/v2/models/wine/infer", infer(), {"Authorization": "Bearer s3cret"})[0] == 200


def test_v2_ready_is_503_after_a_failed_reload_while_the_old_model_serves(wine, tabular_bundle):
    (tabular_bundle / "golden.json").write_text("{}")  # not what the manifest says
    wine.proc.send_signal(signal.SIGHUP)
    wine.wait_for("reload failed")
    assert call(wine, "GET", "/v2/health/ready") == (503, {"ready": False})
    assert call(wine, "GET", "/v2/models/wine/ready") == (503, {"name": "wine", "ready": False})
    assert call(wine, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(wine, "POST", "/v2/models/wine/infer", infer())[0] == 200


# --- /metrics: inputs outside the observed range, per feature -----------------------------------


def metric(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_count_inputs_outside_the_observed_range_per_feature(wine):
    # alcohol observed in [11, 15], the other twelve in [0, 1000]; refused inputs are not counted
    call(wine, "POST", "/predict", {"inputs": [row(alcohol=10), row(alcohol=16), row(alcohol=12)]})
    call(wine, "POST", "/predict", {"inputs": row(proline=2000)})
    call(wine, "POST", "/v2/models/wine/infer", infer(data=row(alcohol=20, ash=-1)))
    call(wine, "POST", "/predict", {"inputs": [row(alcohol=120)]})  # refused: 400, not counted
    status, text = call(wine, "GET", "/metrics")
    got = metric(text, "edge_inputs_outside_observed_total")
    assert got['edge_inputs_outside_observed_total{feature="alcohol"}'] == 3
    assert got['edge_inputs_outside_observed_total{feature="ash"}'] == 1
    assert got['edge_inputs_outside_observed_total{feature="proline"}'] == 1
    assert got['edge_inputs_outside_observed_total{feature="hue"}'] == 0
    assert len(got) == 13
    requests = metric(text, "edge_model_requests_total")
    assert requests['edge_model_requests_total{endpoint="/v2/models/{model}/infer",status="200"}'] == 1
    assert requests['edge_model_requests_total{endpoint="/predict",status="400"}'] == 1
    assert metric(text, "edge_model_values_predicted_total") == {"edge_model_values_predicted_total": 5}


def test_metrics_count_the_tutorials_celsius_outside_its_observed_range(serve_bundle, bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    s = serve_bundle(bundle)
    call(s, "POST", "/predict", {"celsius": [-100, 0, 1000]})
    call(s, "POST", "/predict", {"inputs": [[2000]]})
    text = call(s, "GET", "/metrics")[1]
    got = metric(text, "edge_inputs_outside_observed_total")
    if m.get("signature", {}).get("observed") is None:
        assert got == {}
    else:
        lo, hi = m["signature"]["observed"]["min"][0], m["signature"]["observed"]["max"][0]
        want = sum(not lo <= v <= hi for v in (-100, 0, 1000, 2000))
        assert got == {'edge_inputs_outside_observed_total{feature="celsius"}': want}
