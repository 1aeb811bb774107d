"""`serve` for any signature on the wire: a real server answers every request with the bytes
``serve_app.App`` gives for it (status line, headers, body), goes on after each refusal, and
counts in /metrics what it wrote, on hand-made signature bundles (tests/support/bundles.py);
POST /predict with {"inputs": ...} and the Open Inference Protocol v2 (KServe, Triton) on the
tutorial's bundle; readiness after a failed reload. Real servers on 127.0.0.1 ephemeral ports,
real HTTP clients (urllib, http.client); every wait is for something observed. The endpoints'
own answers, request by request, are tests/runtime/test_serve_app.py's (no socket)."""

from __future__ import annotations

import http
import http.client
import json
import signal
import urllib.error
import urllib.request
from collections import Counter

import numpy as np
import pytest

from runtime import Runner
from runtime.serve_app import App
from runtime.serve_http import Limits
from runtime.serve_metrics import Metrics
from runtime.serve_state import Snapshot, check_and_load
from tests.support.bundles import multi_bundle, multi_examples, signature_bundle, WINE_FEATURES
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


@pytest.fixture
def wine(serve_bundle, tabular_bundle) -> Server:
    return serve_bundle(tabular_bundle)


# --- the tutorial's bundle ------------------------------------------------------------------


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


def test_v2_on_the_tutorial_bundle(serve_bundle, bundle):
    s = serve_bundle(bundle)
    status, meta = call(s, "GET", "/v2/models/celsius-to-fahrenheit")
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 1] and meta["outputs"][0]["shape"] == [-1, 1]
    name = meta["inputs"][0]["name"]
    body = {"inputs": [{"name": name, "shape": [2, 1], "datatype": "FP32", "data": [100, 37.5]}]}
    status, doc = call(s, "POST", "/v2/models/celsius-to-fahrenheit/infer", body)
    with Runner.from_bundle(bundle) as r:
        assert status == 200 and np.float32(doc["outputs"][0]["data"]).tolist() == r.predict([100, 37.5]).tolist()


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


# --- a reload ----------------------------------------------------------------------------------


def infer(shape=(1, 13), data=None, **tensor):
    """An infer request for the wine model: ``data`` (default: one good row) as tensor "inputs"."""
    t = {"name": "inputs", "shape": list(shape) if isinstance(shape, tuple) else shape, "datatype": "FP32",
         "data": row() if data is None else data, **tensor}
    return {"inputs": [t]}


