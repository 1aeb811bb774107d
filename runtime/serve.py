"""`serve`: the bundle's model over HTTP/1.1 on the device. Stdlib + numpy + onnxruntime only.

Endpoints: ``POST /predict`` ({"inputs": batch or one example} -> {"outputs": [...],
"labels": [...] (a classification), "model": sha256}; a model of one named feature in and one
named value out also {"<feature>": number | [numbers]} -> {"<output name>": [...], "model":
sha256}, the tutorial's {"celsius": ...} -> {"fahrenheit": [...]}), ``GET /healthz``
(the self-check records; 200 or 503), ``GET /info`` (the manifest summary), ``GET /metrics``
(Prometheus text), and the Open Inference Protocol v2 (KServe, Triton: ``/v2``,
``/v2/health/live|ready``, ``/v2/models/<name>[/ready|/infer]``). The model is served only after
the bundle passed its self-check; SIGHUP re-checks the bundle path (a ``current`` symlink
may point elsewhere now) and swaps the new model in between requests only if it passes;
SIGTERM finishes the requests in flight and exits 0. Under systemd the listening socket
comes from socket activation (LISTEN_FDS, fd 3), READY=1 goes to NOTIFY_SOCKET, and when the
unit sets WatchdogSec= a ``Watchdog`` sends WATCHDOG=1 only while the service can answer.

This module is the entry (``run``: check, listen, signals, drain). The parts, one job each:
``serve_state`` (the checked model as one immutable snapshot, reload), ``serve_metrics``
(counters, Prometheus text), ``serve_http`` (the transport: connections, limits, deadlines,
reading a request and writing its answer), ``serve_app`` (the endpoints: a request's method,
path, headers and body to its answer, no sockets), ``codec`` (a predict body to the model's
input and its output to the answer: the only model-specific part), ``serve_v2`` (the v2
protocol's requests and answers) and ``sd`` (systemd's socket activation and sd_notify).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import manifest as manifest_mod
from . import sd
from .errors import EXIT_CHECK_FAILED
from .serve_http import Limits, ServeError, Server, accept_loop, drain, listening_socket, log
from .serve_metrics import Metrics
from .serve_state import Model, ModelState, check_and_load  # noqa: F401 - Model: re-exported
from .signature import MultiSignature


def notify(message: str) -> None:
    """sd_notify (see ``sd.notify``); a failure is logged, never fatal."""
    failed = sd.notify(message)
    if failed:
        log(failed)


class Watchdog:
    """systemd's watchdog (WatchdogSec=): WATCHDOG=1 at half the interval, each one earned.

    Before each ping the thread proves that the service can answer a request now:
    1. the accept loop's thread is alive and went round within the last interval (it goes
       round at least every quarter interval: ``run`` sets its poll_interval so);
    2. the current snapshot's model answers one known input (zeros of one example's
       shape, run unvalidated: only that the call returns matters) on the very runner and
       onnxruntime session the requests use.
    The proof runs in this thread, synchronously, and the ping follows it: a model call that
    hangs (onnxruntime stuck, a lock the request path deadlocked on) hangs the proof, so no
    ping follows and systemd kills the service WatchdogSec after the last one. That is the
    proof's bound: no timer of its own, and no abandoned proof threads piling up. A proof
    that fails without hanging (the accept loop ended or is wedged, the call raised) sends
    no ping either and says why in one log line (and again once it passes); a stopped
    process (SIGSTOP) sends nothing at all. Nothing is logged per ping.

    Pings start after READY=1 (``start``) and end before STOPPING=1 (``stop``: no ping
    can follow it, even from a proof that was under way).

    A reload (SIGHUP) runs in the main thread, not here: the pings go on meanwhile, proved
    on the old model, which is what requests get until the swap. The only thing the
    two share is the GIL, and the reload's long steps release it (hashing the files,
    ssh-keygen for a signature, onnxruntime building its session: this thread never
    waited longer than 0.09 s while a 108 MB model loaded on a PC), so under normal
    conditions a reload delays a ping by a fraction of a second, far below the interval.
    """

    def __init__(self, interval: float, models: ModelState, server: Server, loop: threading.Thread):
        self.interval, self.models, self.server, self.loop = interval, models, server, loop
        self._lock = threading.Lock()  # held from the check of _stopped to the ping's send
        self._stopped = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        log(f"watchdog: WATCHDOG=1 every {self.interval / 2:g} s while the model answers and the accept loop "
            f"turns (WatchdogSec={self.interval:g}s)")
        self._thread.start()

    def stop(self) -> None:
        """No ping is sent once this returns (a proof under way finds the flag and sends none)."""
        with self._lock:
            self._stopped = True
        self._wake.set()

    def proof(self) -> str | None:
        """None when the service can answer now, else why it cannot (may block: see the class)."""
        if not self.loop.is_alive():
            return "the accept loop has ended"
        still = time.monotonic() - self.server.turned
        if still > self.interval:
            return f"the accept loop has not gone round for {still:.1f} s"
        model = self.models.snapshot.model  # one read, as a request reads it
        sig = model.signature
        if isinstance(sig, MultiSignature):  # zeros of one example per input, by name
            model.runner.predict_unchecked({t.name: np.zeros((1, *t.shape), dtype=np.float32) for t in sig.inputs})
        else:
            model.runner.predict_unchecked(np.zeros((1, *sig.shape), dtype=np.float32))
        return None

    def _run(self) -> None:
        failing = False  # logged when it changes only: one line when the pings stop, one when they resume
        while True:
            try:
                why = self.proof()
            except Exception as e:  # the model call raised: it cannot answer either
                why = f"the model call failed: {type(e).__name__}: {e}"
            with self._lock:
                if self._stopped:
                    return
                if why is None:
                    why = sd.notify("WATCHDOG=1")
            if bool(why) != failing:
                failing = bool(why)
                log(f"watchdog: no ping: {why}" if why else "watchdog: pinging again")
            if self._wake.wait(self.interval / 2):
                return


def read_token(path: str) -> bytes:
    try:
        token = Path(path).read_bytes().strip()
    except OSError as e:
        raise ServeError(f"serve: --token-file {path}: cannot read: {e.strerror or e}") from None
    if not token or any(c < 0x21 or c > 0x7E for c in token):
        raise ServeError(f"serve: --token-file {path}: expected one line of printable ASCII, no spaces")
    return token


def _check_and_load(bundle: Path, threads: int, trusted_keys: str | None = None):
    # Looked up here at each call, start and reload alike: bench/const_server.py replaces
    # ``serve.check_and_load`` to serve a constant model through this very code.
    return check_and_load(bundle, threads, trusted_keys)


def run(bundle: str | None, threads: int, host: str, port: int, unix: str | None, token_file: str | None,
        limits: Limits, cpu: str = "auto", trusted_keys: str | None = None) -> int:
    """Self-check, listen, serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code
    (a failed start: the failed check's, as `selfcheck` exits)."""
    token = read_token(token_file) if token_file else None
    path = Path(bundle) if bundle else manifest_mod.locate(None)
    model, checks = _check_and_load(path, threads, trusted_keys)
    if model is None:
        failed = next(c for c in checks if not c["ok"])
        print(f"error: serve: selfcheck {failed['name']}: {failed['detail']}", file=sys.stderr)
        return failed.get("exit_code", EXIT_CHECK_FAILED)
    # Signals reach the main thread through a wakeup socket. Threads that started before this
    # (numpy's BLAS pool, at its import) do not block them: with sigwait alone, one that arrives
    # while the main thread reloads or drains goes to such a thread, whose default action ends
    # the process. With a handler, whichever thread takes it writes its number to the socket.
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    for s in signals:
        signal.signal(s, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # the threads started below leave them to main
    sock, where = listening_socket(host, port, unix)
    interval, unreadable = sd.watchdog_seconds()
    if unreadable:
        log(unreadable)
    metrics = Metrics()
    models = ModelState(path, threads, model, checks, metrics, load=_check_and_load, trusted_keys=trusted_keys)
    server = Server(sock, limits, models, metrics, token)
    # Under a watchdog the loop must go round well within its interval (Watchdog.proof).
    poll = min(0.5, interval / 4) if interval else 0.5
    loop = threading.Thread(target=accept_loop, args=(server, cpu, poll), name="accept")
    loop.start()
    watchdog = Watchdog(interval, models, server, loop) if interval else None
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    log(f"serving model {model.sha256[:12]} from {model.bundle} on {where} (selfcheck passed)")
    notify("READY=1")
    if watchdog:  # after READY=1, as systemd starts its timer then; signals left to main, as above
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        watchdog.start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    sig = signal.SIGTERM
    try:
        while True:
            sig = wake_r.recv(1)[0]
            if sig not in signals:
                continue
            if sig != signal.SIGHUP:
                break
            notify("RELOADING=1")
            log(models.reload()[1])
            notify("READY=1")
    finally:
        if watchdog:
            watchdog.stop()
        notify("STOPPING=1")
        log(f"stopping ({signal.Signals(sig).name}): finishing requests in flight")
        server.stopping.set()
        server.shutdown()  # no more accepts; queued connections stay in the kernel for the next server
        server.server_close()
        left = drain(server, limits.drain_timeout)
        # Signals from here on (a second SIGTERM while the process exits) are ignored and written
        # nowhere: the wakeup socket closes, and its descriptor's number may be another file's next.
        signal.set_wakeup_fd(-1)
        wake_r.close()
        wake_w.close()
        log("stopped" if not left else f"stopped; {left} connection(s) cut after {limits.drain_timeout:g} s")
    return 0
