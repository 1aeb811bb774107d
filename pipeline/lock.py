"""One pipeline run at a time per build folder.

Every stage holds an exclusive ``flock`` on ``BUILD/.lock`` while it runs; a second run
(two `make all` in one checkout, a CI job and a person) waits for it, saying so once on
stderr. The lock dies with its process, so a killed run never leaves it held. Holding
it, a stage clears the temporaries of killed runs. `plot` takes no lock: it only reads
history.json and replaces loss.png atomically, so make can draw it while export runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

from . import fsutil
from .errors import OutputError
from .layout import Layout


@contextlib.contextmanager
def exclusive(build: Path, *folders: Path) -> Iterator[None]:
    """Hold BUILD/.lock; on entry, remove temporaries left in ``build`` and ``folders`` by killed runs."""
    build = Path(build)
    lock = Layout(build).lock
    try:
        build.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(lock, e.strerror or str(e)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {lock}: another pipeline run is using {build}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        for folder in (build, *folders):
            remove_stale(Path(folder))
        yield
    finally:
        os.close(fd)


def remove_stale(folder: Path) -> None:
    """Delete temporaries (files and folders) whose owning process is gone: what a killed run left.

    Temporaries are hidden and carry their owner's pid (fsutil.temp_prefix), so a run never
    deletes the temporary of one still writing, such as the loss plot drawn beside export.
    """
    if not folder.is_dir():
        return
    for sub in [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        for p in sub.glob(".*.pid*"):
            if fsutil.owner_alive(p.name):
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
