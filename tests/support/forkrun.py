"""`python -m runtime ...` (and other `python -m` or `python -c` commands) for the tests, forked
from a process that has numpy and onnxruntime imported already (tests/support/forkserver.py),
instead of a new interpreter each time.

Why: the fast tier runs `python -m runtime` some 250 times, the whole suite some 500, and a new
interpreter spends about 0.25 s of CPU importing numpy and onnxruntime before the command does
anything; on two cores that was a third of `make test-fast`.

What stays real: each command is its own process, with its own pid, stdin, stdout and stderr
(pipes, as subprocess gives), working directory, environment, exit status and signals; it
imports the runtime (the bundle's own copy, from its working directory, as `python -m` does) and
runs it as ``__main__``. What differs: numpy and onnxruntime are imported before the command
starts, and the interpreter's start-up options are the server's. So a command runs here only
when its environment asks for nothing that is read at start-up (``eligible``); the tests of the
runtime's imports and start (test_runtime_wall, test_runtime_env) start real interpreters, and
``EDGE_TEST_FORK=0`` makes every command a new interpreter again.

A pipeline stage that trains or exports (`python -m pipeline train|export|all ...`) is forked
from a second server, which has also imported TensorFlow and Keras as the pipeline itself does
(export/tfenv.py): about 4 s of CPU a command, some 20 commands a run. Its children train and
convert as any pipeline process does; only the import is shared. A command whose environment
sets what that import reads (TF_*, KERAS_*, ...) otherwise than the server had it starts
without TensorFlow imported, as before. The tests that run `make all` give make a ``PY``
(``make_vars``) that does the same for the pipeline's commands make starts:
tests/support/makepy.py.

Under pytest-xdist, the workers share one server of each kind: the controller process starts
each when a worker first asks for it (``share``, from tests/conftest.py), so that a run imports
TensorFlow once instead of once per worker (about 4 s of CPU each).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support import forkproto

SERVER = Path(__file__).with_name("forkserver.py")
MAKEPY = Path(__file__).with_name("makepy.py")
# Start-up settings the server's interpreter has read once; a command asking for other values
# runs as a new interpreter. PYTHONPATH and PYTHONDONTWRITEBYTECODE the child sets itself.
# numpy's BLAS reads its thread settings when numpy is imported.
_READ_AT_START = ("PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONWARNINGS", "PYTHONHASHSEED",
                  "PYTHONIOENCODING", "PYTHONUNBUFFERED", "PYTHONUTF8", "PYTHONOPTIMIZE", "PYTHONDEVMODE",
                  "PYTHONMALLOC", "PYTHONFAULTHANDLER", "PYTHONUSERBASE", "LANG", "LC_ALL", "LC_CTYPE",
                  "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# What importing TensorFlow and Keras reads from the environment (their settings, and those of
# what they load: oneDNN, OpenMP, XLA, matplotlib's backend), by name prefix.
_READ_BY_TENSORFLOW = ("TF_", "TF2ONNX", "KERAS_", "CUDA_", "XLA_", "ONEDNN_", "DNNL_", "KMP_", "OMP_", "MPL")

_servers: dict[str, dict] = {}  # "plain" or "tensorflow": that server of this test process
_starting = {"plain": threading.Lock(), "tensorflow": threading.Lock()}
# "PID:PATH": the process that shares its servers (share) and the Unix socket it answers on.
SHARED = "EDGE_TEST_FORK_SHARED"


def enabled() -> bool:
    return os.environ.get("EDGE_TEST_FORK", "1") != "0"


def _start(kind: str = "plain"):
    """This test process's fork server of ``kind`` (started once, or asked of the process that
    shares its own): its socket's path."""
    with _starting[kind]:
        server = _servers.get(kind)
        if server and server["pid"] == os.getpid():
            return server["path"]
        owner, _, shared = os.environ.get(SHARED, "").partition(":")
        server = _ask(shared, kind) if shared and owner != str(os.getpid()) else _new(kind)
        _servers[kind] = dict(server, pid=os.getpid())
        return server["path"]


