"""`serve`'s systemd watchdog: WATCHDOG=1 only while the service can answer (runtime/serve.py, ``Watchdog``).

Real `python -m runtime serve` processes, each with a datagram socket of the test's as its
NOTIFY_SOCKET and WATCHDOG_USEC=500000 (pings every 0.25 s). Every wait is for a message or
a log line. Where a test asserts that no ping comes (a stopped process, a stuck model call,
a watchdog meant for another process), it waits a window of several intervals: such a
verdict cannot fail on a slow machine (a stopped process cannot send, a held call cannot
return), only a broken watchdog fails it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from runtime import sd, serve
from tests.support.core import wait_until
from tests.support.server import request, Server

WATCHDOG_USEC = 500_000
INTERVAL = WATCHDOG_USEC / 1e6
QUIET = 4 * INTERVAL  # the window in which no ping may come: 8 ping periods
FAILSAFE = 120.0  # each awaited message comes long before; only a hang reaches it
PING = b"WATCHDOG=1"

# `serve` with the model's onnxruntime session behind a gate: while the file $TEST_GATE
# exists, every model call (the watchdog's proof, a request) creates $TEST_GATE.held and waits.
# The self-check at start has run by then on the real session. cwd is the bundle, so
# `runtime` is the bundle's own (sys.path[0] is '' with -c).
GATED = """\
import os, sys, time
from runtime import cli, serve

GATE = os.environ["TEST_GATE"]
real = serve.check_and_load


class Gated:
    def __init__(self, session):
        self.session = session

    def run(self, *args, **kw):
        if os.path.exists(GATE):
            open(GATE + ".held", "w").close()
            while os.path.exists(GATE):
                time.sleep(0.01)
        return self.session.run(*args, **kw)


def gated(*args, **kw):
    model, checks = real(*args, **kw)
    if model is not None:
        model.runner.session = Gated(model.runner.session)
    return model, checks


serve.check_and_load = gated
sys.exit(cli.main(["serve", *sys.argv[1:]]))
"""


class Notifications:
    """The test's NOTIFY_SOCKET: every datagram the server sends, in order (``seen``)."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen: list[bytes] = []

    def next(self, timeout: float = FAILSAFE) -> bytes:
        self.sock.settimeout(timeout)
        msg = self.sock.recv(256)
        self.seen.append(msg)
        return msg

    def pings(self, n: int) -> None:
        """Wait for ``n`` more messages, each a ping."""
        got = [self.next() for _ in range(n)]
        assert got == [PING] * n, got

    def until(self, message: bytes) -> list[bytes]:
        """The messages up to and including ``message``, pings left out."""
        out = []
        while True:
            msg = self.next()
            if msg != PING:
                out.append(msg)
            if msg == message:
                return out

    def queued(self) -> list[bytes]:
        """The messages already sent and not read yet (all of them, once the sender is stopped or gone)."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(256))
        except BlockingIOError:
            pass
        self.seen += out
        return out

    def none_within(self, seconds: float) -> bool:
        """True when nothing arrives for ``seconds`` (the caller knows nothing may)."""
        try:
            msg = self.next(timeout=seconds)
        except socket.timeout:  # TimeoutError since Python 3.10, its own class before
            return True
        raise AssertionError(f"got {msg!r} when nothing may come")

    def close(self) -> None:
        self.sock.close()


class WatchedServer(Server):
    """Server (tests/conftest.py) started from any argv: the sh wrapper, the gated serve."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, "PYTHONPATH": "", **env},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log: list[str] = []
        self.where = self.wait_for("serving model ").rsplit(" on ", 1)[1].split(" (")[0]
        host, _, port = self.where.rpartition(":")
        self.host, self.port = host, int(port)


@pytest.fixture
def watched(bundle, tmp_path):
    """``watched(notify, *prefix, module_args=..., **env)``: a serve on the test's bundle, port 0,
    with the watchdog asked for (WATCHDOG_USEC) and ``notify`` as NOTIFY_SOCKET; stopped at the end."""
    started = []

    def start(notify: Notifications, *argv: str, **env: str) -> WatchedServer:
        argv = argv or (sys.executable, "-m", "runtime", "serve")
        s = WatchedServer([*argv, "--bundle", str(bundle), "--port", "0"], bundle,
                          {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC), **env})
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGCONT)  # a test that failed while it was stopped
        s.stop()


@pytest.fixture
def notify(tmp_path):
    n = Notifications(tmp_path / "notify")
    yield n
    n.close()


