"""`python -m runtime serve` under hostile and heavy traffic: bad requests (hand-written and
hypothesis-generated raw bytes), slowloris, 10,000 dropped connections, restarts through a held
socket and SIGHUP reloads under load with zero dropped requests, systemd-socket-activate, and
SIGTERM with a request in flight.

Real servers on 127.0.0.1 ephemeral ports, real clients (raw sockets, http.client). No verdict
depends on the machine's speed: the tests wait for something observed (a log line, an answer, a
process exit, the kernel's socket queues in /proc/net/tcp), every loop is bounded by a count, and
the time caps (FAILSAFE) are there only so that a hang fails instead of blocking. Each test
prints its counts.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from runtime import Runner
from tests.support.bundles import shifted_bundle
from tests.support.core import FAILSAFE, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
GOOD = [-40.0, 0.0, 36.6, 100.0, 451.0]
RSS_GROWTH_LIMIT_KIB = 10 * 1024


# --- small tools: raw HTTP, process and socket state -------------------------------------------


class Closed(Exception):
    """The server closed the connection (FIN or RST) before a whole answer; ``got`` holds its bytes."""

    def __init__(self, got: bytes):
        super().__init__(f"connection closed after {len(got)} byte(s) of an answer: {got[:80]!r}")
        self.got = got


class Wire:
    """One raw client connection: bytes out, whole HTTP/1.1 answers in, parsed strictly."""

    STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")

    def __init__(self, port: int, timeout: float = FAILSAFE):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> bool:
        """False when the server already closed (the bytes were not taken)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _more(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def answer(self, head: bool = False):
        """(status, headers, body) of the next final answer (1xx skipped); None at EOF between answers.

        Raises Closed when the connection ends inside an answer, AssertionError when the bytes
        are not an HTTP/1.1 answer. ``head``: the request was HEAD (an answer without its body).
        """
        while True:
            while b"\r\n\r\n" not in self.buf:
                assert len(self.buf) < 1 << 16, f"no end of headers in {self.buf[:200]!r}"
                if not self._more():
                    if not self.buf:
                        return None
                    raise Closed(self.buf)
            end = self.buf.index(b"\r\n\r\n") + 4
            top, self.buf = self.buf[:end], self.buf[end:]
            m = self.STATUS.match(top)
            assert m, f"not an HTTP/1.1 answer: {top[:200]!r}"
            headers = {}
            for line in top[m.end():-4].split(b"\r\n") if top[m.end():-4] else []:
                name, sep, value = line.partition(b":")
                assert sep and name and name == name.strip(), f"bad header line {line!r} in {top!r}"
                headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
            status = int(m.group(1))
            if 100 <= status < 200:
                continue  # 100 Continue: the final answer follows
            n = int(headers["content-length"])
            if head:  # HEAD: the length of the body a GET would get, and no body
                if not self.buf:
                    self._more()
                if not self.buf or self.buf.startswith(b"HTTP/1.1 "):
                    return status, headers, b""
            while len(self.buf) < n:
                if not self._more():
                    raise Closed(top + self.buf)
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body

    def answers(self, head: bool = False) -> list:
        """Every answer until the server closes."""
        out = []
        while True:
            a = self.answer(head=head and not out)
            if a is None:
                return out
            out.append(a)

    def close(self, reset: bool = False) -> None:
        if reset:  # vanish with an RST, as a crashed client or a dropped network does
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def post(body: bytes, extra: bytes = b"", path: bytes = b"/predict", length: bytes | None = None) -> bytes:
    """A raw POST with ``body``; ``length`` overrides the Content-Length value (b"" leaves it out)."""
    cl = b"%d" % len(body) if length is None else length
    head = b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    if cl:
        head += b"Content-Length: " + cl + b"\r\n"
    return head + extra + b"\r\n" + body


def predict_body(values) -> bytes:
    return json.dumps({"celsius": values}).encode()


def check_good(port: int, runner: Runner, values=GOOD) -> None:
    """A good POST /predict on a new http.client connection is answered with the runner's numbers."""
    c = http.client.HTTPConnection(HOST, port, timeout=FAILSAFE)
    try:
        c.request("POST", "/predict", predict_body(values), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    assert r.status == 200, data
    got = np.float32(json.loads(data)["fahrenheit"]).tolist()
    assert got == runner.predict(np.float64(values)).tolist()


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/<pid>/status (VmRSS in KiB, Threads)."""
    return proc_status_text(f"/proc/{pid}/status", field)


def other_threads_taking(pid: int, sig: int) -> int:
    """How many threads of ``pid`` besides the main one do not block ``sig``. A thread that ends
    while they are read (the accept loop's, once a SIGTERM stops it) can take nothing: not counted."""
    bit, n = 1 << (sig - 1), 0
    for t in os.listdir(f"/proc/{pid}/task"):
        if int(t) == pid:
            continue
        try:
            blocked = proc_status_text(f"/proc/{pid}/task/{t}/status", "SigBlk", 16)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if not blocked & bit:
            n += 1
    return n


def proc_status_text(path: str, field: str, base: int = 10) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], base)
    raise AssertionError(f"no {field} in {path}")


def signal_settled(pid: int, sig: int) -> bool:
    """``sig``, sent to ``pid``, is no longer on its way: the process is gone (a zombie counts), or
    no thread has it pending (it was taken), or it is pending and every thread blocks it (held)."""
    bit = 1 << (sig - 1)
    try:
        tasks = [f"/proc/{pid}/task/{t}/status" for t in os.listdir(f"/proc/{pid}/task")]
        status = [dict(ln.split(":", 1) for ln in Path(p).read_text().splitlines() if ":" in ln) for p in tasks]
    except (FileNotFoundError, ProcessLookupError):
        return True
    if any(st["State"].strip().startswith(("Z", "X")) for st in status):
        return True
    pending = any(int(st[k], 16) & bit for st in status for k in ("ShdPnd", "SigPnd"))
    return not pending or all(int(st["SigBlk"], 16) & bit for st in status)


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(bytes not yet acknowledged by the peer, bytes not yet read by the process) of the
    ESTABLISHED IPv4 socket local_port -> remote_port, from /proc/net/tcp; None if there is none."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, state, queues = parts[1], parts[2], parts[3], parts[4]
            ports = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
            if state == "01" and ports == (local_port, remote_port):
                tx, rx = queues.split(":")
                return int(tx, 16), int(rx, 16)
    return None


def clean_log(server: Server) -> None:
    assert not any("Traceback" in ln for ln in server.log), "\n".join(server.log)
    assert not any("error in a connection" in ln for ln in server.log), "\n".join(server.log)


def sha_of(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]


# --- 1. bad traffic -----------------------------------------------------------------------------

MAX_BODY, MAX_HEADER, MAX_VALUES = 65536, 4096, 10
LIMITS = ("--max-body", str(MAX_BODY), "--max-header", str(MAX_HEADER), "--max-values", str(MAX_VALUES),
          "--idle-timeout", "120")
ANY_4XX = "4xx"  # any 4xx answer (or none: the server may just close)
TLS_HELLO = bytes.fromhex("160301020001000" + "1fc0303") + bytes(range(32)) + b"\x00\x02\x13\x01\x01\x00"
TOO_BIG = b"larger than %d bytes" % MAX_HEADER
DEEP = b'{"celsius": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def catalogue() -> list:
    """(kind, request bytes, how the client ends, the first answer's status [and a text in its
    body], or ANY_4XX, or None).

    Endings: "half-close" (SHUT_WR, then read every answer), "close" / "reset" (the client
    vanishes: FIN / RST, nothing is read). None: no answer may come (the server just closes).
    """
    ok = predict_body([1.5])
    return [
        ("malformed request line", TLS_HELLO, "half-close", None),
        ("malformed request line", b"GET\r\n\r\n", "half-close", 400),
        ("malformed request line", b"GET /healthz HTTP/1.1 extra\r\n\r\n", "half-close", 400),
        ("malformed request line", b"GET /healthz HTTP/1.x\r\n\r\n", "half-close", 400),
        # Refused request lines that end in HTTP/0.9 still get a status line (once a bare HTML
        # body); U+0085 (NEL, UTF-8 c2 85) is whitespace to str.split(): four words.
        ("malformed request line", b"GET /healthz x HTTP/0.9\r\n\r\n", "half-close", 400),
        ("malformed request line", b"POST \xc2\x850 HTTP/0.9\r\nContent-Length: 2\r\n\r\n{}", "half-close", 400),
        ("malformed request line", b"GET /healthz FOO/1.1\r\n\r\n", "half-close", 400),
        ("malformed request line", b"POST /predict\r\n\r\n", "half-close", 400),
        ("malformed request line", b"GET /healthz HTTP/9.9\r\n\r\n", "half-close", 505),
        ("malformed request line", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "half-close", 505),
        ("malformed request line", b" \t \r\n\r\n", "half-close", None),
        ("malformed request line", b"\x00\xff\xfe\x01 \x80 \x7f\r\n\r\n", "half-close", 400),
        ("malformed request line", b"GET /" + b"a" * MAX_HEADER + b" HTTP/1.1\r\n\r\n", "half-close", (431, TOO_BIG)),
        ("huge headers", b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * MAX_HEADER + b"\r\n\r\n", "half-close",
         (431, TOO_BIG)),
        ("huge headers", b"GET /healthz HTTP/1.1\r\n" + b"X-N: 1\r\n" * 200 + b"\r\n", "half-close",
         (431, b"Too many headers")),
        ("huge headers", b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * (4 * MAX_HEADER), "half-close", (431, TOO_BIG)),
        ("wrong Content-Length", post(ok, length=b"abc"), "half-close", 400),
        ("wrong Content-Length", post(ok, length=b"-5"), "half-close", 400),
        ("wrong Content-Length", post(ok, length=b"1e3"), "half-close", 400),
        ("wrong Content-Length", post(ok, length=b"%d" % (len(ok) + 10)), "half-close", 400),
        ("wrong Content-Length", post(ok, length=b"5"), "half-close", 400),
        ("wrong Content-Length", post(ok, extra=b"Content-Length: 3\r\n"), "half-close", ANY_4XX),
        ("wrong Content-Length", b"POST /predict HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: %d\r\n\r\n"
         % len(ok) + ok, "half-close", ANY_4XX),
        ("truncated body", post(ok + b" " * 100)[:-90], "half-close", (400, b"body ended after")),
        ("truncated body", post(ok + b" " * 100)[:-90], "close", None),
        ("truncated body", post(ok + b" " * 100)[:-90], "reset", None),
        ("invalid JSON", post(b"{"), "half-close", 400),
        ("invalid JSON", post(b"nan"), "half-close", 400),
        ("invalid JSON", post(b'{"celsius": NaN}'), "half-close", 400),
        ("invalid JSON", post(b'{"celsius": [1, 2,]}'), "half-close", 400),
        ("invalid JSON", post(b"[1.5]"), "half-close", 400),
        ("invalid JSON", post(b'{"celsius": "warm"}'), "half-close", 400),
        ("invalid JSON", post(b'{"celsius": [1, [2]]}'), "half-close", 400),
        ("invalid JSON", post(b'{"celsius": 1' + b"0" * 5000 + b"}"), "half-close", 400),
        ("invalid JSON", post(DEEP), "half-close", 400),  # json's RecursionError (3.13: numpy's 64 dims)
        ("invalid UTF-8", post(b'{"celsius": "\xff\xfe"}'), "half-close", 400),
        ("invalid UTF-8", post(b'{"celsius": [1, 2]\xc0\xaf}'), "half-close", 400),
        ("invalid UTF-8", post(b'\xff{"celsius": 1}'), "half-close", 400),
        ("no Content-Length", post(ok, length=b""), "half-close", (411, b"Content-Length")),
        ("chunked", post(b"", extra=b"Transfer-Encoding: chunked\r\n", length=b"")
         + b"%x\r\n" % len(ok) + ok + b"\r\n0\r\n\r\n", "half-close", (411, b"not chunked")),
        ("body over --max-body", post(b"", length=b"%d" % (MAX_BODY + 1)), "half-close",
         (413, b"--max-body")),
        ("over --max-values", post(predict_body([1.0] * (MAX_VALUES + 1))), "half-close", (400, b"--max-values")),
        ("unknown path", b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", "half-close", 404),
        ("unknown path", post(ok, path=b"/predict/../x"), "half-close", 404),
        ("wrong method", b"GET /predict HTTP/1.1\r\nHost: t\r\n\r\n", "half-close", 405),
        ("wrong method", post(ok, path=b"/healthz"), "half-close", 405),
        ("wrong method", b"HEAD /info HTTP/1.1\r\nHost: t\r\n\r\n", "half-close", 405),
        ("vanished mid-request", b"POST /pre", "close", None),
        ("vanished mid-request", b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Le", "reset", None),
        ("vanished mid-request", post(predict_body([2.0] * 10)), "reset", None),
        ("vanished mid-request", b"GET /healthz HTTP/1.1\r\nHost: t\r\n", "half-close", None),
    ]


def run_case(port: int, data: bytes, ending: str, expect, head: bool = False) -> list:
    """Send one case; return the answers' statuses (checked against ``expect``)."""
    w = Wire(port)
    try:
        w.send(data)
        if ending != "half-close":
            w.close(reset=ending == "reset")
            return []
        w.sock.shutdown(socket.SHUT_WR)
        got = w.answers(head=head)
    finally:
        w.close()
    statuses = [a[0] for a in got]
    expect, needle = expect if isinstance(expect, tuple) else (expect, None)
    if needle is not None:
        assert got and needle in got[0][2], f"{data[:80]!r}: expected {needle!r} in {got}"
    if expect is None:
        assert statuses == [], f"{data[:80]!r}: expected no answer, got {statuses}"
    elif expect == ANY_4XX:
        assert statuses and all(400 <= s < 500 for s in statuses), f"{data[:80]!r}: {statuses}"
    else:
        assert statuses and statuses[0] == expect, f"{data[:80]!r}: expected {expect}, got {got}"
        assert all(400 <= s < 500 or s == 505 for s in statuses[1:]), f"{data[:80]!r}: {statuses}"
    for status, headers, body in got:
        if status >= 400 and body and headers.get("content-type") == "application/json":
            assert "error" in json.loads(body)
    return statuses


def test_bad_requests_get_4xx_or_a_close_and_the_next_good_request_is_answered(serve, runner, capsys):
    s = serve(*LIMITS)
    cases = catalogue()
    kinds, answers = Counter(), Counter()

    def one_round():
        for kind, data, ending, expect in cases:
            for status in run_case(s.port, data, ending, expect, head=data.startswith(b"HEAD ")):
                answers[status] += 1
            kinds[kind] += 1
            check_good(s.port, runner)
            kinds["good request after each"] += 1
            assert s.proc.poll() is None
        head_kept_alive()

    def head_kept_alive():
        # HEAD (405 here) answers without a body, so a kept-alive connection goes on in step.
        c = http.client.HTTPConnection(HOST, s.port, timeout=FAILSAFE)
        try:
            for method in ("HEAD", "GET"):
                c.request(method, "/healthz")
                r = c.getresponse()
                assert (r.status, r.read()[:1]) == ((405, b"") if method == "HEAD" else (200, b"{")), method
        finally:
            c.close()
        kinds["HEAD then GET, kept alive"] += 1

    one_round()  # warm-up: every code path has run once
    rss_before = proc_status(s.proc.pid, "VmRSS")
    for _ in range(20):
        one_round()
    rss_after = proc_status(s.proc.pid, "VmRSS")
    assert s.stop() == 0
    clean_log(s)
    with capsys.disabled():
        print(f"\n  bad traffic: {sum(kinds.values())} requests: "
              + ", ".join(f"{k} {n}" for k, n in kinds.items()))
        print(f"  answers by status: {dict(sorted(answers.items()))}; "
              f"RSS {rss_before} KiB after warm-up -> {rss_after} KiB (+{rss_after - rss_before})")
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB


def test_hypothesis_raw_requests_never_crash_the_server(serve, runner, capsys):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    s = serve(*LIMITS)
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24).map(lambda t: t.encode())

    def mostly(*common):  # the listed values three times in four, else arbitrary text
        return st.one_of(st.sampled_from(common), st.sampled_from(common), st.sampled_from(common), text)

    method = mostly(b"POST", b"POST", b"GET", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PRI", b"get", b"")
    path = mostly(b"/predict", b"/predict", b"/healthz", b"/info", b"/metrics", b"/", b"*", b"/predict?x=1",
                  b"//predict", b"http://t/predict", b"/%00", b"")
    version = mostly(b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1 x", b"HTTP/1",
                     b"http/1.1", b"HTTP/1.10", b"")
    name = mostly(b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Content-Type",
                  b"X-A", b"")
    value = mostly(b"0", b"1", b"-1", b"18", b"99999999999999999999", b"chunked", b"close", b"keep-alive",
                   b"100-continue", b"application/json", b" 5", b"", b"\xff")
    number = st.one_of(st.floats(), st.floats(-273.15, 1e6), st.integers(-10**30, 10**30), st.text(max_size=5),
                       st.none(), st.booleans())
    doc = st.one_of(number, st.lists(number, max_size=MAX_VALUES + 2), st.dictionaries(st.text(max_size=8), number))
    body = st.one_of(
        st.builds(predict_body, doc),
        st.builds(predict_body, doc),
        st.builds(lambda d: json.dumps(d).encode(), doc),
        st.sampled_from([b"{", b"nan", b'{"celsius": NaN}', b'{"celsius": [1, 2,]}', DEEP, b'\xff{"celsius": 1}',
                         b'{"celsius": "\xc0\xaf"}']),
        st.binary(max_size=300),
    )
    eol = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
    request = st.builds(
        lambda m, p, v, hs, b, e, auto_length, cut, junk: (
            m, (m + b" " + p + b" " + v + e + b"".join(k + b": " + x + e for k, x in hs)
                + (b"Content-Length: %d" % len(b) + e if auto_length else b"") + e + b)[:cut] + junk),
        method, path, version, st.lists(st.tuples(name, value), max_size=4), body, eol,
        st.sampled_from([True, True, True, False]),
        st.one_of(st.none(), st.none(), st.none(), st.integers(0, 400)),
        st.one_of(st.sampled_from([b"", b"", b"", b"\r\n", b"GET /healthz HTTP/1.1\r\n\r\n"]), st.binary(max_size=20)),
    )
    tried, answers = [0], Counter()

    @hypothesis.settings(max_examples=400, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(request)
    def check(case):
        m, data = case
        tried[0] += 1
        w = Wire(s.port)
        try:
            w.send(data)
            try:
                w.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            got = w.answers(head=m == b"HEAD")
        finally:
            w.close()
        for status, _, _ in got:
            answers[status] += 1
            assert status < 500 or status == 505, (data, got)  # 505: a request line claiming HTTP/2+
        assert s.proc.poll() is None, data
        check_good(s.port, runner)

    check()
    assert s.stop() == 0
    clean_log(s)
    with capsys.disabled():
        print(f"\n  hypothesis: {tried[0]} raw requests, each followed by a good one; "
              f"answers by status {dict(sorted(answers.items()))}; crashes 0")


class Slowloris(threading.Thread):
    """Sends ``data`` one byte per ``period`` seconds until the server closes the connection."""

    def __init__(self, port: int, data: bytes, period: float):
        super().__init__(daemon=True)
        self.t0 = time.monotonic()  # before the connection exists: the server's clock starts later
        self.sock = socket.create_connection((HOST, port), timeout=FAILSAFE)
        self.data, self.period = data, period
        self.sent, self.reply, self.cut_after = 0, b"", None

    def run(self) -> None:
        cap = self.t0 + FAILSAFE
        for i in range(len(self.data)):  # bounded: runs out of bytes if never cut
            if time.monotonic() > cap:
                break
            try:
                self.sock.send(self.data[i:i + 1])
                self.sent += 1
            except OSError:
                self.cut_after = time.monotonic() - self.t0
                break
            readable, _, _ = select.select([self.sock], [], [], self.period)
            if readable:
                try:
                    got = self.sock.recv(1 << 16)
                except OSError:
                    got = b""
                self.reply += got
                if not got:
                    self.cut_after = time.monotonic() - self.t0
                    break
        self.sock.close()


def test_slowloris_is_cut_at_the_idle_timeout_and_holds_no_worker(serve, runner, capsys):
    timeout = 1.0
    s = serve("--idle-timeout", str(timeout), "--max-connections", "2")
    period = timeout / 10
    slow_head = b"POST /predict HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 600
    slow_body = post(b"[" + b"1," * 600 + b"1]")
    slow_body_start = slow_body.index(b"\r\n\r\n") + 4
    # Both connect before the good client: the kernel's accept queue is FIFO, so the server
    # gives them the two slots first.
    a = Slowloris(s.port, slow_head, period)
    b = Slowloris(s.port, slow_body, period)
    b.sock.sendall(slow_body[:slow_body_start])  # the head at once, then the body byte by byte
    b.data = slow_body[slow_body_start:]
    a.start()
    b.start()
    outcomes = Counter()
    # The request in one write: the server refuses without reading it, and a client that
    # writes twice (http.client: head, then body) may get EPIPE before it can read the 503.
    c = Wire(s.port)
    c.send(post(predict_body(GOOD)))
    status, headers, data = c.answer()
    c.close()
    outcomes[status] += 1
    if status == 200:  # possible only once a slowloris was cut and its slot given back
        assert np.float32(json.loads(data)["fahrenheit"]).tolist() == runner.predict(np.float64(GOOD)).tolist()
    else:  # both slots held by the slowloris
        assert status == 503 and headers.get("retry-after") == "1", (status, data)
    a.join(FAILSAFE)
    b.join(FAILSAFE)
    for name, t in (("slow head", a), ("slow body", b)):
        assert t.cut_after is not None, f"{name}: never cut ({t.sent} bytes sent)"
        assert t.cut_after >= timeout, (name, t.cut_after)  # not before its deadline
        # ... and before it ran out of bytes: a timeout per read (which each byte resets) would
        # have let it send them all. A count, not a time: a slow machine sends fewer bytes.
        assert t.sent < len(t.data), (name, t.sent, len(t.data))
        assert t.reply == b"", (name, t.reply)  # closed without an answer
    check_good(s.port, runner)  # the slots are free again: answered, not 503
    outcomes[200] += 1
    assert s.stop() == 0
    clean_log(s)
    with capsys.disabled():
        print(f"\n  slowloris: cut after {a.cut_after:.2f} s (slow head, {a.sent} bytes) and "
              f"{b.cut_after:.2f} s (slow body, {b.sent} bytes) at --idle-timeout {timeout:g}; "
              f"good client's answers {dict(outcomes)}")


def test_ten_thousand_connections_opened_and_dropped(serve, runner, capsys):
    s = serve()
    pid = s.proc.pid
    check_good(s.port, runner)
    threads_idle = proc_status(pid, "Threads")
    kinds = Counter()
    partial = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"celsius\": ["

    def drop(n: int) -> None:
        deadline = time.monotonic() + FAILSAFE
        for i in range(n):
            assert time.monotonic() < deadline, f"failsafe: {i} of {n} connections in {FAILSAFE:g} s"
            w = Wire(s.port)
            how = i % 4
            if how >= 2:
                w.send(partial[: 1 + i % len(partial)])
            w.close(reset=how % 2 == 1)
            kinds[("closed at once", "reset at once", "partial, closed", "partial, reset")[how]] += 1

    def settled() -> int:
        # Every dropped connection's thread has ended: the count is back to the idle one.
        wait_until("the connection threads to end", lambda: proc_status(pid, "Threads") <= threads_idle)
        check_good(s.port, runner)
        return proc_status(pid, "VmRSS")

    drop(1000)  # warm-up
    rss_before = settled()
    drop(9000)
    rss_after = settled()
    assert s.proc.poll() is None
    assert s.stop() == 0
    clean_log(s)
    with capsys.disabled():
        print(f"\n  dropped connections: {sum(kinds.values())} ({', '.join(f'{k} {n}' for k, n in kinds.items())}); "
              f"RSS {rss_before} KiB after 1000 -> {rss_after} KiB after 10000 (+{rss_after - rss_before})")
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB


# --- 2. zero dropped requests across restarts (held socket) and reloads ---------------------------

# Starts the server as systemd does: the held socket as fd 3, LISTEN_FDS=1, LISTEN_PID = its pid
# (execv keeps the pid).
ACTIVATE = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class ActivatedServer(Server):
    """`python -m runtime serve` on a listening socket the test holds (socket activation)."""

    def __init__(self, listener: socket.socket, bundle: Path, cwd: Path, *args: str):
        fd = listener.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ACTIVATE, str(fd), sys.executable, "-m", "runtime", "serve",
             "--bundle", str(bundle), *args],
            cwd=cwd, env={**os.environ, "PYTHONPATH": ""}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(fd,),
        )
        self.log = []
        try:
            line = self.wait_for("serving model ")
            assert "(socket from systemd)" in line, line
        except BaseException:
            self.proc.kill()
            self.stop()
            raise
        self.host, self.port = listener.getsockname()


class Traffic:
    """What the client threads share: the event count (epoch), the models in force, the tallies."""

    def __init__(self):
        self.cv = threading.Condition()
        self.epoch = 0
        self.model_at = [None]  # model sha in force once event k is done (k = 0: at the start)
        self.after = Counter()  # answers to requests sent at epoch >= k, by k
        self.by_model = Counter()
        self.retries = 0
        self.connections = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def announce(self, model: str) -> None:
        """Before an event: the model in force once it is done."""
        with self.cv:
            self.model_at.append(model)

    def advance(self) -> None:
        """After an event: requests sent from now on must get the announced model."""
        with self.cv:
            self.epoch += 1

    def wait_for_answers(self, epoch: int, n: int) -> None:
        with self.cv:
            ok = self.cv.wait_for(lambda: self.after[epoch] >= n or self.failures, timeout=FAILSAFE)
        assert not self.failures, self.failures[:5]
        assert ok, f"failsafe: fewer than {n} answers after event {epoch} in {FAILSAFE:g} s"


class Client(threading.Thread):
    """POST /predict in a bounded loop on a kept-alive connection; checks every answer."""

    def __init__(self, k: int, port: int, values: list, table: dict, t: Traffic, limit: int):
        super().__init__(daemon=True)
        self.k, self.port, self.values, self.table, self.t, self.limit = k, port, values, table, t, limit

    def run(self) -> None:
        t, w, reused, i = self.t, None, False, 0
        cap = time.monotonic() + FAILSAFE
        try:
            while i < self.limit and not t.done.is_set():
                if time.monotonic() > cap:
                    raise AssertionError("failsafe: time cap reached")
                j = (self.k * 7919 + i) % len(self.values)
                epoch0 = t.epoch
                if w is None:
                    w, reused = Wire(self.port), False
                    with t.cv:
                        t.connections += 1
                sent = w.send(post(predict_body(self.values[j])))
                try:
                    a = w.answer() if sent else None
                    if a is None:
                        raise Closed(b"")
                except Closed as e:
                    # A kept-alive connection the old server closed while it was idle: the request
                    # was not processed (no byte of an answer came); reconnect and send it again.
                    if reused and not e.got:
                        w.close()
                        w = None
                        with t.cv:
                            t.retries += 1
                        continue
                    raise AssertionError(f"request {i} on a {'reused' if reused else 'new'} connection: {e}")
                status, headers, body = a
                assert status == 200, (status, body)
                doc = json.loads(body)
                model, got = doc["model"], np.float32(doc["fahrenheit"][0])
                assert model in self.table, model
                assert got == self.table[model][j], (self.values[j], float(got), model)
                # Sent after event epoch0 completed: the model in force then, or one announced
                # since (an event in progress is announced before it starts).
                allowed = set(t.model_at[epoch0:])
                assert model in allowed, f"sent at epoch {epoch0}: answered by {model[:12]}, expected {allowed}"
                with t.cv:
                    for e in range(epoch0 + 1):
                        t.after[e] += 1
                    t.by_model[model] += 1
                    t.cv.notify_all()
                if headers.get("connection", "").lower() == "close":
                    w.close()
                    w = None
                else:
                    reused = True
                i += 1
        except Exception as e:  # noqa: BLE001 - reported to the test's thread
            with t.cv:
                t.failures.append(f"client {self.k}: {type(e).__name__}: {e}")
                t.cv.notify_all()
        finally:
            if w is not None:
                w.close()


def test_zero_dropped_requests_across_five_restarts_and_five_reloads(bundle, tmp_path, capsys):
    a = bundle
    b = shifted_bundle(bundle, tmp_path / "b", delta=1.0)
    sha = {"A": sha_of(a), "B": sha_of(b)}
    assert sha["A"] != sha["B"]
    values = [round(-200.0 + 0.7 * k, 2) for k in range(1000)]
    with Runner.from_bundle(a) as ra, Runner.from_bundle(b) as rb:
        ya, yb = ra.predict(np.float64(values)), rb.predict(np.float64(values))
    diff = ya.astype(np.float64) - yb.astype(np.float64) + 1.0
    assert np.all(np.abs(diff) <= 4 * np.spacing(np.abs(ya))), "model B is not model A + 1.0 degF"
    table = {sha["A"]: ya, sha["B"]: yb}
    current = tmp_path / "current"
    current.symlink_to(a)

    def repoint(target: Path) -> None:
        tmp = tmp_path / "current.new"
        tmp.symlink_to(target)
        os.replace(tmp, current)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    servers: list[Server] = []
    t = Traffic()
    t.model_at[0] = sha["A"]
    clients = [Client(k, port, values, table, t, limit=100_000) for k in range(4)]
    per_event, min_after, min_after_last = [], 100, 400
    try:
        servers.append(ActivatedServer(listener, current, a))
        for c in clients:
            c.start()
        t.wait_for_answers(0, min_after)
        serving = "A"
        for event in range(10):
            srv = servers[-1]
            if event % 2 == 1:
                serving = "B" if serving == "A" else "A"
            t.announce(sha[serving])
            if event % 2 == 0:  # restart, ordered as systemd does: SIGTERM, wait for the exit, start
                assert srv.stop(signal.SIGTERM) == 0, srv.log
                assert srv.log[-1] == "serve: stopped", srv.log  # no connection cut
                clean_log(srv)
                servers.append(ActivatedServer(listener, current, a))
                what = "restart"
            else:  # reload to the other model
                repoint(b if serving == "B" else a)
                srv.proc.send_signal(signal.SIGHUP)
                line = srv.wait_for("reload")
                was = "B" if serving == "A" else "A"
                assert f"reloaded: model {sha[was][:12]} -> {sha[serving][:12]}" in line, line
                what = f"reload to {serving}"
            t.advance()
            t.wait_for_answers(t.epoch, min_after_last if event == 9 else min_after)
            per_event.append(what)
        t.done.set()
        for c in clients:
            c.join(FAILSAFE)
            assert not c.is_alive(), "failsafe: a client thread did not end"
        assert not t.failures, t.failures[:5]
        assert servers[-1].stop(signal.SIGTERM) == 0
        assert servers[-1].log[-1] == "serve: stopped"
        clean_log(servers[-1])
    finally:
        t.done.set()
        for s in servers:
            s.stop()
        listener.close()
    total = sum(t.by_model.values())
    during = [t.after[k] - t.after[k + 1] for k in range(10)] + [t.after[10]]
    per_event = [f"start: {during[0]}"] + [f"{what}: {n}" for what, n in zip(per_event, during[1:])]
    with capsys.disabled():
        print(f"\n  zero-drop: {total} requests answered, 0 failed; model A {t.by_model[sha['A']]}, "
              f"model B {t.by_model[sha['B']]}; {t.retries} resent after a kept-alive connection was "
              f"closed idle; {t.connections} connections; 5 restarts, 5 reloads; "
              f"requests sent after each event until the next: {'; '.join(per_event)}")
    assert t.by_model[sha["A"]] and t.by_model[sha["B"]]


# --- 3. socket activation with the real tool ------------------------------------------------------


def test_systemd_socket_activate(bundle, runner, capsys):
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not on PATH")
    log = []

    def wait_for(text: str) -> str:
        for raw in p.stderr:
            log.append(raw.decode().rstrip("\n"))
            if text in log[-1]:
                return log[-1]
        p.wait(FAILSAFE)
        raise AssertionError(f"exited ({p.returncode}) before {text!r}: {log}")

    for _ in range(5):  # a free port, which the tool must bind itself: another process may take it first
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        p = subprocess.Popen(
            [tool, "-l", f"{HOST}:{port}", sys.executable, "-m", "runtime", "serve", "--bundle", str(bundle)],
            cwd=bundle, env={**os.environ, "PYTHONPATH": ""}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            wait_for("Listening on")
            break
        except AssertionError:
            if "Address already in use" not in " ".join(log):
                raise
    try:
        check_good(port, runner)  # the first connection makes the tool exec the server, which answers it
        line = wait_for("serving model ")
        assert "(socket from systemd)" in line, line
        check_good(port, runner)
        p.send_signal(signal.SIGTERM)
        log += p.stderr.read().decode().splitlines()
        assert p.wait(FAILSAFE) == 0, log
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(FAILSAFE)
    assert log[-1] == "serve: stopped", log
    assert not any("Traceback" in ln for ln in log), log
    with capsys.disabled():
        print(f"\n  systemd-socket-activate: 2 answers, SIGTERM exit 0 ({line.rsplit(' on ', 1)[1]})")


# --- 4. SIGTERM with a request in flight ---------------------------------------------------------


def sigterm_in_flight(serve, runner, then=None) -> tuple[int, int]:
    """A 100,000-value request whose last byte is sent only after SIGTERM's "stopping" line (and
    after ``then()``): it must be answered whole and the server exit 0. Returns (values, bytes)."""
    s = serve("--max-body", str(4 << 20), "--drain-timeout", str(FAILSAFE))
    values = np.round(np.linspace(-273.0, 1000.0, 100_000), 3).tolist()
    data = post(predict_body(values))
    w = Wire(s.port)
    try:
        w.sock.sendall(data[:-1])
        me = w.sock.getsockname()[1]
        # Observed: the server process has read every byte sent (its receive queue is empty and
        # nothing is left unacknowledged), so it has parsed the head and waits in the body.
        wait_until("the server to read all but the last byte",
                   lambda: tcp_queues(me, s.port) == (0, 0) and tcp_queues(s.port, me) == (0, 0))
        s.proc.send_signal(signal.SIGTERM)
        s.wait_for("stopping (SIGTERM)")
        if then is not None:
            then(s)
        assert s.proc.poll() is None, f"exit {s.proc.returncode} while a request is in flight"
        w.sock.sendall(data[-1:])
        answer = w.answer()
    finally:
        w.close()
    assert answer is not None, "closed without an answer"
    status, headers, body = answer
    assert status == 200, body
    got = np.float32(json.loads(body)["fahrenheit"])
    assert got.shape == (100_000,) and got.tolist() == runner.predict(np.float64(values)).tolist()
    s.log += s.proc.stderr.read().decode().splitlines()
    assert s.proc.wait(FAILSAFE) == 0
    assert s.log[-1] == "serve: stopped", s.log
    clean_log(s)
    return len(values), len(data)


def test_sigterm_with_a_large_request_in_flight_answers_it_whole_and_exits_0(serve, runner, capsys):
    n, size = sigterm_in_flight(serve, runner)
    with capsys.disabled():
        print(f"\n  SIGTERM in flight: {n} values ({size} bytes) answered whole after 'stopping'; exit 0")


def test_a_sighup_while_draining_does_not_kill_the_server(serve, runner, capsys):
    seen = {}

    def hup(s):
        # Threads that started before serve blocked its signals (numpy's BLAS pool) can take them.
        seen["takers"] = other_threads_taking(s.proc.pid, signal.SIGHUP)
        s.proc.send_signal(signal.SIGHUP)  # e.g. a deploy's reload racing a restart
        wait_until("the SIGHUP to be taken or held", lambda: signal_settled(s.proc.pid, signal.SIGHUP))

    sigterm_in_flight(serve, runner, then=hup)
    with capsys.disabled():
        print(f"\n  SIGHUP while draining ({seen['takers']} thread(s) besides the main one could take it): "
              f"the request in flight answered whole; exit 0")


def test_sigterm_during_a_reload_lets_it_finish_then_drains_and_exits_0(serve, bundle, runner, tmp_path, capsys):
    a, b = bundle, shifted_bundle(bundle, tmp_path / "b", delta=1.0)
    # b's manifest checksum is a FIFO the test feeds: while the test holds it, the reload (in
    # serve's main thread) is blocked reading it, an observed state to send SIGTERM in.
    fifo = b / "manifest.json.sha256"
    content = fifo.read_bytes()
    fifo.unlink()
    os.mkfifo(fifo)
    current = tmp_path / "current"
    current.symlink_to(a)
    s = serve(bundle_dir=current)
    check_good(s.port, runner)
    held, release = threading.Event(), threading.Event()

    def feed():
        fd = os.open(fifo, os.O_WRONLY)  # returns once a reader (the reload) opened it
        try:
            held.set()
            release.wait(FAILSAFE)
            plain = b / "checksum.tmp"  # later reads find a plain file: only the first one waits
            plain.write_bytes(content)
            os.replace(plain, fifo)
            os.write(fd, content)
        except BrokenPipeError:  # the reader left: only when the test gave up (see below)
            pass
        finally:
            os.close(fd)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        tmp = tmp_path / "current.new"
        tmp.symlink_to(b)
        os.replace(tmp, current)
        s.proc.send_signal(signal.SIGHUP)
        assert held.wait(FAILSAFE), "failsafe: the reload never opened the manifest checksum"
        s.proc.send_signal(signal.SIGTERM)  # while the main thread is busy reloading
        wait_until("the SIGTERM to be taken or held", lambda: signal_settled(s.proc.pid, signal.SIGTERM))
        release.set()
        line = s.wait_for("reload")
        assert f"reloaded: model {sha_of(a)[:12]} -> {sha_of(b)[:12]}" in line, line
        s.wait_for("stopping (SIGTERM)")
    finally:
        release.set()
        if not held.is_set():  # a feeder still waiting for a reader: give it one
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        feeder.join(FAILSAFE)
    assert s.stop() == 0, s.log
    assert s.log[-1] == "serve: stopped", s.log
    clean_log(s)
    with capsys.disabled():
        print("\n  SIGTERM during a reload (held in a read of the new bundle): the reload finished, "
              "then stopping, exit 0")
