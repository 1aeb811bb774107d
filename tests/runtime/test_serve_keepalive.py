"""HTTP/1.0 keep-alive against `python -m runtime serve`: a raw-socket client, and ApacheBench
(`ab -k`, Debian's apache2-utils) as its users run it.

An HTTP/1.0 client keeps a connection open only when the answer says ``Connection:
keep-alive``; without it, it waits for the server's close, which comes at --idle-timeout: ab -k
then took 10 s a request. No verdict here is a time: the tests assert what the client observed
(the header, a second answer on the same connection, EOF, ab's keep-alive count); the servers'
--idle-timeout and the clients' timeouts are failsafes that only end a stall or a hang.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess

import pytest

from tests.support.core import FAILSAFE
from tests.support.server import read_answer

IDLE = "60"  # --idle-timeout: ends a stalled keep-alive on a server that does not say keep-alive


def predict_10(body: bytes, keep_alive: bool) -> bytes:
    return (b"POST /predict HTTP/1.0\r\nHost: t\r\nContent-Type: application/json\r\n"
            + (b"Connection: Keep-Alive\r\n" if keep_alive else b"")
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_http10_keep_alive_is_honoured_and_said_and_plain_http10_is_closed(serve):
    s = serve("--idle-timeout", IDLE)
    body = json.dumps({"celsius": [100]}).encode()
    with socket.create_connection((s.host, s.port), timeout=FAILSAFE) as c:
        left = b""
        for i in range(2):  # two requests on one connection
            c.sendall(predict_10(body, keep_alive=True))
            status, headers, answer, left = read_answer(c, left)
            assert status.startswith(b"HTTP/1.1 200"), (i, status, answer)
            assert json.loads(answer)["fahrenheit"], answer
            assert headers.get("connection", "").lower() == "keep-alive", (i, headers)
    with socket.create_connection((s.host, s.port), timeout=FAILSAFE) as c:
        c.sendall(predict_10(body, keep_alive=False))
        status, headers, answer, left = read_answer(c)
        assert status.startswith(b"HTTP/1.1 200") and headers.get("connection", "").lower() == "close", headers
        assert left == b"" and c.recv(1) == b"", "an HTTP/1.0 request without keep-alive: closed after the answer"


def test_ab_keep_alive_requests_are_all_kept_alive(serve, tmp_path, capsys):
    ab = shutil.which("ab")
    if ab is None:
        pytest.skip("ab (ApacheBench, Debian package apache2-utils) is not on PATH; CI installs it")
    n = 5
    s = serve("--idle-timeout", IDLE)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"celsius": [37.5]}))
    r = subprocess.run([ab, "-k", "-c", "1", "-n", str(n), "-s", str(int(FAILSAFE)), "-p", str(body),
                        "-T", "application/json", f"http://{s.host}:{s.port}/predict"],
                       capture_output=True, text=True, timeout=FAILSAFE + 60)
    assert r.returncode == 0, r.stdout + r.stderr

    def figure(name: str) -> int:
        m = re.search(rf"^{name}:\s+(\d+)", r.stdout, re.M)
        assert m, f"no {name!r} in ab's report:\n{r.stdout}"
        return int(m.group(1))

    assert figure("Complete requests") == n and figure("Failed requests") == 0, r.stdout
    assert "Non-2xx responses" not in r.stdout, r.stdout
    assert figure("Keep-Alive requests") == n, r.stdout
    with capsys.disabled():
        print(f"\n  ab -k: {n} requests, {figure('Keep-Alive requests')} kept alive, 0 failed")
