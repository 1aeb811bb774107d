"""`serve`: the bundle's model over HTTP/1.1 on the device. Stdlib + numpy + onnxruntime only.

Endpoints: ``POST /predict`` ({"inputs": batch or one example} -> {"outputs": [...],
"labels": [...] (a classification), "model": sha256}; the tutorial's model also
{"celsius": number | [numbers]} -> {"fahrenheit": [...], "model": sha256}), ``GET /healthz``
(the self-check records; 200 or 503), ``GET /info`` (the manifest summary), ``GET /metrics``
(Prometheus text), and the Open Inference Protocol v2 (KServe, Triton: ``/v2``,
``/v2/health/live|ready``, ``/v2/models/<name>[/ready|/infer]``). The model is served only after
the bundle passed its self-check; SIGHUP re-checks the bundle path (a ``current`` symlink
may point elsewhere now) and swaps the new model in between requests only if it passes;
SIGTERM finishes the requests in flight and exits 0. Under systemd the listening socket
comes from socket activation (LISTEN_FDS, fd 3) and READY=1 goes to NOTIFY_SOCKET.

This module is the entry (``run``: check, listen, signals, drain). The parts, one job each:
``serve_state`` (the checked model as one immutable snapshot, reload), ``serve_metrics``
(counters, Prometheus text), ``serve_http`` (connections, limits, deadlines, endpoints),
``codec`` (a predict body to the model's input and its output to the answer: the only
model-specific part), ``serve_v2`` (the v2 protocol's requests and answers) and ``sd`` (systemd's socket activation and sd_notify).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from pathlib import Path

from . import manifest as manifest_mod
from . import sd
from .errors import EXIT_CHECK_FAILED
from .serve_http import Limits, ServeError, Server, accept_loop, drain, listening_socket, log
from .serve_metrics import Metrics
from .serve_state import Model, ModelState, check_and_load  # noqa: F401 - Model: re-exported


def notify(message: str) -> None:
    """sd_notify (see ``sd.notify``); a failure is logged, never fatal."""
    failed = sd.notify(message)
    if failed:
        log(failed)


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
    metrics = Metrics()
    models = ModelState(path, threads, model, checks, metrics, load=_check_and_load, trusted_keys=trusted_keys)
    server = Server(sock, limits, models, metrics, token)
    loop = threading.Thread(target=accept_loop, args=(server, cpu), name="accept")
    loop.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    log(f"serving model {model.sha256[:12]} from {model.bundle} on {where} (selfcheck passed)")
    notify("READY=1")
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
        notify("STOPPING=1")
        log(f"stopping ({signal.Signals(sig).name}): finishing requests in flight")
        server.stopping.set()
        server.shutdown()  # no more accepts; queued connections stay in the kernel for the next server
        server.server_close()
        left = drain(server, limits.drain_timeout)
        log("stopped" if not left else f"stopped; {left} connection(s) cut after {limits.drain_timeout:g} s")
    return 0
