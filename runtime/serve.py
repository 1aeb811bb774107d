"""`serve`: the bundle's model over HTTP/1.1 on the device. Stdlib + numpy + onnxruntime only.

Endpoints: ``POST /predict`` ({"celsius": number | [numbers]} -> {"fahrenheit": [...],
"model": sha256}), ``GET /healthz`` (the self-check records; 200 or 503), ``GET /info``
(the manifest summary), ``GET /metrics`` (Prometheus text). The model is served only after
the bundle passed its self-check; SIGHUP re-checks the bundle path (a ``current`` symlink
may point elsewhere now) and swaps the new model in between requests only if it passes;
SIGTERM finishes the requests in flight and exits 0. Under systemd the listening socket
comes from socket activation (LISTEN_FDS, fd 3) and READY=1 goes to NOTIFY_SOCKET.

Why no web framework: the device keeps two dependencies (numpy, onnxruntime), and every
bound (body, header, time per request, connections) is a few lines here. TLS and richer
auth belong in a reverse proxy in front (Caddy, nginx).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# http.server imports http.client, which imports ssl (OpenSSL: ~4 MB of resident memory)
# for HTTPS clients. The service never speaks TLS (a reverse proxy does): hide ssl during
# that import. http.client then lacks HTTPSConnection in this process; nothing here uses it.
_hide_ssl = "ssl" not in sys.modules
if _hide_ssl:
    sys.modules["ssl"] = None  # type: ignore[assignment]
try:
    import http.server
finally:
    if _hide_ssl and sys.modules.get("ssl", 0) is None:
        del sys.modules["ssl"]

import numpy as np  # noqa: E402

from . import manifest as manifest_mod  # noqa: E402
from .errors import EXIT_CANNOT_SERVE, EXIT_CHECK_FAILED, InputError, RuntimeFailure
from .runner import Runner, selfcheck
from .stream import OUTPUT_FORMAT

SD_LISTEN_FDS_START = 3
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ENDPOINTS = {"/predict": "POST", "/healthz": "GET", "/info": "GET", "/metrics": "GET"}


class ServeError(RuntimeFailure):
    """The service cannot start: the port is taken, the token file is unreadable, ..."""

    exit_code = EXIT_CANNOT_SERVE


@dataclass
class Limits:
    max_body: int = 1 << 20  # bytes of a request body
    max_values: int = 100_000  # Celsius values in one request
    max_header: int = 16 << 10  # bytes of the request line and headers together
    idle_timeout: float = 10.0  # seconds a connection may take to deliver one whole request
    max_connections: int = 64  # connections served at once; more get 503
    drain_timeout: float = 10.0  # seconds SIGTERM waits for requests in flight


def log(msg: str) -> None:
    """One line per event on stderr (journald adds the time)."""
    try:
        sys.stderr.write(f"serve: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# --- the model, as loaded after a passing self-check --------------------------------------


@dataclass
class Model:
    runner: Runner
    sha256: str
    bundle: Path  # the resolved release folder
    summary: dict[str, Any]


def check_and_load(bundle: Path, threads: int) -> tuple[Model | None, list[dict[str, Any]]]:
    """Self-check the bundle (resolved once: a symlink repointed meanwhile changes nothing) and load it."""
    try:
        release = manifest_mod.locate(bundle).resolve()
    except RuntimeFailure as e:
        return None, [{"name": "manifest", "ok": False, "detail": e.message}]
    checks = selfcheck(release, threads)
    if not all(c["ok"] for c in checks):
        return None, checks
    try:
        runner = Runner.from_bundle(release, threads)
    except RuntimeFailure as e:  # changed between the check and the load
        return None, checks + [{"name": "load", "ok": False, "detail": e.message}]
    m = runner.manifest
    sha = m["files"][m["model"]["file"]]
    import numpy
    import onnxruntime

    summary = {
        "model": sha,
        "bundle": str(release),
        "opset": m["model"]["opset"],
        "ir_version": m["model"]["ir_version"],
        "min_onnxruntime": m["model"]["min_onnxruntime"],
        "input": m["model"]["input"],
        "output": m["model"]["output"],
        "valid_input": m["valid_input"],
        "config_sha256": m.get("config_sha256"),
        "versions": {"python": sys.version.split()[0], "numpy": numpy.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "tools": m.get("tools"),
    }
    return Model(runner, sha, release, summary), checks


# --- metrics ---------------------------------------------------------------------------


class Metrics:
    """Counters and a latency histogram, rendered in Prometheus's text exposition format."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.values = 0
        self.reloads = {"ok": 0, "failed": 0}
        self.refused_connections = 0

    def observe(self, endpoint: str, status: int, seconds: float, values: int = 0) -> None:
        i = next((k for k, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        with self.lock:
            key = (endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.buckets[i] += 1
            self.latency_sum += seconds
            self.values += values

    def render(self, state: "State") -> bytes:
        with self.lock:
            requests = dict(self.requests)
            buckets, total_s, values = list(self.buckets), self.latency_sum, self.values
            reloads, refused = dict(self.reloads), self.refused_connections
        out = ["# HELP edge_model_requests_total HTTP requests answered, by endpoint and status.",
               "# TYPE edge_model_requests_total counter"]
        out += [f'edge_model_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(requests.items())]
        out += ["# HELP edge_model_request_duration_seconds Time from a request's first byte to its answer.",
                "# TYPE edge_model_request_duration_seconds histogram"]
        running = 0
        for b, n in zip((*LATENCY_BUCKETS, "+Inf"), buckets):
            running += n
            out.append(f'edge_model_request_duration_seconds_bucket{{le="{b}"}} {running}')
        out += [f"edge_model_request_duration_seconds_sum {total_s:.6f}",
                f"edge_model_request_duration_seconds_count {running}",
                "# HELP edge_model_values_predicted_total Celsius values converted.",
                "# TYPE edge_model_values_predicted_total counter",
                f"edge_model_values_predicted_total {values}",
                "# HELP edge_model_reloads_total SIGHUP reloads, by result.",
                "# TYPE edge_model_reloads_total counter"]
        out += [f'edge_model_reloads_total{{result="{k}"}} {v}' for k, v in sorted(reloads.items())]
        out += ["# HELP edge_model_refused_connections_total Connections answered 503 at the connection limit.",
                "# TYPE edge_model_refused_connections_total counter",
                f"edge_model_refused_connections_total {refused}",
                "# HELP edge_model_info The model being served.",
                "# TYPE edge_model_info gauge",
                f'edge_model_info{{sha256="{state.model.sha256}"}} 1',
                "# HELP edge_model_healthy 1 when the last self-check (start or reload) passed.",
                "# TYPE edge_model_healthy gauge",
                f"edge_model_healthy {int(state.healthy)}",
                "# HELP process_resident_memory_bytes Resident memory of this process.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes {rss_bytes()}"]
        return ("\n".join(out) + "\n").encode()


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# --- the state handlers share ------------------------------------------------------------


@dataclass
class State:
    bundle: Path
    threads: int
    limits: Limits
    model: Model
    checks: list[dict[str, Any]]
    token: bytes | None = None
    healthy: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    stopping: threading.Event = field(default_factory=threading.Event)
    connections: set = field(default_factory=set)
    starting: int = 0  # accepted connections whose thread has not registered yet
    conn_lock: threading.Lock = field(default_factory=threading.Lock)
    slots: threading.BoundedSemaphore | None = None

    def reload(self) -> None:
        """Re-check the bundle path; swap the new model in only if it passes (between requests)."""
        model, checks = check_and_load(self.bundle, self.threads)
        if model is None:
            failed = next(c for c in checks if not c["ok"])
            self.checks, self.healthy = checks, False
            self.metrics.reloads["failed"] += 1
            log(f"reload failed, still serving model {self.model.sha256[:12]}: {failed['name']}: {failed['detail']}")
            return
        old = self.model
        self.model, self.checks, self.healthy = model, checks, True  # one assignment: atomic for readers
        self.metrics.reloads["ok"] += 1
        log(f"reloaded: model {old.sha256[:12]} -> {model.sha256[:12]} from {model.bundle}")


class _DeadlineReader(io.RawIOBase):
    """The connection's input, each recv limited to what is left of the request's time.

    A per-recv timeout alone lets a client that sends one byte a second hold a worker for
    ever; here the whole request (or the wait for the next one) has one deadline.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.deadline = time.monotonic() + 3600

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not complete in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(b)


class _Writer(io.RawIOBase):
    """The connection's output, unbuffered: each answer is one ``sendall``."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sock.sendall(b)
        return len(b)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edge-model"
    sys_version = ""
    default_request_version = "HTTP/1.1"  # so parse_request's own 400/505 have a status line (0.9: a bare body)
    state: State  # set on the server class

    # --- connection life -------------------------------------------------------------

    def setup(self) -> None:
        # Nothing here may raise: finish() (which frees the slot and the registration) runs
        # only after a setup that returned.
        self.state = self.server.state
        self.connection = self.request
        self.idle = True
        self.served = 0  # requests answered on this connection
        self.lock = threading.Lock()
        with self.state.conn_lock:
            self.state.connections.add(self)
            self.state.starting -= 1
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            # One write per answer already; NODELAY so the kernel never holds it back (Nagle
            # meeting the client's delayed ACK costs ~40 ms a request).
            try:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # the client is already gone: handle() will find out
                pass
        self.reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader, 1 << 16)
        self.wfile = _Writer(self.connection)

    def finish(self) -> None:
        with self.state.conn_lock:
            self.state.connections.discard(self)
        if self.server.slots is not None:
            self.server.slots.release()

    def wake_if_idle(self) -> None:
        """On SIGTERM: end a kept-alive connection that waits for its next request.

        A connection that has not sent its first request yet is left to send it (within
        --idle-timeout), and gets its answer with "Connection: close": its client could not
        tell a close now from a refused request, unlike a client reusing a kept-alive one.
        """
        with self.lock:
            if self.idle and self.served:
                try:
                    self.connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def address_string(self) -> str:
        return self.client_address[0] if isinstance(self.client_address, tuple) else "unix"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        pass  # no access log: /metrics counts every request; events are logged by log()

    # --- one request ------------------------------------------------------------------

    def handle_one_request(self) -> None:
        limits = self.state.limits
        self.reader.deadline = time.monotonic() + limits.idle_timeout
        try:
            head = self._read_head(limits.max_header)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if head is None:
            self.close_connection = True
            return
        with self.lock:
            self.idle = False
        self.t0 = time.perf_counter()
        try:
            if head is ...:
                self.close_connection = True
                self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
                self._json(431, {"error": f"request line and headers larger than {limits.max_header} bytes"}, "?")
                return
            real, self.rfile = self.rfile, io.BufferedReader(io.BytesIO(head))
            try:
                self.raw_requestline = self.rfile.readline(65537)
                ok = self.parse_request()  # sends its own 400/505 when not ok
            finally:
                self.rfile = real
            if not ok:
                return
            if self.state.stopping.is_set():
                self.close_connection = True
            self._dispatch()
        finally:
            with self.lock:
                self.idle = True
                self.served += 1

    def _read_head(self, limit: int):
        """The request line and headers as bytes; None at EOF before a request; ... when too large."""
        lines, size = [], 0
        while True:
            line = self.rfile.readline(limit - size + 1)
            if not line:
                return None  # EOF before or inside a head: nothing to answer
            if not lines and line in (b"\r\n", b"\n"):
                continue  # stray CRLF between requests (RFC 9112 2.2)
            lines.append(line)
            size += len(line)
            if size > limit:
                return ...
            if line in (b"\r\n", b"\n"):
                return b"".join(lines)

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        method = ENDPOINTS.get(path)
        if method is None:
            return self._json(404, {"error": f"no such endpoint {path!r}; endpoints: {', '.join(ENDPOINTS)}"}, "other")
        if self.command != method:
            return self._json(405, {"error": f"{path} takes {method}, got {self.command}"}, path, {"Allow": method})
        if path != "/healthz" and not self._authorized():
            self.close_connection = self.close_connection or self.command == "POST"
            return self._json(401, {"error": "missing or wrong bearer token (Authorization: Bearer ...)"}, path,
                              {"WWW-Authenticate": "Bearer"})
        if path == "/predict":
            return self._predict()
        if path == "/healthz":
            s = self.state
            body = {"healthy": s.healthy, "model": s.model.sha256, "bundle": str(s.model.bundle), "checks": s.checks}
            return self._json(200 if s.healthy else 503, body, path)
        if path == "/info":
            return self._json(200, {**self.state.model.summary, "limits": vars(self.state.limits)}, path)
        return self._send(200, self.state.metrics.render(self.state), path, "text/plain; version=0.0.4; charset=utf-8")

    def _authorized(self) -> bool:
        token = self.state.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and compare_digest(value.strip().encode(), token)

    def _predict(self) -> None:
        limits = self.state.limits
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return self._json(411, {"error": "send the body with a Content-Length, not chunked"}, "/predict")
        lengths = self.headers.get_all("Content-Length") or []
        length = lengths[0] if len(set(lengths)) == 1 else (", ".join(lengths) or None)  # two values: 400
        try:
            if not (length.isascii() and length.isdigit()):  # int() would take "+5", " 5", "5_0"
                raise ValueError
            n = int(length)
        except (AttributeError, ValueError):
            self.close_connection = True
            return self._json(411 if length is None else 400,
                              {"error": f"expected a Content-Length header with the body's size, got {length!r}"},
                              "/predict")
        if n > limits.max_body:
            self.close_connection = True  # the body is not read: the connection cannot go on
            return self._json(413, {"error": f"body of {n} bytes, at most {limits.max_body} (--max-body)"}, "/predict")
        try:
            body = self.rfile.read(n)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if len(body) < n:
            self.close_connection = True
            return self._json(400, {"error": f"body ended after {len(body)} of {n} bytes"}, "/predict")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
            return self._json(400, {"error": f"body: not valid JSON ({e})"}, "/predict")
        if not isinstance(doc, dict) or "celsius" not in doc:
            return self._json(400, {"error": 'body: expected {"celsius": number or [numbers]}'}, "/predict")
        values = doc["celsius"]
        count = len(values) if isinstance(values, list) else 1
        if count > limits.max_values:
            return self._json(400, {"error": f"input: {count} values, at most {limits.max_values} per request "
                                             "(--max-values)"}, "/predict")
        model = self.state.model  # one read: a reload between requests swaps it, never during
        try:
            y = model.runner.predict(values)
        except InputError as e:
            return self._json(400, {"error": e.message, "index": e.index}, "/predict")
        # %.9g reads back to the same float32 (as the CLI prints); an output that overflowed
        # float32 (|C| beyond ~1.9e38) is null: JSON has no infinity.
        values_out = y.tolist()
        if np.isfinite(y).all():
            out = ",".join(map(OUTPUT_FORMAT.__mod__, values_out))
        else:
            out = ",".join(OUTPUT_FORMAT % v if v - v == 0 else "null" for v in values_out)
        data = f'{{"fahrenheit":[{out}],"model":"{model.sha256}"}}'.encode()
        self._send(200, data, "/predict", "application/json", values=count)

    # --- answers --------------------------------------------------------------------------

    def _json(self, status: int, doc: dict, endpoint: str, headers: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), endpoint, "application/json", headers=headers)

    def _send(self, status: int, body: bytes, endpoint: str, ctype: str, headers: dict | None = None,
              values: int = 0) -> None:
        """The whole answer in one write."""
        reason = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if self.command == "HEAD" else body))
        except OSError:
            self.close_connection = True
        self.state.metrics.observe(endpoint if endpoint in ENDPOINTS else "other", status,
                                   time.perf_counter() - getattr(self, "t0", time.perf_counter()), values)


