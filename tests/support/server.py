"""A real `python -m runtime serve` process for the tests, and one HTTP request to it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import forkrun


class Server:
    """A real `python -m runtime serve` process (forked as tests/support/forkrun.py says, unless
    it is handed descriptors); ``url`` once it said where it listens."""

    def __init__(self, bundle: Path, *args: str, env: dict | None = None, pass_fds=(), cwd: Path | None = None):
        e = {**os.environ, "PYTHONPATH": "", **(env or {})}
        if not pass_fds and forkrun.eligible(e):
            self.proc = forkrun.Forked(["-m", "runtime", "serve", "--bundle", str(bundle), *args], cwd or bundle, e,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runtime", "serve", "--bundle", str(bundle), *args],
                cwd=cwd or bundle, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=pass_fds,
            )
        self.log: list[str] = []
        self.where = self.wait_for("serving model ").rsplit(" on ", 1)[1].split(" (")[0]
        host, _, port = self.where.rpartition(":")
        self.host, self.port = host, int(port) if port.isdigit() else None
        self.url = f"http://{self.where}" if self.port else None

    def wait_for(self, text: str) -> str:
        """Read the server's log until a line holding ``text`` (observed progress); fail if it exits first."""
        for raw in self.proc.stderr:
            line = raw.decode().rstrip("\n")
            self.log.append(line)
            if text in line:
                return line
        self.proc.wait(timeout=60)
        raise AssertionError(f"serve exited ({self.proc.returncode}) before {text!r}: {self.log}")

    def stop(self, sig=None) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        rest = self.proc.stderr.read().decode()
        self.log += rest.splitlines()
        return self.proc.wait(timeout=120)


def request(server: Server, method: str, path: str, body=None, headers=None, conn=None):
    """(status, headers, parsed JSON or text) for one request, on ``conn`` or a new connection."""
    c = conn or http.client.HTTPConnection(server.host, server.port, timeout=60)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse()
    raw = r.read()
    if conn is None:
        c.close()
    doc = json.loads(raw) if r.getheader("Content-Type", "").startswith("application/json") else raw.decode()
    return r.status, r, doc


def read_answer(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, dict[str, str], bytes, bytes]:
    """(status line, headers by lower-case name, body, bytes left over) of one answer, read by its
    Content-Length (never by waiting for a close)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"closed before a whole head: {buf!r}"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    n = int(headers["content-length"])
    while len(rest) < n:
        data = sock.recv(65536)
        assert data, f"closed inside a body: {rest!r}"
        rest += data
    return status.encode(), headers, rest[:n], rest[n:]
