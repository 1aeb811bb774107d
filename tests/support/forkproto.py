"""The fork servers' request, as the three processes that speak it share it: forkrun.py (in the
test process), forkserver.py (the server) and makepy.py (make's PY). The standard library only:
the server and makepy, run as scripts, import it from their own folder.

A request is one connection on the server's Unix socket: the JSON head's length (``HEAD``), the
head (the interpreter's arguments, cwd, env, whether to start a new session), and the child's
stdin, stdout and stderr as file descriptors. The server answers a line with the child's pid,
then one with its exit status."""

import json
import socket
import struct

HEAD = struct.Struct("!I")
# The pipeline's stages that import TensorFlow: forked from the server that has it imported.
TENSORFLOW_STAGES = frozenset({"train", "export", "all"})


def imports_tensorflow(args) -> bool:
    """Whether `python ARGS` is a pipeline stage that imports TensorFlow (not its --help)."""
    args = list(map(str, args))
    return args[:2] == ["-m", "pipeline"] and bool(TENSORFLOW_STAGES & set(args[2:])) and not {"-h", "--help"} & set(args)


def request(path: str, argv: list, cwd: str, env: dict, new_session: bool, fds: list) -> socket.socket:
    """Ask the server at ``path`` to run ``python ARGV`` with ``fds`` as its 0, 1 and 2: the
    connection its answers come on. OSError if no server listens there."""
    head = json.dumps({"argv": argv, "cwd": cwd, "env": env, "new_session": new_session}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        socket.send_fds(conn, [HEAD.pack(len(head)) + head], fds)
    except OSError:
        conn.close()
        raise
    return conn
