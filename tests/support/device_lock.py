"""A device's deploy lock (edge_root/.deploy.lock) held by a test as a deploy holds it, and which
processes have that lock file open: how the lock tests see a release.py waiting at the lock."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path


def pids_with_open(file_id: tuple[int, int]) -> set[int]:
    """Pids (this machine's, other than this one) with the file ``(st_dev, st_ino)`` open. By
    inode, not by path: a process in a test host's container sees the same file under another path."""
    found = set()
    for d in filter(str.isdigit, os.listdir("/proc")):
        if int(d) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{d}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == file_id:
                found.add(int(d))
                break
    return found


def openers(path: Path) -> set[int]:
    """Pids (other than this one) with ``path`` open; none when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return set()
    return pids_with_open((st.st_dev, st.st_ino))


class HeldLock:
    """``path`` (an edge_root's .deploy.lock) held by this test process as a deploy holds it: an
    exclusive flock, its pid and since written in it; ``owner`` (uid, gid): the file made theirs,
    for a deploy user who must open it too."""

    def __init__(self, path: Path, owner: tuple[int, int] | None = None):
        self.path = path
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if owner is not None:
            os.fchown(self.fd, *owner)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.pid, self.since = os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps({"pid": self.pid, "since": self.since, "what": "test"}).encode(), 0)
        st = os.fstat(self.fd)
        self.file_id = st.st_dev, st.st_ino

    @property
    def busy(self) -> str:
        return f"busy: another deploy (pid {self.pid}, since {self.since})"

    def waiters(self) -> set[int]:
        """Pids other than this one with the lock file open (a deploy's release.py at the lock)."""
        return pids_with_open(self.file_id)

    def release(self) -> None:
        if self.fd is not None:
            os.unlink(self.path)  # as a deploy lets go: removed while held
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
