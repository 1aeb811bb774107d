"""Atomic file output: a temporary file in the same folder, fsync, rename.

A stage killed at any point leaves the previous good file or none, never a partial
file that make (or a later stage) would take as up to date.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError


_OWNER = re.compile(r"\.pid(\d+)\.")


def temp_prefix(name: str) -> str:
    """Prefix of a temporary beside ``name``: hidden, and naming the process that owns it."""
    return f".{name}.pid{os.getpid()}."


def owner_alive(temp_name: str) -> bool:
    """Whether the process named in a temporary's name (see temp_prefix) is still running."""
    m = _OWNER.search(temp_name)
    if not m:
        return False
    pid = int(m.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    # A killed writer whose parent died too is a zombie until PID 1 reaps it, which may take
    # a while: signal 0 still reaches it, but it will never finish its temporary.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:  # gone since the signal
        return False
    except (OSError, IndexError):
        return True


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success fsync it and rename it over ``dest``.

    For writers that want a path (tarfile, TensorFlow, matplotlib). On any error the
    temporary file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest.name), suffix=".tmp" + dest.suffix, dir=dest.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        os.close(fd)
    except OSError as e:
        raise OutputError(dest, e.strerror or str(e)) from None
    tmp = Path(tmp)
    try:
        yield tmp
        _fault_point(dest, "written")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _fault_point(dest, "synced")
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        _fault_point(dest, "renamed")
    except OSError as e:
        raise OutputError(dest, e.strerror or str(e)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fault_point(dest: Path, phase: str) -> None:
    """Test hooks at exact points of an atomic write: ``PIPELINE_KILL_AT=NAME:PHASE`` makes
    this process SIGKILL itself there, ``PIPELINE_STOP_AT=NAME:PHASE`` SIGSTOP itself (a test
    observes the stop, does its part, then sends SIGCONT).

    Phases: ``written`` (temporary complete), ``synced`` (fsynced), ``renamed`` (in place).
    """
    here = f"{dest.name}:{phase}"
    if os.environ.get("PIPELINE_KILL_AT") == here:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("PIPELINE_STOP_AT") == here:
        os.kill(os.getpid(), signal.SIGSTOP)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | Path, obj) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")
