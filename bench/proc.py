"""The benchmark's child processes, run in one place: wall time, exit code, peak RSS, output.

Every process the benchmark starts goes through here: ``run`` for a child it waits for (its
wall seconds, its own peak RSS from os.wait4's rusage, its stdout if asked, its stderr for the
error message), ``start`` and ``stop`` for a server that runs beside the load it is given.
No child's output waits in a pipe nobody reads: stderr goes to a file (a server's to its log),
stdout is either discarded or the one pipe, read to its end before the child is waited for.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEVNULL = subprocess.DEVNULL


@dataclass
class Done:
    """A finished child: wall seconds from start to exit, exit code, peak RSS and its output."""

    wall_s: float
    peak_rss_mb: float
    code: int
    out: str = ""
    err: str = ""
    first_line: str = ""
    first_line_s: float | None = None  # start to the first stdout line (``first_line=True``)

    def json(self) -> dict:
        """The last line of stdout, which every JSON-printing helper ends with."""
        lines = self.out.strip().splitlines()
        if not lines:
            raise SystemExit(f"bench: no output on stdout: {self.err.strip()[-800:]}")
        return json.loads(lines[-1])


def run(cmd: list[str], *, cwd: Path = ROOT, stdin=None, env: dict | None = None, capture: bool = False,
        first_line: bool = False, check: bool = True, timeout: float | None = None, what: str | None = None) -> Done:
    """Run ``cmd`` to its end. stdout is captured with ``capture`` (``first_line``: its first
    line is timed apart, the cold start of a worker), else discarded; stdin is ``stdin`` (None:
    this process's). A non-zero exit stops the benchmark unless ``check`` is false; so does
    ``timeout`` seconds passing (the child is killed)."""
    what = what or " ".join(map(str, cmd))
    first, first_s, out = b"", None, b""
    # stderr into a file, never a pipe: the parent reads stdout to its end, then waits; a child
    # that wrote more than a pipe holds (64 KiB) to a stderr pipe read only after the wait would
    # block on the write while the parent blocks in wait4, forever.
    with tempfile.TemporaryFile() as err_file:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                             stderr=err_file, env=env)
        killed: list[bool] = []
        timer = threading.Timer(timeout, lambda: (killed.append(True), p.kill())) if timeout else None
        if timer:
            timer.start()
        try:
            if capture:
                with p.stdout:
                    if first_line:
                        first = p.stdout.readline()
                        first_s = time.perf_counter() - t
                    out = p.stdout.read()
            _, status, usage = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t
        finally:
            if timer:
                timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    if killed:
        raise SystemExit(f"bench: {what}: no end after {timeout:g} s (killed): {err.strip()[-800:]}")
    if check and p.returncode != 0:
        raise SystemExit(f"bench: {what} failed ({p.returncode}): {err.strip()[-800:]}")
    return Done(wall, usage.ru_maxrss / 1024, p.returncode, out.decode(errors="replace"), err,
                first.decode(errors="replace"), first_s)


# Linux charges a child's ru_maxrss with its parent's peak RSS when the child was forked (or
# vforked, as subprocess does) from it: by the time the serve section runs, the benchmark process
# has held the stream section's input and is far larger than `predict`, so os.wait4 on a child of
# it reports the benchmark's own peak. A small spawner in between reports the child's own peak.
_SPAWN_WAIT4 = (
    "import os, sys, time\n"
    "t = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,"
    " file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])\n"
    "_, status, ru = os.wait4(pid, 0)\n"
    "print(time.perf_counter() - t, ru.ru_maxrss, os.waitstatus_to_exitcode(status))\n")


def peak_rss_run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd`` (cmd[0] an absolute path) under a small spawner; (wall seconds, its own peak RSS MB)."""
    r = run([PY, "-I", "-S", "-c", _SPAWN_WAIT4, *cmd], cwd=cwd, capture=True, check=False)
    try:
        wall, maxrss_kb, code = r.out.split()
    except ValueError:
        raise SystemExit(f"bench: {' '.join(cmd)}: no measurement: {r.err.strip()[-500:]}") from None
    if int(code) != 0 or r.code != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({code}): {r.err.strip()[-500:]}")
    return float(wall), int(maxrss_kb) / 1024


def start(cmd: list[str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    """Start a long-running child with no stdin, stdout discarded and stderr into ``log``."""
    with open(log, "wb") as err:
        return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def stop(p: subprocess.Popen, grace: float = 30) -> int:
    """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds; its exit code."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def installed(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` at ``dest`` as a deploy installs it: its runtime/ byte-compiled, as
    hash-checked .pyc files, by the Python the benchmarks run (deploy/roles/edge/files/release.py's
    ``precompile``), so that a cold start is timed as a device's, not with a compile in it."""
    shutil.copytree(bundle, dest, symlinks=True)
    run([PY, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", str(dest / "runtime")])
    return dest
