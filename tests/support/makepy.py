"""make's ``PY`` in the tests that run `make all` (forkrun.make_vars): a pipeline stage that
imports TensorFlow (train, export, all) is forked from the test process's TensorFlow fork server
(tests/support/forkserver.py) instead of a new interpreter importing it afresh (about 4 s of CPU
each); every other command make runs with ``$(PY)`` (config, plot, verify, bundle, signing)
becomes the real interpreter, exec'd in this process's place.

Run as ``python -S makepy.py SOCKET ARGS...``: no site, the standard library only, so it starts
in a few milliseconds. make sees what a stage run by a new interpreter gives it: the same stdin,
stdout and stderr (passed to the stage), the stage's exit status, and death by the same signal
(a stage that SIGKILLs itself, pipeline/fsutil.py's test hook, ends this process by SIGKILL too).
SIGTERM, SIGINT and SIGHUP sent to this process are passed on to the stage. What it cannot pass
on is its own SIGKILL: the stage is the server's child, not in make's process group, so a test
that SIGKILLs make's whole group (test_faults.py's observed moments) runs make without it.
"""

import json
import os
import signal
import socket
import struct
import sys

HEAD = struct.Struct("!I")  # as tests/support/forkrun.py frames a request
TENSORFLOW_STAGES = frozenset({"train", "export", "all"})  # forkrun._TENSORFLOW_STAGES


def real(args: list) -> None:
    """Become the interpreter make would have run."""
    os.execv(sys.executable, [sys.executable, *args])


def lines(conn: socket.socket):
    buf = b""
    while True:
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            yield json.loads(line)
        chunk = conn.recv(4096)
        if not chunk:
            return
        buf += chunk


def main(path: str, args: list) -> int:
    if args[:2] != ["-m", "pipeline"] or not TENSORFLOW_STAGES & set(args[2:]) or {"-h", "--help"} & set(args):
        real(args)
    head = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "new_session": False}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:  # the test process and its server are gone: run it as make would have
        real(args)
    socket.send_fds(conn, [HEAD.pack(len(head)) + head], [0, 1, 2])
    answers = lines(conn)
    first = next(answers, {})
    if "pid" not in first:
        sys.stderr.write(f"makepy: the tests' fork server refused the stage: {first}\n")
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(first["pid"], s))
    code = next(answers, {}).get("returncode")
    if code is None:
        sys.stderr.write("makepy: the tests' fork server ended before the stage\n")
        return 1
    if code < 0:  # killed by a signal: so is this process, as make would have seen the stage
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