# --- servers and sockets ------------------------------------------------------------------


class _Server(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """One thread per connection, at most ``slots`` at once; the excess gets 503 and is closed."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # bursts queue in the kernel instead of overflowing a backlog of 5

    def __init__(self, sock: socket.socket, state: State):
        super().__init__(sock.getsockname(), Handler)
        self.socket = sock
        self.state = state
        self.slots = threading.BoundedSemaphore(state.limits.max_connections)
        state.slots = self.slots

    def fileno(self) -> int:
        return self.socket.fileno()

    def get_request(self):
        return self.socket.accept()

    def shutdown_request(self, request) -> None:
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        request.close()

    def close_request(self, request) -> None:
        request.close()

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.state.metrics.refused_connections += 1
            body = b'{"error": "too many connections; retry"}'
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self.state.conn_lock:
            self.state.starting += 1  # counted until its thread registers it: drain waits for it
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread could be started: give the slot back
            with self.state.conn_lock:
                self.state.starting -= 1
            self.slots.release()
            raise

    def handle_error(self, request, client_address) -> None:
        log(f"error in a connection: {sys.exc_info()[0].__name__}: {sys.exc_info()[1]}")

    def server_close(self) -> None:
        self.socket.close()


def listening_socket(host: str, port: int, unix: str | None) -> tuple[socket.socket, str]:
    """The socket systemd passed (LISTEN_FDS), else a new one on ``unix`` or ``host:port``."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0") or 0) >= 1:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):  # not for our children
            os.environ.pop(var, None)
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
        return sock, f"{describe(sock)} (socket from systemd)"
    try:
        if unix:
            path = Path(unix)
            if path.is_socket():
                path.unlink()  # a stale socket from an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        sock.listen(_Server.request_queue_size)
    except OSError as e:
        where = unix or f"{host}:{port}"
        raise ServeError(f"serve: cannot listen on {where}: {e.strerror or e}") from None
    return sock, describe(sock)


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    return f"unix:{name}" if sock.family == socket.AF_UNIX else f"{name[0]}:{name[1]}"