def _ask(shared: str, kind: str) -> dict:
    """The server of ``kind`` of the process that shares them, asked on its socket ``shared``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(shared)
        conn.sendall(kind.encode() + b"\n")
        answer = json.loads(conn.makefile("rb").readline() or b'{"error": "no answer"}')
    if "error" in answer:
        raise RuntimeError(f"the tests' shared fork server did not start: {answer['error']}")
    return answer


def share() -> None:
    """Share this process's fork servers with the processes it starts (pytest-xdist's workers,
    started after this): they ask for a server on a Unix socket (``SHARED`` in the environment),
    and this process starts it the first time, then answers with its path. The servers end with
    this process, as its own do."""
    if not enabled() or os.environ.get(SHARED):
        return
    folder = tempfile.mkdtemp(prefix="edge-fork-")
    path = os.path.join(folder, "shared")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)

    def answer(conn):
        with conn:
            try:
                kind = conn.makefile("rb").readline().decode().strip()
                if kind not in _starting:
                    raise ValueError(f"no server of kind {kind!r}")
                _start(kind)
                reply = {k: _servers[kind][k] for k in ("path", "env", "preloaded")}
            except Exception as e:  # noqa: BLE001 - the asking worker raises it, naming it
                reply = {"error": f"{type(e).__name__}: {e}"}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def serve():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[SHARED] = f"{os.getpid()}:{path}"


def _new(kind: str) -> dict:
    """Start a fork server of ``kind``, stopped when this process ends."""
    folder = tempfile.mkdtemp(prefix="edge-fork-")
    path = os.path.join(folder, "s")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    preload = [str(Path(__file__).resolve().parents[2])] if kind == "tensorflow" else []
    proc = subprocess.Popen([sys.executable, str(SERVER), path, *preload], stdin=subprocess.PIPE, env=env,
                            stdout=subprocess.PIPE, cwd=folder)
    # Ready when it says so (observed, not a guessed wait); an exit before that is a failure.
    word, _, preloaded = proc.stdout.readline().partition(b" ")
    if word != b"ready":
        raise RuntimeError(f"the tests' fork server did not start (exit {proc.wait(timeout=60)})")

    def stop():
        proc.stdin.close()
        proc.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    return dict(path=path, env=env, preloaded=json.loads(preloaded))


def eligible(env: dict) -> bool:
    """Whether a command with environment ``env`` runs the same forked as started afresh."""
    if not enabled():
        return False
    server = _servers.get("plain")
    return _starts_alike(env, server["env"] if server and server["pid"] == os.getpid() else os.environ)


def _starts_alike(env: dict, here) -> bool:
    """Whether ``env`` sets what Python reads at start-up as ``here`` (a server's environment) does."""
    return all(env.get(k) == here.get(k) for k in _READ_AT_START)


def _kind(args, env: dict) -> str:
    """The server a command ``args`` with environment ``env`` forks from: "tensorflow" for a
    pipeline stage that imports it, when its import would read what the server's read (where
    neither environment sets a variable, tfenv's default); else "plain"."""
    if not forkproto.imports_tensorflow(args):
        return "plain"
    _start("tensorflow")
    server = _servers["tensorflow"]
    defaults = server["preloaded"]
    had = {**defaults, **server["env"]}
    reads = {k for k in (*env, *had) if k.startswith(_READ_BY_TENSORFLOW)}
    same = all(env.get(k, defaults.get(k)) == had.get(k) for k in reads)
    return "tensorflow" if same and _starts_alike(env, server["env"]) else "plain"


def make_vars(env: dict) -> list[str]:
    """The variables to give `make all` on its command line, started with environment ``env``, so
    that the pipeline's commands it runs fork from this process's servers as ``python`` does here
    (tests/support/makepy.py as make's ``PY``): none when a stage would not fork here."""
    if not enabled() or _kind(["-m", "pipeline", "all"], env) != "tensorflow" or not eligible(env):
        return []
    return [f"PY={sys.executable} -S {MAKEPY} {_servers['tensorflow']['path']} {_start('plain')}"]


class Forked:
    """A forked `python -m MODULE ARGS`, with subprocess.Popen's ways for what the tests use:
    ``pid``, ``stdin``/``stdout``/``stderr`` (pipes when asked for with subprocess.PIPE),
    ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``, ``communicate``, ``returncode``."""

    def __init__(self, args, cwd, env: dict, stdin=None, stdout=None, stderr=None,
                 start_new_session: bool = False):
        """``args``: the interpreter's arguments, ``["-m", module, ...]`` or ``["-c", code, ...]``."""
        path = _start(_kind(args, env))
        self.args = [sys.executable, *map(str, args)]
        if self.args[1] not in ("-m", "-c") or len(self.args) < 3:
            raise ValueError(f"forkrun runs `python -m MODULE` or `python -c CODE`, not {self.args[1:]}")
        self.returncode = None
        self.stdin = self.stdout = self.stderr = None
        theirs = []  # the child's ends, sent to the server and closed here

        def end(spec, reading: bool, default):
            if spec == subprocess.PIPE:
                r, w = os.pipe()
                mine, child = (r, w) if reading else (w, r)
                theirs.append(child)
                return os.fdopen(mine, "rb" if reading else "wb", buffering=0 if not reading else -1)
            if spec == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                theirs.append(fd)
                return None
            fd = spec if isinstance(spec, int) else (spec.fileno() if spec is not None else default)
            theirs.append(os.dup(fd))
            return None

        self.stdin = end(stdin, False, 0)
        self.stdout = end(stdout, True, 1)
        self.stderr = end(stderr, True, 2)
        try:
            self._conn = forkproto.request(path, self.args[1:], str(cwd), env, start_new_session, theirs)
        finally:
            for fd in theirs:
                os.close(fd)
        self._buf = b""
        first = json.loads(self._line(None) or b"{}")
        if "pid" not in first:
            raise RuntimeError(f"the tests' fork server refused a command: {first}")
        self.pid = first["pid"]

    def _line(self, timeout) -> bytes | None:
        """The server's next line about this command; None if none came within ``timeout`` s
        (None: wait); b"" if the server closed the connection first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], left)[0]:
                return None
            chunk = self._conn.recv(4096)
            if not chunk:
                return b""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _status(self, timeout):
        if self.returncode is not None:
            return self.returncode
        line = self._line(timeout)
        if line is None:
            return None
        if not line:
            raise RuntimeError("the tests' fork server ended before the command")
        self.returncode = json.loads(line)["returncode"]
        self._conn.close()
        return self.returncode

    def poll(self):
        return self._status(0)

    def wait(self, timeout=None):
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def send_signal(self, sig):
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: bytes | None = None, timeout=None):
        """(stdout bytes or None, stderr bytes or None), feeding ``input`` to stdin; then waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = {self.stdout: [], self.stderr: []}
        sel = selectors.DefaultSelector()
        for f in (self.stdout, self.stderr):
            if f is not None:
                sel.register(f, selectors.EVENT_READ)
        pending = memoryview(input or b"")
        if self.stdin is not None:
            if pending:
                os.set_blocking(self.stdin.fileno(), False)
                sel.register(self.stdin, selectors.EVENT_WRITE)
            else:
                self.stdin.close()
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            for key, _ in sel.select(left):
                f = key.fileobj
                if f is self.stdin:
                    try:
                        n = os.write(f.fileno(), pending[:65536])
                    except BrokenPipeError:
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(f)
                        f.close()
                else:
                    data = os.read(f.fileno(), 65536)
                    if data:
                        out[f].append(data)
                    else:
                        sel.unregister(f)
                        f.close()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(left)
        return (b"".join(out[self.stdout]) if self.stdout is not None else None,
                b"".join(out[self.stderr]) if self.stderr is not None else None)


def python(*args, cwd, env: dict | None = None, input: bytes | None = None, timeout: float = 600,
           text: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, *args], capture_output=True, ...)``: forked when
    ``env`` (the whole environment; None: this process's) allows it, else a new interpreter.
    ``args`` begin with ``-m MODULE`` or ``-c CODE``; ``text``: str out, as subprocess's."""
    env = dict(os.environ) if env is None else env
    if not eligible(env):
        return subprocess.run([sys.executable, *args], cwd=cwd, env=env, input=input, capture_output=True,
                              timeout=timeout, text=text)
    if text and input is not None:
        input = input.encode()
    p = Forked(args, cwd, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise
    if text:
        out, err = out.decode(), err.decode()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)