def test_v2_ready_is_503_after_a_failed_reload_while_the_old_model_serves(wine, tabular_bundle):
    (tabular_bundle / "golden.json").write_text("{}")  # not what the manifest says
    wine.proc.send_signal(signal.SIGHUP)
    wine.wait_for("reload failed")
    assert call(wine, "GET", "/v2/health/ready") == (503, {"ready": False})
    assert call(wine, "GET", "/v2/models/wine/ready") == (503, {"name": "wine", "ready": False})
    assert call(wine, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(wine, "POST", "/v2/models/wine/infer", infer())[0] == 200


def metric(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out




# --- the wire: the app's answers, byte for byte --------------------------------------------------


def v2_tensor(name: str, arr: np.ndarray, binary: bool = False) -> dict:
    t = {"name": name, "shape": list(arr.shape), "datatype": "FP32"}
    if binary:
        return {**t, "parameters": {"binary_data_size": arr.nbytes}}
    return {**t, "data": arr.reshape(-1).tolist()}


def binary(doc: dict, data: bytes) -> tuple[bytes, dict]:
    """An infer body in the binary tensor data extension's layout, and its header."""
    head = json.dumps(doc).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def wine_requests(auth: dict) -> list[tuple[str, str, object, dict]]:
    """(method, path, body, headers) of every kind of answer the wine bundle gives: each refusal,
    then a good request (on the same connection unless the refusal closed it)."""
    x = np.float32([row(), row(alcohol=10, proline=2000)])
    good = ("POST", "/predict", {"inputs": x.tolist()}, auth)
    bad_predict = [{"inputs": [1.0] * 12}, {"inputs": [row(alcohol=120)]}, {"celsius": [1]}, b'{"inputs": [1,',
                   b"\xff{}", b"[" * 5000 + b"]" * 5000, {"inputs": [[1.0] * 13] * 8}, {"inputs": []}]
    one = v2_tensor("inputs", x[:1])
    body, header = binary({"inputs": [v2_tensor("inputs", x, True)], "parameters": {"binary_data_output": True}},
                          x.tobytes())
    short, short_header = binary({"inputs": [v2_tensor("inputs", x, True)]}, x.tobytes()[:60])
    infer = "/v2/models/wine/infer"
    requests = [("POST", "/predict", b, auth) for b in bad_predict] + [
        ("POST", "/predict", {"inputs": row(ash=-1)}, auth),  # one example, outside the observed range
        ("POST", infer, {"id": 7, "inputs": [one]}, auth),
        ("POST", infer, body, {**auth, **header}),  # binary in and out
        ("POST", infer, short, {**auth, **short_header}),
        ("POST", infer, {"inputs": [{**one, "shape": [1, 12]}]}, auth),
        ("POST", infer, {"inputs": [{**one, "data": [float("nan")] * 13}]}, auth),
        ("POST", "/v2/models/nope/infer", {"inputs": [one]}, auth),  # 404, the body unread: closed
        ("POST", "/predict", {"inputs": row()}, {}),  # 401, the body unread: closed
        ("POST", "/predict", {"inputs": row()}, {"Authorization": "Bearer wrong"}),
        ("GET", "/metrics", None, {}),  # 401, kept alive
        ("GET", "/nope", None, auth), ("GET", "/predict", None, auth), ("DELETE", "/healthz", None, auth),
        ("GET", "/v2", None, {}), ("GET", "/v2/health/live", None, {}), ("GET", "/v2/health/ready", None, {}),
        ("GET", "/v2/models/wine", None, auth), ("GET", "/v2/models/wine/ready", None, auth),
        ("GET", "/v2/models/wine/versions/0000", None, auth), ("GET", "/healthz", None, {}),
        ("GET", "/info", None, auth),
    ]
    return [r for request in requests for r in (request, good)]


def multi_requests() -> list[tuple[str, str, object, dict]]:
    x = multi_examples(3)
    good = ("POST", "/predict", {"inputs": {k: v.tolist() for k, v in x.items()}}, {})
    one = {k: v[0].tolist() for k, v in x.items()}
    tensors = [v2_tensor("readings", x["readings"], True), v2_tensor("image", x["image"])]
    body, header = binary({"inputs": tensors, "outputs": [{"name": "level", "parameters": {"binary_data": True}},
                                                          {"name": "kind"}]}, x["readings"].tobytes())
    requests = [
        ("POST", "/predict", {"inputs": one}, {}),
        ("POST", "/predict", {"inputs": {**one, "readings": [-20, 1000, 50]}}, {}),
        ("POST", "/predict", {"inputs": [1, 2, 3]}, {}),
        ("POST", "/predict", {"inputs": {"image": one["image"]}}, {}),
        ("POST", "/predict", {"image": one["image"], "readings": one["readings"]}, {}),
        ("POST", "/v2/models/multi/infer", {"inputs": [v2_tensor(k, v) for k, v in x.items()]}, {}),
        ("POST", "/v2/models/multi/infer", body, header),
        ("POST", "/v2/models/multi/infer", {"inputs": [v2_tensor("image", x["image"])]}, {}),
        ("GET", "/v2/models/multi", None, {}), ("GET", "/v2/models/multi/ready", None, {}),
    ]
    return [r for request in requests for r in (request, good)]


@pytest.mark.parametrize("kind", ["tabular", "multi"])
def test_every_answer_on_the_wire_is_the_apps_byte_for_byte(serve_bundle, tmp_path, kind):
    """The transport adds nothing of its own to an answer of the app's and changes none (status
    line, headers, body), keeps the connection after every answer but those that leave a body
    unread, and /metrics counts each answer under the app's endpoint label with its values."""
    if kind == "tabular":
        bundle = signature_bundle(tmp_path / "wine", "tabular")
        (tmp_path / "token").write_text("s3cret\n")
        s = serve_bundle(bundle, "--max-values", "100", "--token-file", str(tmp_path / "token"))
        limits, token, auth = Limits(max_values=100), b"s3cret", {"Authorization": "Bearer s3cret"}
        requests = wine_requests(auth)
    else:
        bundle = multi_bundle(tmp_path / "multi")
        s = serve_bundle(bundle, "--max-values", "1000")
        limits, token, auth = Limits(max_values=1000), None, {}
        requests = multi_requests()
    model, checks = check_and_load(bundle, 1)
    snapshot = Snapshot(model, tuple(checks), True)
    app = App(limits, Metrics(), token)
    conn, counted, values, closes = None, Counter(), 0, 0
    for method, path, body, headers in requests:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        a = app(method, path, headers, data or b"", snapshot)
        conn = conn or http.client.HTTPConnection(s.host, s.port, timeout=60)
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        want = [("Content-Type", a.ctype), ("Content-Length", str(len(a.body))),
                *((k, str(v)) for k, v in (a.headers or {}).items()), *([("Connection", "close")] if a.close else [])]
        assert (r.status, r.reason, r.getheaders(), r.read()) == (
            a.status, http.HTTPStatus(a.status).phrase, want, a.body), (method, path, data and data[:100])
        counted[(a.endpoint, a.status)] += 1
        values += a.values
        if a.close:
            closes += 1
            conn.close()
            conn = None
    assert closes == (3 if kind == "tabular" else 0)  # the 404 and the two 401s of a POST
    conn = conn or http.client.HTTPConnection(s.host, s.port, timeout=60)
    conn.request("GET", "/metrics", headers=auth)
    text = conn.getresponse().read().decode()
    assert metric(text, "edge_model_requests_total") == {
        f'edge_model_requests_total{{endpoint="{e}",status="{c}"}}': n for (e, c), n in counted.items()}
    assert metric(text, "edge_model_values_predicted_total") == {"edge_model_values_predicted_total": values}
    assert values > 0 and any(c == 400 for _, c in counted)
    outside = metric(text, "edge_inputs_outside_observed_total")
    assert outside == metric(app.metrics.render(snapshot).decode(), "edge_inputs_outside_observed_total")
    assert sum(outside.values()) > 0
