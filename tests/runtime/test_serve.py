"""`python -m runtime serve`: every endpoint and error status, the token, the Unix socket, the
self-check gate, SIGTERM, SIGHUP to a good and to a bad bundle, the connection limits.

Real servers on 127.0.0.1 ephemeral ports (or a Unix socket in the test's folder), real
HTTP clients; every wait is for something observed (a log line, an answer, a closed socket).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess

import numpy as np
import pytest

from runtime import Runner, manifest
from tests.support import forkrun
from tests.support.bundles import shifted_bundle, sig_compute, signature_bundle
from tests.support.core import FAILSAFE, sha256_file, wait_until
from tests.support.server import read_answer, request, Server


def expected(bundle, celsius) -> list[float]:
    with Runner.from_bundle(bundle) as r:
        return r.predict(np.asarray(celsius, dtype=np.float64)).tolist()


def test_predict_answers_like_the_runner_with_the_model_hash(serve, bundle):
    s = serve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    sha = manifest["files"]["model.onnx"]
    status, _, doc = request(s, "POST", "/predict", {"celsius": [100, 37.5, -40]})
    assert status == 200 and doc["model"] == sha
    # %.9g text reads back to the very float32 the model returned
    assert np.float32(doc["fahrenheit"]).tolist() == expected(bundle, [100, 37.5, -40])
    status, _, doc = request(s, "POST", "/predict", {"celsius": 0})  # one number, not a list
    assert status == 200 and doc["fahrenheit"] == [pytest.approx(32, abs=0.1)]
    # 3e38 degC is a valid float32 input whose output overflows float32: JSON has no
    # infinity, so that value is null and the others are numbers.
    status, _, doc = request(s, "POST", "/predict", {"celsius": [1, 3e38]})
    assert status == 200 and doc["fahrenheit"][1] is None and doc["fahrenheit"][0] == pytest.approx(33.8, abs=0.1)


@pytest.mark.parametrize(
    "body, status, error, index",
    [
        (b'{"celsius": [1, 2, 3, -300]}', 400, "input[3] = -300: outside the valid range [-273.15, inf] degC", 3),
        (b'{"celsius": [1, NaN]}', 400, "input[1] = nan: expected a number, got NaN", 1),
        (b'{"celsius": [Infinity]}', 400, "input[0] = inf: expected a finite number", 0),
        (b'{"celsius": [1e39]}', 400, "input[0] = 1e+39: outside float32 range", 0),
        (b'{"celsius": []}', 400, "input: empty, expected at least one value", None),
        (b'{"celsius": ["1"]}', 400, "input: expected numbers", None),
        (b'{"celsius": [true]}', 400, "input: expected numbers", None),
        (b'{"celsius": [[1, 2]]}', 400, "input: expected shape (n,) or (n, 1)", None),
        (b'{"kelvin": [1]}', 400, 'body: expected {"celsius": number or [numbers]}', None),
        (b'[1, 2]', 400, 'body: expected {"celsius": number or [numbers]}', None),
        (b'{"celsius": [1,', 400, "body: not valid JSON", None),
        (b'\xff\xfe', 400, "body: not valid JSON", None),
    ],
)
def test_bad_input_is_400_naming_the_value_and_the_server_goes_on(serve, bundle, body, status, error, index):
    s = serve()
    got, _, doc = request(s, "POST", "/predict", body, {"Content-Type": "application/json"})
    assert got == status and doc["error"].startswith(error), doc
    assert doc.get("index") == index
    assert request(s, "POST", "/predict", {"celsius": [1]})[0] == 200


def raw_predict(server: Server, body: bytes) -> tuple[int, bytes]:
    """(status, the answer's body as sent) for one POST /predict."""
    c = http.client.HTTPConnection(server.host, server.port, timeout=60)
    c.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    try:
        return r.status, r.read()
    finally:
        c.close()


def test_the_tutorials_answer_is_the_same_bytes(serve, bundle):
    """Celsius in, Fahrenheit out, 9 significant digits, no spaces: what every client of the
    tutorial's service has parsed since the first release."""
    s = serve()
    sha = sha256_file(bundle / "model.onnx")
    out = ",".join("%.9g" % v for v in expected(bundle, [100, 37.5]))
    assert raw_predict(s, b'{"celsius": [100, 37.5]}') == (200, f'{{"fahrenheit":[{out}],"model":"{sha}"}}'.encode())
    status, body = raw_predict(s, b'{"kelvin": 1}')
    assert (status, json.loads(body)) == (400, {"error": 'body: expected {"celsius": number or [numbers]} or {"inputs": [...]}'})


def test_a_bundle_made_before_signatures_keeps_celsius_and_fahrenheit(serve, bundle):
    m = json.loads((bundle / manifest.MANIFEST).read_text())
    m.pop("signature")
    m["model"].pop("name")
    for name, raw in manifest.encode(m).items():
        (bundle / name).write_bytes(raw)
    s = serve()
    status, _, doc = request(s, "POST", "/predict", {"celsius": [100, 37.5]})
    assert status == 200 and list(doc) == ["fahrenheit", "model"]
    assert np.float32(doc["fahrenheit"]).tolist() == expected(bundle, [100, 37.5])


def test_a_one_feature_model_takes_and_answers_its_own_names(serve_bundle, tmp_path):
    """Not only the tutorial's: volts in, lux out, named by the bundle's signature."""
    pytest.importorskip("onnx", reason="builds its bundle with the onnx package, which a device's venv lacks "
                                       "(make runtime-check)")
    b = signature_bundle(tmp_path / "scalar", "scalar")
    s = serve_bundle(b)
    sha = sha256_file(b / "model.onnx")
    want = sig_compute("scalar")([[1.0], [2.0]]).reshape(-1).tolist()
    out = ",".join("%.9g" % v for v in want)
    assert raw_predict(s, b'{"volts": [1, 2]}') == (200, f'{{"lux":[{out}],"model":"{sha}"}}'.encode())
    status, _, doc = request(s, "POST", "/predict", {"volts": 2})  # one number, not a list
    assert status == 200 and np.float32(doc["lux"]).tolist() == want[1:]
    status, _, doc = request(s, "POST", "/predict", {"inputs": [[1], [2]]})  # any model's request, too
    assert status == 200 and np.float32(doc["outputs"]).reshape(-1).tolist() == want
    status, _, doc = request(s, "POST", "/predict", {"celsius": [1, 2]})  # the tutorial's name is not this model's
    assert (status, doc) == (400, {"error": 'body: expected {"volts": number or [numbers]} or {"inputs": [...]}'})
    status, _, doc = request(s, "POST", "/predict", {"volts": [1, -2]})
    assert (status, doc) == (400, {"error": "input[1] = -2: outside the valid range [0, inf]", "index": 1})
    request(s, "POST", "/predict", {"volts": [11, 12, 3]})  # observed 0..10: two counted
    lines = request(s, "GET", "/metrics")[2].splitlines()
    assert 'edge_inputs_outside_observed_total{feature="volts"} 2' in lines


def test_health_info_and_metrics(serve, bundle):
    s = serve()
    status, _, h = request(s, "GET", "/healthz")
    assert status == 200 and h["healthy"] is True
    assert [c["name"] for c in h["checks"]] == ["python", "signature", "manifest", "hashes", "onnxruntime", "load", "golden"]
    status, _, info = request(s, "GET", "/info")
    m = json.loads((bundle / "manifest.json").read_text())
    assert status == 200 and info["model"] == m["files"]["model.onnx"]
    assert (info["opset"], info["ir_version"]) == (m["model"]["opset"], m["model"]["ir_version"])
    assert info["valid_input"] == {"min_celsius": -273.15, "max_celsius": None}
    assert {"python", "numpy", "onnxruntime"} <= set(info["versions"]) and info["limits"]["max_body"] == 1 << 20

    for _ in range(3):
        request(s, "POST", "/predict", {"celsius": [1, 2]})
    request(s, "POST", "/predict", {"celsius": [-300]})
    status, r, text = request(s, "GET", "/metrics")
    assert status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    lines = text.splitlines()
    assert 'edge_model_requests_total{endpoint="/predict",status="200"} 3' in lines
    assert 'edge_model_requests_total{endpoint="/predict",status="400"} 1' in lines
    assert "edge_model_values_predicted_total 6" in lines
    assert f'edge_model_info{{sha256="{info["model"]}"}} 1' in lines and "edge_model_healthy 1" in lines
    assert "# TYPE edge_model_request_duration_seconds histogram" in lines
    buckets = [ln for ln in lines if ln.startswith("edge_model_request_duration_seconds_bucket")]
    assert buckets[-1].startswith('edge_model_request_duration_seconds_bucket{le="+Inf"}')
    counts = [int(b.split()[-1]) for b in buckets]
    assert counts == sorted(counts) and counts[-1] >= 6  # cumulative, every answered request
    rss = next(int(ln.split()[1]) for ln in lines if ln.startswith("process_resident_memory_bytes "))
    assert 10 << 20 < rss < 2 << 30


def test_unknown_paths_and_methods_are_json_errors(serve):
    s = serve()
    status, _, doc = request(s, "GET", "/nope")
    assert status == 404 and "no such endpoint '/nope'" in doc["error"]
    status, r, doc = request(s, "GET", "/predict")
    assert status == 405 and r.getheader("Allow") == "POST" and doc["error"] == "/predict takes POST, got GET"
    status, _, doc = request(s, "DELETE", "/healthz")
    assert status == 405


def _closed_after(sock: socket.socket, left: bytes) -> bytes:
    """Everything the server still sends until it closes (EOF, or a reset: it closed with bytes
    of ours unread); read until then, never by waiting a time."""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionError:
            return left
        if not data:
            return left
        left += data


def test_a_body_answered_unread_is_never_read_as_the_next_request(serve):
    """A request answered from its head (404, 405, any GET) whose body is framed by a
    Content-Length within --max-body: the body is drained and the request pipelined behind it,
    in the same write, is answered on the same connection. A body it cannot drain (chunked,
    beyond --max-body, a bad Content-Length): the answer says Connection: close and the server
    closes, its pipelined request not parsed at all (no 400 for the body's bytes)."""
    s = serve("--max-body", "100000")
    good = b'POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n{"celsius": [1]}'
    body = json.dumps({"celsius": [1] * 30000}).encode()  # 90 kB: several reads of the drain
    assert 65536 < len(body) <= 100000

    def req(line: bytes, headers: bytes, data: bytes = b"") -> bytes:
        return line + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n" + data

    cl = b"Content-Length: %d\r\n" % len(body)
    drained = [
        (req(b"POST /nope", cl, body), b"404"),
        (req(b"PUT /predict", cl, body), b"405"),
        (req(b"GET /healthz", cl, body), b"200"),
        (req(b"GET /v2/health/live", b"Content-Length: 0\r\n"), b"200"),
        (req(b"GET /info", b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), b"200"),
    ]
    for refused, status in drained:
        with socket.create_connection((s.host, s.port), timeout=FAILSAFE) as c:
            c.sendall(refused + good + good)
            first, headers, _, left = read_answer(c)
            assert first.split()[1] == status and "connection" not in headers, (refused[:30], first, headers)
            for _ in range(2):
                second, headers, answer, left = read_answer(c, left)
                assert second.split()[1] == b"200", (refused[:30], second, answer)
                assert json.loads(answer)["fahrenheit"], answer
            assert left == b""
    closed = [
        req(b"GET /healthz", b"Content-Length: 100001\r\n", b"abc"),  # beyond --max-body
        req(b"POST /nope", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        req(b"DELETE /healthz", b"Content-Length: 0x10\r\n", b"0123456789abcdef"),
        req(b"GET /healthz", b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"),
    ]
    for refused in closed:
        with socket.create_connection((s.host, s.port), timeout=FAILSAFE) as c:
            c.sendall(refused + good)
            first, headers, _, left = read_answer(c)
            assert first.split()[1] in (b"200", b"404", b"405"), (refused[:30], first)
            assert headers.get("connection") == "close", (refused[:30], first, headers)
            assert _closed_after(c, left) == b"", refused[:30]  # nothing more: no 400, no answer to the rest
    assert request(s, "POST", "/predict", {"celsius": [1]})[0] == 200


def test_bearer_token(serve, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    s = serve("--token-file", str(token))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        status, r, doc = request(s, "POST", "/predict", {"celsius": [1]}, headers)
        assert status == 401 and r.getheader("WWW-Authenticate") == "Bearer", headers
    assert request(s, "POST", "/predict", {"celsius": [1]}, {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert request(s, "GET", "/metrics", None, {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert request(s, "GET", "/healthz")[0] == 200  # health checks need no token


def start_failing(bundle, *args) -> subprocess.CompletedProcess:
    return forkrun.python("-m", "runtime", "serve", "--bundle", str(bundle), *args, cwd=bundle, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})


def test_an_unreadable_token_file_and_a_taken_port_are_one_line_exit_3(bundle, tmp_path):
    r = start_failing(bundle, "--token-file", str(tmp_path / "missing"))
    assert r.returncode == 3
    assert r.stderr.decode().splitlines() == [
        f"error: serve: --token-file {tmp_path / 'missing'}: cannot read: No such file or directory"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = start_failing(bundle, "--port", str(port))
    assert r.returncode == 3
    assert r.stderr.decode().splitlines() == [f"error: serve: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_a_bundle_that_fails_its_selfcheck_never_opens_the_socket(bundle, tmp_path):
    model = bundle / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    where = tmp_path / "s.sock"
    r = start_failing(bundle, "--unix", str(where))
    assert r.returncode == 1
    (line,) = r.stderr.decode().splitlines()
    assert line.startswith("error: serve: selfcheck hashes: model.onnx | sha256 mismatch"), line
    assert not where.exists()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def test_unix_socket(serve, bundle, tmp_path):
    where = tmp_path / "edge.sock"
    s = serve("--unix", str(where))
    assert s.where == f"unix:{where}"
    c = UnixHTTPConnection(str(where))
    status, _, doc = request(s, "POST", "/predict", {"celsius": [100]}, conn=c)
    assert status == 200 and np.float32(doc["fahrenheit"]).tolist() == expected(bundle, [100])
    assert s.stop() == 0


def test_sigterm_exits_0_and_says_so(serve):
    s = serve()
    assert request(s, "POST", "/predict", {"celsius": [1]})[0] == 200
    assert s.stop(signal.SIGTERM) == 0
    assert any("stopping (SIGTERM)" in ln for ln in s.log) and s.log[-1] == "serve: stopped"
    assert not any("Traceback" in ln for ln in s.log)


def test_sighup_swaps_in_a_good_model_and_keeps_the_old_one_for_a_bad(serve, bundle, tmp_path):
    a = bundle
    b = shifted_bundle(bundle, tmp_path / "b", delta=1.0)
    current = tmp_path / "current"
    current.symlink_to(a)
    s = serve(bundle_dir=current)
    conn = http.client.HTTPConnection(s.host, s.port, timeout=60)  # one kept-alive connection throughout
    x = [0.0, 100.0]
    sha_a = json.loads((a / "manifest.json").read_text())["files"]["model.onnx"]
    sha_b = json.loads((b / "manifest.json").read_text())["files"]["model.onnx"]

    def answer():
        status, _, doc = request(s, "POST", "/predict", {"celsius": x}, conn=conn)
        assert status == 200
        return doc["model"], np.float32(doc["fahrenheit"]).tolist()

    assert answer() == (sha_a, expected(a, x))

    def repoint(target):
        tmp = tmp_path / "current.new"
        tmp.symlink_to(target)
        os.replace(tmp, current)  # atomic, as a deploy switches releases

    repoint(b)
    s.proc.send_signal(signal.SIGHUP)
    s.wait_for("reloaded: model")
    assert answer() == (sha_b, expected(b, x))
    assert request(s, "GET", "/healthz", conn=conn)[2]["model"] == sha_b

    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(a, bad)
    (bad / "golden.json").write_text("{}")  # not what the manifest says
    repoint(bad)
    s.proc.send_signal(signal.SIGHUP)
    line = s.wait_for("reload failed")
    assert f"still serving model {sha_b[:12]}" in line and "golden.json | sha256 mismatch" in line
    assert answer() == (sha_b, expected(b, x))  # the old model keeps serving
    status, _, h = request(s, "GET", "/healthz", conn=conn)
    assert status == 503 and h["healthy"] is False
    assert h["checks"][-1]["name"] == "hashes" and h["checks"][-1]["ok"] is False

    repoint(a)  # fixed: the next reload passes and health is back
    s.proc.send_signal(signal.SIGHUP)
    s.wait_for(f"reloaded: model {sha_b[:12]} -> {sha_a[:12]}")
    assert request(s, "GET", "/healthz", conn=conn)[0] == 200
    status, _, text = request(s, "GET", "/metrics", conn=conn)
    assert 'edge_model_reloads_total{result="ok"} 2' in text and 'edge_model_reloads_total{result="failed"} 1' in text


def test_connections_beyond_the_limit_get_503_until_a_slot_is_free(serve):
    # --idle-timeout is a failsafe here: the first connection holds the only slot until the
    # test closes it, however long the second takes to arrive.
    s = serve("--max-connections", "1", "--idle-timeout", str(FAILSAFE))
    first = http.client.HTTPConnection(s.host, s.port, timeout=FAILSAFE)
    status, _, _ = request(s, "GET", "/healthz", conn=first)  # answered: it holds the only slot, kept alive
    assert status == 200
    status, r, doc = request(s, "GET", "/healthz")
    assert status == 503 and r.getheader("Retry-After") == "1" and "too many connections" in doc["error"]
    first.close()
    # The slot is given back when the first connection's thread ends, which may be a moment
    # after the close: each request retries on 503 until admitted.
    assert admitted(s, "/healthz")[0] == 200
    lines = admitted(s, "/metrics")[2].splitlines()
    refused = next(int(ln.split()[1]) for ln in lines if ln.startswith("edge_model_refused_connections_total "))
    assert refused >= 1  # the 503 above (and any retry while the slot was not yet free)


def test_an_idle_kept_alive_connection_is_closed_at_the_idle_timeout_and_frees_its_slot(serve):
    s = serve("--max-connections", "1", "--idle-timeout", "1")
    first = http.client.HTTPConnection(s.host, s.port, timeout=FAILSAFE)
    status, _, _ = request(s, "GET", "/healthz", conn=first)
    assert status == 200
    # The server closes the idle connection after --idle-timeout: observed as EOF (the
    # socket's timeout is a failsafe only).
    first.sock.settimeout(FAILSAFE)
    assert first.sock.recv(1) == b""
    first.close()
    assert admitted(s, "/healthz")[0] == 200  # its slot is free again


def admitted(s, path: str):
    """GET path, again while the server answers 503 (no free slot yet): observed progress."""
    return wait_until(f"{path} admitted (not 503)", lambda: (a := request(s, "GET", path))[0] != 503 and a)


@pytest.mark.parametrize("abstract", [False, True])
def test_it_tells_systemd_ready_reloading_and_stopping(serve, tmp_path, abstract):
    """sd_notify: datagrams on $NOTIFY_SOCKET (a leading @ is Linux's abstract namespace)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@edge-notify-{os.getpid()}-{id(tmp_path)}" if abstract else str(tmp_path / "notify")
    listener.bind("\0" + name[1:] if abstract else name)
    listener.settimeout(120)  # failsafe only: each message is awaited as it comes
    s = serve(env={"NOTIFY_SOCKET": name})
    assert listener.recv(256) == b"READY=1"
    s.proc.send_signal(signal.SIGHUP)
    assert [listener.recv(256), listener.recv(256)] == [b"RELOADING=1", b"READY=1"]
    assert s.stop() == 0
    assert listener.recv(256) == b"STOPPING=1"
    listener.close()