def notify(message: str) -> None:
    """sd_notify: one datagram to $NOTIFY_SOCKET (a leading @ is the abstract namespace)."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return
    address = "\0" + where[1:] if where.startswith("@") else where
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        log(f"cannot notify systemd at {where}: {e.strerror or e}")


def compare_digest(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (hmac's), imported only when a token is in use: hmac loads OpenSSL."""
    import hmac

    return hmac.compare_digest(a, b)


def read_token(path: str) -> bytes:
    try:
        token = Path(path).read_bytes().strip()
    except OSError as e:
        raise ServeError(f"serve: --token-file {path}: cannot read: {e.strerror or e}") from None
    if not token or any(c < 0x21 or c > 0x7E for c in token):
        raise ServeError(f"serve: --token-file {path}: expected one line of printable ASCII, no spaces")
    return token


def accept_loop(server: _Server, cpu: str) -> None:
    """The accept loop, on one CPU unless ``cpu`` is "any"; the connection threads it starts inherit it.

    Each request releases the GIL inside onnxruntime; with the connection threads spread
    over several CPUs, each release hands the GIL to a thread on another CPU and the caller
    then waits to get it back: at 8 clients that halved throughput (README, "Benchmarks").
    Python runs one thread at a time anyway. The main thread stays unpinned, so an
    onnxruntime thread pool (--threads > 1, made at start or reload) keeps every CPU.
    """
    if cpu != "any":
        try:
            allowed = sorted(os.sched_getaffinity(0))
            pick = allowed[-1] if cpu == "auto" else int(cpu)
            if cpu != "auto" or len(allowed) > 1:
                os.sched_setaffinity(0, {pick})  # pid 0: this thread only (Linux)
        except (AttributeError, OSError, ValueError) as e:  # not Linux, a cpuset forbids it
            log(f"cannot pin the connection threads to CPU {cpu}: {e}; serving unpinned")
    server.serve_forever(poll_interval=0.5)


