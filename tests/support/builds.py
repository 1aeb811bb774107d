"""Pipeline builds the tests share: a build's paths (``Built``), a checkout to commit in
(``Checkout``), copies of builds, and ``shared``: a folder made once per test run, whichever
pytest-xdist worker asks for it first (the others wait for it, then reuse it), or begun in the
background before any test asks (``begin_shared``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
from pathlib import Path

from tests.support import forkrun
from tests.support.core import pipeline, ROOT


class Built:
    """Paths of one real pipeline run."""

    def __init__(self, root: Path, config: Path):
        self.root, self.config = root, config
        self.build, self.dist = root / "build", root / "dist"

    def args(self, stage: str) -> list[str]:
        return [stage, "--config", str(self.config), "--build", str(self.build), "--dist", str(self.dist)]

    def run(self, stage: str, **kw) -> subprocess.CompletedProcess:
        return pipeline(*self.args(stage), **kw)


class Checkout:
    """A copy of the source tree as a git repository of its own, to commit in (a test never
    commits in the real one); ``bundle`` runs the bundle stage from it on a copy of a build."""

    def __init__(self, dest: Path, date: int = 1_700_000_000):
        import shutil

        self.src = dest
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for d in ("pipeline", "export", "runtime", "configs"):
            shutil.copytree(ROOT / d, dest / d, ignore=ignore)
        (dest / "README.md").write_text("# a checkout\n")
        self.git("init", "-q")
        self.git("add", "-A")
        self.commit("first", date)

    def git(self, *args: str, date: int = 0) -> None:
        who = {f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER")
               for k, v in (("NAME", "test"), ("EMAIL", "test@example.com"), ("DATE", f"@{date} +0000"))}
        subprocess.run(["git", "-C", str(self.src), *args], check=True, capture_output=True,
                       env={**os.environ, **who})

    def commit(self, message: str, date: int, edits: dict[str, str] | None = None) -> None:
        """Commit ``edits`` ({relative path: text appended}), or nothing at all (an empty commit)."""
        for name, text in (edits or {}).items():
            with open(self.src / name, "a") as f:
                f.write(text)
        self.git("commit", "-q", "-a", "--allow-empty", "-m", message, date=date)

    def bundle(self, built: "Built", dest: Path) -> Path:
        """The bundle stage, run from this checkout on a copy of ``built``'s build (the same verified
        model: only the checkout differs); SOURCE_DATE_EPOCH unset. Returns the tarball."""
        import shutil

        shutil.copytree(built.build, dest / "build")
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        r = forkrun.python("-m", "pipeline", "bundle", "--config", str(built.config), "--build", str(dest / "build"),
                           "--dist", str(dest / "dist"), cwd=self.src, env={**env, "PYTHONPATH": str(self.src)})
        assert r.returncode == 0, r.stderr.decode()
        return dest / "dist" / "bundle.tar.gz"


def copied_build(source: tuple[Path, Path], dest: Path, extra_config: str = "") -> tuple[Path, Path]:
    """A copy of a build and its dist under ``dest``; ``extra_config`` appended to the build's
    config.toml (its relative paths still resolve: config.origin is copied beside it)."""
    build, dist = dest / "build", dest / "dist"
    shutil.copytree(source[0], build)
    shutil.copytree(source[1], dist)
    if extra_config:
        with open(build / "config.toml", "a") as f:
            f.write("\n" + extra_config)
    return build, dist


@contextlib.contextmanager
def _held(lock: Path, wait: bool = True):
    """An exclusive flock on ``lock`` for the block (the kernel frees it if the holder dies); True,
    or without ``wait`` False at once if another holds it."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def run_root(tmp_path_factory) -> Path:
    """The folder every process of this test run shares: pytest's base temporary folder, or with
    pytest-xdist the one above the workers' own (``popen-gw0``, ...)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared(tmp_path_factory, name: str, make, wait: bool = True) -> Path | None:
    """The folder ``name``, made by ``make(folder)`` once per test run and reused by every test and
    every xdist worker after that (they wait while it is being made). A ``make`` that fails leaves
    nothing behind, so the next test to ask tries again and reports its own failure. Without
    ``wait``: None at once if another process or thread is making it."""
    root = run_root(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)
    out, done = root / name, root / f"{name}.done"
    with _held(root / f"{name}.lock", wait) as mine:
        if not mine:
            return None
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            try:
                make(out)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
            done.touch()
    return out


def begin_shared(tmp_path_factory, name: str, make) -> threading.Thread:
    """Begin making the shared folder ``name`` (``shared``) in a thread of this process, unless it
    is made or being made already, so that it is ready, or nearer, when a test asks for it.

    The thread is not a daemon: the process waits for it before it ends, rather than leave a
    half-made folder for another worker to make again beside a build still running. If the make
    fails, the thread says nothing: the first test to ask makes it again and reports the failure."""
    run_root(tmp_path_factory)  # pytest's base folder, made here rather than raced for by the thread

    def begin():
        try:
            shared(tmp_path_factory, name, make, wait=False)
        except BaseException:  # noqa: BLE001, S110 - reported by the test that asks for it next
            pass

    thread = threading.Thread(target=begin, name=f"shared-{name}")
    thread.start()
    return thread


def make_all(config: Path, build: Path, dist: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`make all CONFIG=config BUILD=build DIST=dist`, as a user runs it (text out), the pipeline's
    commands forked from this process's fork servers (forkrun.make_vars)."""
    return subprocess.run(["make", "--no-print-directory", "all", f"CONFIG={config}", f"BUILD={build}",
                           f"DIST={dist}", *forkrun.make_vars(dict(os.environ)), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
