"""`serve`'s HTTP/1.1 transport: connections, their limits and deadlines. Stdlib only.

One thread per connection (at most --max-connections; the next gets 503 and is closed), one
deadline per request (--idle-timeout: the whole request, or the wait for the next one on a
kept-alive connection), bounded heads and bodies, one write per answer. HTTP/1.0 clients get
keep-alive when they ask for it (``Connection: keep-alive``), and are told so in the answer.
Each request goes to the endpoints, ``serve_app.App``, with the one ``serve_state.Snapshot``
it reads for it: the app answers from the request line and headers, or names the endpoint
whose body this module then reads (by its Content-Length, within --max-body) and hands over.
A body the app answered without (404, 405, a GET that has one) is drained, or the connection
closed: it is never read as the next request (``Handler._discard_body``).

Why no web framework: the device keeps two dependencies (numpy, onnxruntime), and every
bound (body, header, time per request, connections) is a few lines here. TLS and richer
auth belong in a reverse proxy in front (Caddy, nginx).
"""

from __future__ import annotations

import io
import os
import selectors
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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

from . import sd  # noqa: E402
from .errors import EXIT_CANNOT_SERVE, RuntimeFailure  # noqa: E402
from .serve_app import Answer, App, json_answer  # noqa: E402
from .serve_metrics import Metrics  # noqa: E402
from .serve_state import ModelState  # noqa: E402


class ServeError(RuntimeFailure):
    """The service cannot start: the port is taken, the token file is unreadable, ..."""

    exit_code = EXIT_CANNOT_SERVE