def test_pings_come_after_ready_keep_coming_through_a_reload_and_end_before_stopping(watched, notify):
    # WATCHDOG_PID set to the server's own PID, as systemd sets it: sh execs python in its
    # own process, so $$ is python's PID.
    s = watched(notify, "sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", sys.executable, "-m", "runtime", "serve")
    assert notify.next() == b"READY=1"  # nothing before it
    notify.pings(5)
    s.proc.send_signal(signal.SIGHUP)
    assert notify.until(b"READY=1") == [b"RELOADING=1", b"READY=1"]
    notify.pings(3)  # and on after the reload
    assert s.stop() == 0
    rest = notify.queued()  # the process is gone: everything it sent is here
    assert [m for m in rest if m != PING] == [b"STOPPING=1"] and rest[-1] == b"STOPPING=1", rest
    assert set(notify.seen) == {b"READY=1", PING, b"RELOADING=1", b"STOPPING=1"}
    said = [ln for ln in s.log if ln.startswith("serve: watchdog")]  # one line at start, none per ping
    assert said == ["serve: watchdog: WATCHDOG=1 every 0.25 s while the model answers and the accept loop turns "
                    "(WatchdogSec=0.5s)"], said


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is in the stopped state (T), as /proc shows it."""
    tasks = Path(f"/proc/{pid}/task")
    states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
    return bool(states) and all(st == "T" for st in states)


def test_a_stopped_server_sends_no_ping_and_pings_again_once_continued(watched, notify):
    s = watched(notify)  # WATCHDOG_PID unset: the watchdog is this process's (sd_watchdog_enabled(3))
    assert notify.next() == b"READY=1"
    notify.pings(2)
    s.proc.send_signal(signal.SIGSTOP)
    wait_until("every thread of the server stopped", lambda: _stopped(s.proc.pid))
    assert set(notify.queued()) <= {PING}  # sent before it stopped
    assert notify.none_within(QUIET)  # a stopped process cannot ping: what systemd's watchdog catches
    s.proc.send_signal(signal.SIGCONT)
    assert notify.next() == PING
    status, _, doc = request(s, "POST", "/predict", {"celsius": [100]})
    assert status == 200 and doc["fahrenheit"][0] == pytest.approx(212, abs=1)


def test_a_stuck_model_call_stops_the_pings_while_http_still_answers(watched, notify, tmp_path):
    gate = tmp_path / "gate"
    s = watched(notify, sys.executable, "-c", GATED, TEST_GATE=str(gate))
    assert notify.next() == b"READY=1"
    notify.pings(2)
    gate.touch()
    wait_until("a model call held at the gate", (tmp_path / "gate.held").exists, failsafe=FAILSAFE)
    # ... the watchdog's proof (nothing else calls the model here): inside the model call
    assert set(notify.queued()) <= {PING}  # sent before the proof that is held
    assert notify.none_within(QUIET)
    # The process runs and its HTTP side answers: Restart= and a /healthz probe see nothing wrong.
    assert s.proc.poll() is None
    assert request(s, "GET", "/healthz")[0] == 200
    gate.unlink()
    assert notify.next() == PING
    status, _, doc = request(s, "POST", "/predict", {"celsius": [0]})
    assert status == 200 and doc["fahrenheit"][0] == pytest.approx(32, abs=1)
    assert not any("no ping" in ln for ln in s.log)  # held, not failed: the accept loop went on turning


def test_a_watchdog_meant_for_another_process_gets_no_ping(watched, notify, tmp_path):
    control = Notifications(tmp_path / "control")
    try:
        other = watched(notify, WATCHDOG_PID=str(os.getpid()))  # the test's PID: not the server's
        assert notify.next() == b"READY=1"
        watched(control)  # the same server, its watchdog its own: the clock for the window below
        assert control.next() == b"READY=1"
        control.pings(int(QUIET / (INTERVAL / 2)))  # 8 ping periods, while `other` ran beside it
        assert notify.queued() == []
        assert other.stop() == 0
        assert notify.queued() == [b"STOPPING=1"]
        assert not any(ln.startswith("serve: watchdog") for ln in other.log)
    finally:
        control.close()


# --- the parts, in this process ---------------------------------------------------------------

@pytest.mark.parametrize("env, expected", [
    ({}, (None, None)),
    ({"WATCHDOG_USEC": "500000"}, (0.5, None)),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "{pid}"}, (20.0, None)),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}, (None, None)),  # another process's
    ({"WATCHDOG_USEC": "0"}, (None, "WATCHDOG_USEC='0': expected a positive number of microseconds")),
    ({"WATCHDOG_USEC": "0.5"}, (None, "WATCHDOG_USEC='0.5': expected a positive number of microseconds")),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "x"}, (None, "WATCHDOG_PID='x': expected a process ID")),
], ids=["unset", "usec", "our-pid", "other-pid", "zero", "not-an-integer", "bad-pid"])
def test_watchdog_seconds_reads_the_environment_as_sd_watchdog_enabled(monkeypatch, env, expected):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(pid=os.getpid()))
    seconds, why = sd.watchdog_seconds()
    assert seconds == expected[0]
    assert (why is None) if expected[1] is None else why.startswith(expected[1]), why
    assert "WATCHDOG_USEC" not in os.environ and "WATCHDOG_PID" not in os.environ  # not for our children


class _Runner:
    def __init__(self):
        self.calls = []

    def predict_unchecked(self, x):
        self.calls.append(x.shape)
        return x


def _watchdog(alive: bool, turned_ago: float) -> tuple[serve.Watchdog, _Runner]:
    runner = _Runner()
    model = types.SimpleNamespace(runner=runner, signature=types.SimpleNamespace(shape=(8, 8, 1)))
    models = types.SimpleNamespace(snapshot=types.SimpleNamespace(model=model))
    server = types.SimpleNamespace(turned=time.monotonic() - turned_ago)
    loop = threading.Thread(target=lambda: None)
    if alive:
        loop = types.SimpleNamespace(is_alive=lambda: True)
    return serve.Watchdog(20.0, models, server, loop), runner


def test_the_proof_needs_a_live_accept_loop_that_turns_and_a_model_call_that_returns():
    w, runner = _watchdog(alive=True, turned_ago=0.0)
    assert w.proof() is None and runner.calls == [(1, 8, 8, 1)]  # one example of the model's shape
    w, runner = _watchdog(alive=False, turned_ago=0.0)
    assert w.proof() == "the accept loop has ended" and runner.calls == []
    w, runner = _watchdog(alive=True, turned_ago=25.0)
    assert w.proof().startswith("the accept loop has not gone round for 25") and runner.calls == []
