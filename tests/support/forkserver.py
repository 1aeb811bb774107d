"""The fork server behind tests/support/forkrun.py: one Python process with numpy and onnxruntime
imported, forking a child for each `python -m MODULE ARGS` the tests run.

Run as a script (``python forkserver.py SOCKET [ROOT]``) by forkrun, never imported by a test.
With ROOT (the repository), it also imports TensorFlow and Keras as the pipeline does
(ROOT/export/tfenv.py), for the pipeline stages that train or export. It prints ``ready`` and
the settings that import has by default (tfenv's, JSON) once it listens. Its stdin is a pipe from the
test process: when that closes (the test process ended), the server ends.

Each request is one connection on the Unix socket: a JSON head (the interpreter's arguments,
``-m MODULE ...`` or ``-c CODE ...``; cwd; env; whether to start a new session) with the child's
stdin, stdout and stderr as file descriptors. The server forks; the child takes those
descriptors as 0, 1 and 2, the directory, the environment, ``sys.argv`` and ``sys.path`` that
python would have given it, and runs the module (``runpy``, as ``-m`` does) or the code as
``__main__`` at the top level of this script, and ends as python ends (``_finish``): an
uncaught exception, SystemExit, threads, atexit and the flush of stdout at exit work as in any
Python process. The server answers the child's pid at once and its exit status (as
subprocess's returncode) when it ends.
"""

import gc
import json
import os
import selectors
import signal
import socket
import sys
import types
import warnings

from forkproto import HEAD  # beside this script: its folder is sys.path[0]

# What a test's `python -m runtime` spends most of its start on (about 0.25 s of CPU), done once.
import numpy  # noqa: F401
import onnxruntime  # noqa: F401

# ... and the standard library's modules the runtime's commands and its server import (about
# 10 ms of each command's start). The runtime's own modules a child imports itself, from its
# bundle, as a new interpreter does.
for _name in ("argparse", "base64", "copy", "dataclasses", "decimal", "fractions", "gettext", "http.server",
              "ipaddress", "json", "locale", "pathlib", "shutil", "socketserver", "statistics", "subprocess",
              "tempfile", "urllib.parse"):
    __import__(_name)

# Python 3.12+ warns on fork in a process with threads (numpy's BLAS and onnxruntime start some
# at import). BLAS makes its threads again in the child (pthread_atfork), as under
# multiprocessing's fork; onnxruntime's are why a child ends without the C exit handlers (_finish).
warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)


def _preload_tensorflow(root: str) -> dict:
    """Import TensorFlow and Keras as every pipeline process does (export/tfenv.py's
    ``tensorflow()``: its settings, the modules it hides during the import), then forget the
    repository's own modules, so that a child imports its own copy from its own path, as a new
    interpreter would. Returns the settings tfenv gives the import where the environment has none."""
    sys.path.insert(0, root)
    try:
        from export.tfenv import DEFAULTS, tensorflow

        tensorflow()
    finally:
        sys.path.remove(root)
        for name in [m for m in sys.modules if m == "export" or m.startswith("export.")]:
            del sys.modules[name]
    return DEFAULTS


def _recv_exact(conn, n: int, first: bytes = b"") -> bytes:
    data = first
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("request cut short")
        data += chunk
    return data


def _request(conn):
    """(the JSON head, the three descriptors) of one request."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    data = _recv_exact(conn, HEAD.size, data)
    (n,) = HEAD.unpack(data[:HEAD.size])
    body = _recv_exact(conn, HEAD.size + n, data)[HEAD.size:]
    if len(fds) != 3:
        raise EOFError(f"expected 3 descriptors, got {len(fds)}")
    return json.loads(body), fds


def _child(request: dict, fds, base_path: list) -> str:
    """In the forked child: become the process `python -m MODULE ...` or `python -c CODE ...`
    would be; the module's name or the code."""
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *extra, *base_path]
    sys.argv[:] = request["argv"]
    if sys.argv[0] == "-c":
        sys.path[0] = ""  # as `python -c` has it: the working directory, by a relative path
    return sys.argv[1]


def serve(path: str, preloaded: dict):
    """Answer requests until stdin closes; returns only in a forked child (what it runs).
    ``preloaded``: the default settings of what was preloaded, for the ready line."""
    base_path = sys.path[1:]  # what follows the script's own folder: the standard library, site-packages
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")
    waiting: dict[int, socket.socket] = {}
    # What is imported so far outlives every child: out of the collector's sight (as Python's
    # docs advise before forking), a child's collections neither walk those objects nor write to
    # their pages, which would copy each page they touch (a fifth of a forked training's CPU).
    gc.freeze()
    print("ready", json.dumps(preloaded), flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "parent":
                if not os.read(sys.stdin.fileno(), 4096):
                    return None
            elif key.data == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _request(conn)
                except (OSError, EOFError, ValueError) as e:
                    try:
                        conn.sendall(json.dumps({"error": str(e)}).encode() + b"\n")
                    except OSError:
                        pass
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    sel.close()
                    for s in (listener, conn, *waiting.values()):
                        s.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    return _child(request, fds, base_path)
                for fd in fds:
                    os.close(fd)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                waiting[pid] = conn
            else:
                while True:
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        break
                while waiting:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    conn = waiting.pop(pid, None)
                    if conn is not None:
                        try:
                            conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                        except OSError:
                            pass
                        conn.close()


def _exit_status(e: SystemExit) -> int:
    """The status python exits with for ``e``, printing a code that is not a number, as it does."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    sys.stderr.write(f"{e.code}\n")
    return 1


def _finish(status: int, interrupted: bool) -> None:
    """End the child as python ends: wait for its threads, run atexit, flush stdout and stderr
    (status 120 if that fails, with python's "Exception ignored" lines), then exit, by SIGINT
    after a KeyboardInterrupt. Without the C library's exit handlers: onnxruntime's, made for
    the threads it started in the server at import, would wait for them for ever in a child."""
    import atexit
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception as e:  # noqa: BLE001 - what python's own exit does with it
            import traceback

            try:
                sys.stderr.write(f"Exception ignored in: {f!r}\n" + "".join(traceback.format_exception_only(type(e), e)))
                sys.stderr.flush()
            except Exception:  # noqa: BLE001, S110 - stderr itself is gone: python says nothing either
                pass
            status = 120
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status & 0xFF)


if __name__ == "__main__":
    _what = serve(sys.argv[1], _preload_tensorflow(sys.argv[2]) if len(sys.argv) > 2 else {})
    if _what is not None:
        import runpy

        # A fresh __main__, as python runs the module or the code in: not this script's globals.
        sys.modules["__main__"] = types.ModuleType("__main__")
        _status, _interrupted = 0, False
        try:
            if sys.argv[0] == "-m":
                del sys.argv[1]  # ["-m", args...]: runpy puts the module's path in place of "-m", as `-m` does
                runpy._run_module_as_main(_what)
            else:
                sys.argv[:] = ["-c", *sys.argv[2:]]
                _main = sys.modules["__main__"].__dict__
                _main["__builtins__"] = __builtins__
                exec(compile(_what, "<string>", "exec"), _main)
        except SystemExit as _e:
            _status = _exit_status(_e)
        except BaseException as _e:  # noqa: BLE001 - what python itself does with what nothing caught
            _e = _e.with_traceback(_e.__traceback__.tb_next)  # its traceback without this script's frame
            sys.excepthook(type(_e), _e, _e.__traceback__)
            _status, _interrupted = 1, isinstance(_e, KeyboardInterrupt)
        _finish(_status, _interrupted)