def run(bundle: str | None, threads: int, host: str, port: int, unix: str | None, token_file: str | None,
        limits: Limits, cpu: str = "auto") -> int:
    """Self-check, listen, serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""
    token = read_token(token_file) if token_file else None
    path = Path(bundle) if bundle else manifest_mod.locate(None)
    model, checks = check_and_load(path, threads)
    if model is None:
        failed = next(c for c in checks if not c["ok"])
        print(f"error: serve: selfcheck {failed['name']}: {failed['detail']}", file=sys.stderr)
        return EXIT_CHECK_FAILED
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
    state = State(path, threads, limits, model, checks, token)
    server = _Server(sock, state)
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
            state.reload()
            notify("READY=1")
    finally:
        notify("STOPPING=1")
        log(f"stopping ({signal.Signals(sig).name}): finishing requests in flight")
        state.stopping.set()
        server.shutdown()  # no more accepts; queued connections stay in the kernel for the next server
        server.server_close()
        left = drain(state, limits.drain_timeout)
        log("stopped" if not left else f"stopped; {left} connection(s) cut after {limits.drain_timeout:g} s")
    return 0


def drain(state: State, timeout: float) -> int:
    """Wake idle kept-alive connections, wait for busy ones; return how many were still open."""
    deadline = time.monotonic() + timeout
    while True:
        with state.conn_lock:
            open_now, starting = list(state.connections), state.starting
        for h in open_now:
            h.wake_if_idle()
        if not (open_now or starting) or time.monotonic() >= deadline:
            return len(open_now) + starting
        time.sleep(0.01)  # polling the set of open connections, bounded by the deadline
