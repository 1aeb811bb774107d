"""A stand-in for systemd on a deploy test host: a held socket, and `runtime serve` restarted on it.

The test host has no systemd as PID 1, so this does what edge-model.socket and
`systemctl restart edge-model.service` do: it holds the listening socket (connections made
while no server runs wait in its backlog), starts ``<edge_root>/current/.venv/bin/python -m
runtime serve`` with the socket as fd 3 (LISTEN_FDS=1, LISTEN_PID), and on SIGUSR1 stops it
with SIGTERM (serve drains and exits 0) and starts the next one on the same socket.

    python deploy_service.py run DIR EDGE_ROOT   # the supervisor; writes DIR/port, DIR/pid, DIR/generation
    python deploy_service.py restart DIR         # the playbook's edge_service_restart_command
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

FAILSAFE = 120.0

ACTIVATE = (  # the supervisor blocks the signals it waits for; exec keeps the mask: clear it
    "import os, signal, sys\n"
    "signal.pthread_sigmask(signal.SIG_SETMASK, [])\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run(folder: Path, edge_root: Path) -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    signals = {signal.SIGUSR1, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    write(folder / "port", str(listener.getsockname()[1]))
    write(folder / "pid", str(os.getpid()))
    child, generation = None, 0
    while True:
        sig = signal.sigwait(signals)
        if child is not None:
            child.send_signal(signal.SIGTERM)
            child.wait()
        if sig == signal.SIGTERM:
            return 0
        generation += 1
        current, log = edge_root / "current", folder / f"serve-{generation}.log"
        with open(log, "wb") as err:
            child = subprocess.Popen(
                [sys.executable, "-c", ACTIVATE, str(listener.fileno()), str(current / ".venv" / "bin" / "python"),
                 "-m", "runtime", "serve", "--bundle", str(current)],
                cwd=current.resolve(), pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL, stderr=err,
                env={**os.environ, "PYTHONPATH": ""})
        # Ready once it says so (after its selfcheck), as READY=1 does for Type=notify.
        deadline = time.monotonic() + FAILSAFE
        while b"serving model " not in log.read_bytes() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        write(folder / "generation", f"{generation} {child.poll() is None}")


def restart(folder: Path) -> int:
    before = (folder / "generation").read_text() if (folder / "generation").exists() else "0"
    os.kill(int((folder / "pid").read_text()), signal.SIGUSR1)
    deadline = time.monotonic() + FAILSAFE
    while time.monotonic() < deadline:
        now = (folder / "generation").read_text() if (folder / "generation").exists() else "0"
        if now != before:
            return 0 if now.endswith("True") else 1
        time.sleep(0.05)
    print("error: the service did not restart in time", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if sys.argv[1] == "run":
        sys.exit(run(Path(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(restart(Path(sys.argv[2])))