@dataclass
class Limits:
    max_body: int = 1 << 20  # bytes of a request body
    max_values: int = 100_000  # input values in one request, over all its examples
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
    server: "Server"

    # --- connection life -------------------------------------------------------------

    def setup(self) -> None:
        # Nothing here may raise: finish() (which frees the slot and the registration) runs
        # only after a setup that returned.
        self.connection = self.request
        self.idle = True
        self.served = 0  # requests answered on this connection
        self.lock = threading.Lock()
        with self.server.conn_lock:
            self.server.connections.add(self)
            self.server.starting -= 1
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
        with self.server.conn_lock:
            self.server.connections.discard(self)
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
        limits = self.server.limits
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
                self._json(431, {"error": f"request line and headers larger than {limits.max_header} bytes"}, "other")
                return
            real, self.rfile = self.rfile, io.BufferedReader(io.BytesIO(head))
            try:
                self.raw_requestline = self.rfile.readline(65537)
                ok = self.parse_request()  # sends its own 400/505 when not ok
            finally:
                self.rfile = real
            if not ok:
                return
            if self.server.stopping.is_set():
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
        app = self.server.app
        snapshot = self.server.models.snapshot  # one read: this request keeps it whatever a reload swaps in
        answer = app.head(self.command, self.path, self.headers, snapshot)
        if isinstance(answer, str):  # a POST's endpoint: its body next, within the limits
            body = self._body(answer)
            if body is None:
                return
            answer = app.answer(answer, self.headers, body, snapshot)
        elif not answer.close:  # answered from the head: a body it came with must not be read as a request
            self._discard_body()
        self._send(answer)

    def _content_length(self) -> tuple[str | None, int | None]:
        """(the Content-Length as given: None when absent, several different values joined; its
        value, None unless it is one plain decimal number)."""
        lengths = self.headers.get_all("Content-Length") or []
        length = lengths[0] if len(set(lengths)) == 1 else (", ".join(lengths) or None)  # two values: refused
        if length is None or not (length.isascii() and length.isdigit()):  # int() would take "+5", " 5", "5_0"
            return length, None
        return length, int(length)

    def _discard_body(self) -> None:
        """Read and drop the body of a request answered without it (404, 405, any GET that
        comes with a Content-Length), so the connection goes on at the next request.

        Left unread, the body would be parsed as the next request line (a 400 and a close, and
        a request pipelined behind it lost). HTTP servers either drain it or close; this one
        drains a body it could have read anyway, framed by a Content-Length within --max-body,
        under the request's one deadline: so the client's pipelined requests are answered, and
        a client still sending its body is not reset by a close under it before it reads the
        answer (Go's net/http and nginx drain too). Anything else (chunked, a bad or too large
        Content-Length, or the body ending or stalling early) closes the connection after the
        answer, as the transport's refusals of a body do. The app's own refusals that say
        ``close`` (401, an unknown v2 model) keep it: a client without the token gets nothing
        read from it.
        """
        if not self.headers.get("Transfer-Encoding") and self.headers.get("Content-Length") is None:
            return  # no body: every ordinary GET
        _, n = self._content_length()
        if self.headers.get("Transfer-Encoding") or n is None or n > self.server.limits.max_body:
            self.close_connection = True
            return
        try:
            while n:
                chunk = self.rfile.read(min(n, 1 << 16))
                if not chunk:
                    break
                n -= len(chunk)
        except (TimeoutError, OSError):
            pass
        if n:
            self.close_connection = True

    def _body(self, endpoint: str) -> bytes | None:
        """The request's body, read by its Content-Length; None once the refusal is sent."""
        limits = self.server.limits
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return self._json(411, {"error": "send the body with a Content-Length, not chunked"}, endpoint)
        length, n = self._content_length()
        if n is None:
            self.close_connection = True
            return self._json(411 if length is None else 400,
                              {"error": f"expected a Content-Length header with the body's size, got {length!r}"},
                              endpoint)
        if n > limits.max_body:
            self.close_connection = True  # the body is not read: the connection cannot go on
            return self._json(413, {"error": f"body of {n} bytes, at most {limits.max_body} (--max-body)"}, endpoint)
        try:
            body = self.rfile.read(n)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if len(body) < n:
            self.close_connection = True
            return self._json(400, {"error": f"body ended after {len(body)} of {n} bytes"}, endpoint)
        return body

    # --- answers --------------------------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """parse_request's own refusals (400, 431, 505) as JSON, like every other answer, and
        always with a status line: the stdlib's HTML page is a bare body when the refused
        request line ended in HTTP/0.9 (``POST \\x85 x HTTP/0.9``: str.split() splits at
        U+0085, so four words), which no client can read as an answer."""
        self.close_connection = True
        self.request_version = "HTTP/1.1"
        self._json(code, {"error": message or self.responses.get(code, ("",))[0]}, "other")

    def _json(self, status: int, doc: dict, endpoint: str) -> None:
        """A refusal of the transport's own (the head, the body's framing) as JSON."""
        self._send(json_answer(status, doc, endpoint))

    def _send(self, answer: Answer) -> None:
        """The whole answer in one write."""
        status = answer.status
        body = answer.body
        reason = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {answer.ctype}", f"Content-Length: {len(body)}"]
        if answer.headers:
            lines += [f"{k}: {v}" for k, v in answer.headers.items()]
        if answer.close:
            self.close_connection = True
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            # parse_request kept this connection open because the client asked (Connection:
            # keep-alive); an HTTP/1.0 client keeps it only when the answer says so too, and
            # otherwise waits for a close (ab -k: one --idle-timeout per request).
            lines.append("Connection: keep-alive")
        # Counted before it is sent: a client that has read this answer and asks /metrics next
        # (on any connection) must find it counted, not race this thread to the counter.
        self.server.metrics.observe(answer.endpoint, status,
                                    time.perf_counter() - getattr(self, "t0", time.perf_counter()), answer.values)
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if self.command == "HEAD" else body))
        except OSError:
            self.close_connection = True


# --- servers and sockets ------------------------------------------------------------------


class Server(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """One thread per connection, at most ``slots`` at once; the excess gets 503 and is closed.

    Holds what the connections share: the limits, the model state, the metrics, the token,
    the endpoints (``app``), the stop flag and the set of open connections (which ``drain``
    waits for).
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # bursts queue in the kernel instead of overflowing a backlog of 5

    def __init__(self, sock: socket.socket, limits: Limits, models: ModelState, metrics: Metrics,
                 token: bytes | None = None):
        super().__init__(sock.getsockname(), Handler)
        self.socket = sock
        self.limits, self.models, self.metrics, self.token = limits, models, metrics, token
        self.app = App(limits, metrics, token)
        self.stopping = threading.Event()
        self.connections: set[Handler] = set()
        self.starting = 0  # accepted connections whose thread has not registered yet
        self.conn_lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        self.turned = time.monotonic()  # when the accept loop last went round (the watchdog reads it)
        # serve_forever's own stop: a flag, and a socket that wakes its wait at once
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop_loop = False
        self._loop_done = threading.Event()

    def service_actions(self) -> None:
        # serve_forever calls this once per turn of the accept loop: after each accept, and
        # after each poll_interval without one. A loop that stops turning is wedged.
        super().service_actions()
        self.turned = time.monotonic()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """socketserver's accept loop, stopped by ``shutdown`` at once: socketserver's own notices
        a shutdown only when its wait ends, up to ``poll_interval`` later (0.5 s added to every
        stop, each restart by systemd or a deploy among them). It still goes round at least every
        ``poll_interval`` seconds (``service_actions``)."""
        self._loop_done.clear()
        try:
            while self._wake_r.recv(4096):  # a wake left by an earlier stop: not this loop's
                pass
        except BlockingIOError:
            pass
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stop_loop:
                    ready = selector.select(poll_interval)
                    if self._stop_loop:
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self._handle_request_noblock()
                    self.service_actions()
        finally:
            self._stop_loop = False
            self._loop_done.set()

    def shutdown(self) -> None:
        """Stop serve_forever and wait until it has (call it from another thread, as socketserver's)."""
        self._stop_loop = True
        try:
            self._wake_w.send(b"\0")
        except OSError:  # its buffer is full: it is awake already
            pass
        self._loop_done.wait()

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
            self.metrics.refused()
            body = b'{"error": "too many connections; retry"}'
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self.conn_lock:
            self.starting += 1  # counted until its thread registers it: drain waits for it
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread could be started: give the slot back
            with self.conn_lock:
                self.starting -= 1
            self.slots.release()
            raise

    def handle_error(self, request, client_address) -> None:
        log(f"error in a connection: {sys.exc_info()[0].__name__}: {sys.exc_info()[1]}")

    def server_close(self) -> None:
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()


