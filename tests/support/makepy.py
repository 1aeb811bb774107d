"""make's ``PY`` in the tests that run `make all` (forkrun.make_vars): the pipeline's commands
are forked from the test process's fork servers (tests/support/forkserver.py) instead of new
interpreters: a stage that imports TensorFlow (train, export, all) from the one that has it
imported (about 4 s of CPU a command saved), the others (config, plot, verify, bundle,
signing) from the one with numpy and onnxruntime (about 0.25 s). Anything else make runs with
``$(PY)`` becomes the real interpreter, exec'd in this process's place.

Run as ``python -S makepy.py TENSORFLOW_SOCKET PLAIN_SOCKET ARGS...``: no site, the standard
library only, so it starts in a few milliseconds. make sees what a command run by a new
interpreter gives it: the same stdin, stdout and stderr (passed to the command), its exit
status, and death by the same signal (a stage that SIGKILLs itself, pipeline/fsutil.py's test
hook, ends this process by SIGKILL too). SIGTERM, SIGINT and SIGHUP sent to this process are
passed on to the command. What it cannot pass on is its own SIGKILL: the command is the
server's child, not in make's process group, so a test that SIGKILLs make's whole group
(test_faults.py's observed moments) runs make without it.
"""

import json
import os
import signal
import socket
import sys

from forkproto import imports_tensorflow, request  # beside this script: its folder is sys.path[0]


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


def main(tensorflow: str, plain: str, args: list) -> int:
    module = args[1] if args[:1] == ["-m"] and len(args) > 1 else ""
    if module != "pipeline" and not module.startswith("pipeline."):
        real(args)
    path = tensorflow if imports_tensorflow(args) else plain
    child, early = {}, []

    def forward(sig, _frame):  # to the command once its pid is known; kept until then
        if "pid" in child:
            os.kill(child["pid"], sig)
        else:
            early.append(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        conn = request(path, args, os.getcwd(), dict(os.environ), False, [0, 1, 2])
    except OSError:  # the test process and its server are gone: run it as make would have
        for sig in early[:1]:  # unless make was told to stop meanwhile
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        real(args)
    answers = lines(conn)
    first = next(answers, {})
    if "pid" not in first:
        sys.stderr.write(f"makepy: the tests' fork server refused the command: {first}\n")
        return 1
    child["pid"] = first["pid"]
    for sig in early:
        os.kill(child["pid"], sig)
    code = next(answers, {}).get("returncode")
    if code is None:
        sys.stderr.write("makepy: the tests' fork server ended before the command\n")
        return 1
    if code < 0:  # killed by a signal: so is this process, as make would have seen the command
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