def listening_socket(host: str, port: int, unix: str | None) -> tuple[socket.socket, str]:
    """The socket systemd passed (LISTEN_FDS), else a new one on ``unix`` or ``host:port``."""
    sock = sd.inherited_socket()
    if sock is not None:
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
        sock.listen(Server.request_queue_size)
    except OSError as e:
        where = unix or f"{host}:{port}"
        raise ServeError(f"serve: cannot listen on {where}: {e.strerror or e}") from None
    return sock, describe(sock)


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    return f"unix:{name}" if sock.family == socket.AF_UNIX else f"{name[0]}:{name[1]}"


def accept_loop(server: Server, cpu: str, poll_interval: float = 0.5) -> None:
    """The accept loop, on one CPU unless ``cpu`` is "any"; the connection threads it starts inherit it.

    It goes round at least every ``poll_interval`` seconds (``Server.turned`` says when it last did).

    Each request releases the GIL inside onnxruntime; with the connection threads spread
    over several CPUs, each release hands the GIL to a thread on another CPU and the caller
    then waits to get it back: at 8 clients that halved throughput (docs/benchmarks.md).
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
    server.serve_forever(poll_interval=poll_interval)


def drain(server: Server, timeout: float) -> int:
    """Wake idle kept-alive connections, wait for busy ones; return how many were still open."""
    deadline = time.monotonic() + timeout
    while True:
        with server.conn_lock:
            open_now, starting = list(server.connections), server.starting
        for h in open_now:
            h.wake_if_idle()
        if not (open_now or starting) or time.monotonic() >= deadline:
            return len(open_now) + starting
        time.sleep(0.01)  # polling the set of open connections, bounded by the deadline
