"""Faults: SIGKILL at any point, two runs at once, a read-only or full disk.

None of them may leave a partial file that make or a later stage takes as good, and the
next `make all` must end with the same bundle, byte for byte, as an uninterrupted run.

The writer itself (pipeline/fsutil.py, which every output goes through) is killed at each phase
of an atomic write in a process of its own, without TensorFlow; the real `make all` runs, killed
at every stage's write points and at observed moments, build tests/support/tiny.toml (the
default config's model, a fraction of its work): they prove make's recovery, not accuracy.
Their stages fork from the test process's fork servers (tests/support/makepy.py), except where
the test SIGKILLs make's whole process group: there every stage is a new interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.support import forkrun
from tests.support.builds import Built
from tests.support.core import ROOT, sha256_file
from tests.support.make_runs import make_argv

# Points at which a real run SIGKILLs itself (pipeline/fsutil.py's test hook): the file
# being written, the phase of its atomic write, and the output to delete first so that
# make reruns the stage that writes it. Every stage, before and after the rename.
KILL_POINTS = [
    ("config.toml", "written", "build/config.toml"),
    ("model.keras", "written", "build/model.keras"),
    ("history.json", "renamed", "build/train/history.json"),
    ("loss.png", "written", "build/train/loss.png"),
    ("reference.npz", "synced", "build/reference.npz"),
    ("model.tflite", "written", "build/model.tflite"),
    ("model.onnx", "written", "build/model.onnx"),
    ("model.onnx", "renamed", "build/model.onnx"),
    ("report.json", "written", "build/verify/report.json"),
    ("report.md", "synced", "build/verify/report.md"),
    ("golden.json", "written", "dist/bundle.tar.gz"),
    ("manifest.json", "written", "dist/bundle.tar.gz"),
    ("bundle.tar.gz", "written", "dist/bundle.tar.gz"),
]


def make_all(tmp: Path, config: Path, env: dict | None = None, fork: bool = True, **kw) -> subprocess.Popen:
    """`make all` into ``tmp``, in a session of its own (make_argv); with ``fork=False`` its stages
    are new interpreters, as a user's make runs them: a SIGKILL of make's process group then
    reaches every stage."""
    env = {**os.environ, **(env or {})}
    return subprocess.Popen(make_argv(tmp, f"CONFIG={config}", "all", env=env, fork=fork), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True, **kw)


def check_no_partial_files(tmp: Path) -> int:
    """Every visible output parses completely; return how many were checked."""
    checked = 0
    for p in (tmp / "build").rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            json.loads(data)
        elif p.suffix == ".npz":
            with np.load(p) as z:
                [z[k] for k in z.files]
        elif p.suffix == ".keras":
            assert zipfile.ZipFile(p).testzip() is None
        elif p.suffix == ".onnx":
            import onnx

            onnx.checker.check_model(onnx.load_from_string(data))
        elif p.suffix == ".png":
            assert data.endswith(b"IEND\xaeB`\x82"), p
        elif p.suffix == ".md":
            assert data.endswith(b"\n"), p
        checked += 1
    tarball = tmp / "dist" / "bundle.tar.gz"
    if tarball.exists():
        with tarfile.open(tarball) as tar:
            for m in tar.getmembers():
                if m.isfile():
                    tar.extractfile(m).read()
        checked += 1
    return checked


@pytest.fixture(scope="module")
def reference_sha(tiny) -> str:
    """The tiny config's bundle, built uninterrupted (the session's)."""
    return sha256_file(tiny.dist / "bundle.tar.gz")


PHASES = ("written", "synced", "renamed")
WRITE = "import sys; from pathlib import Path; from pipeline import fsutil; fsutil.write_bytes(Path(sys.argv[1]), sys.argv[2].encode())"


@pytest.mark.parametrize("before", [None, "the previous good file"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_writer_killed_at_each_phase_of_its_atomic_write_leaves_the_previous_file_or_none(phase, before, tmp_path):
    """pipeline/fsutil.atomic_path, which every stage's output goes through, SIGKILLed (its test hook)
    at each phase: the destination is the previous file (or none) until the rename, then the new one
    whole; the temporary left behind names its dead owner, so the next run knows it is garbage."""
    from pipeline import fsutil

    dest = tmp_path / "out" / "report.json"
    if before is not None:
        dest.parent.mkdir()
        dest.write_text(before)
    new = "the new file, " * 1000
    r = forkrun.python("-c", WRITE, str(dest), new, cwd=ROOT, timeout=120,
                       env={**os.environ, "PIPELINE_KILL_AT": f"report.json:{phase}"})
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    if phase == "renamed":
        assert dest.read_text() == new
    else:
        assert (dest.read_text() if dest.exists() else None) == before
    for tmp in dest.parent.glob(".report.json.pid*"):
        assert not fsutil.owner_alive(tmp.name), tmp.name


@pytest.mark.slow  # runs make all again and again: make test, not test-fast
def test_sigkill_at_every_write_point_then_make_all_recovers(tmp_path, tiny, reference_sha, capsys):
    kills = checked = 0
    for name, phase, force in KILL_POINTS:
        (tmp_path / force).unlink(missing_ok=True)
        p = make_all(tmp_path, tiny.config, env={"PIPELINE_KILL_AT": f"{name}:{phase}"})
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode != 0, f"{name}:{phase} was not reached:\n{out}"
        kills += 1
        checked += check_no_partial_files(tmp_path)
    p = make_all(tmp_path, tiny.config)
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    assert sha256_file(tmp_path / "dist" / "bundle.tar.gz") == reference_sha
    leftovers = [str(q) for q in tmp_path.rglob(".*.pid*")]
    assert leftovers == []
    with capsys.disabled():
        print(f"\n  faults: {kills} SIGKILLs at atomic-write points; {checked} outputs checked whole after them; "
              "partial files 0; recovered to the same bundle sha256")


# Moments a run is killed at, defined by progress the test sees on make's output (never
# by wall time): a stage's command echoed by make (its Python is starting or working) or
# a stage's result line (it is done; the next one is starting), each with the output to
# delete first so that the round has that work to do.
MOMENTS = [
    ("train starts", lambda line: line.endswith(" train --no-plot --export"), "build/model.keras"),
    ("train done", lambda line: line.startswith("train: "), "build/model.keras"),
    ("plot starts", lambda line: line.endswith(" plot --only loss"), "build/train/loss.png"),
    ("export starts", lambda line: line.endswith(" export"), "build/model.onnx"),  # alone: model.keras is current
    ("export done", lambda line: line.startswith("export: "), "build/model.onnx"),
    ("verify starts", lambda line: line.endswith(" verify"), "build/verify/report.json"),
    ("verify done", lambda line: line.startswith("verify: passed"), "build/verify/report.json"),
    ("bundle starts", lambda line: line.endswith(" bundle"), "dist/bundle.tar.gz"),
]


def kill_when(p: subprocess.Popen, seen) -> list[str]:
    """Read make's output until a line satisfies ``seen``, then SIGKILL make's whole process group."""
    lines = []
    for raw in p.stdout:
        lines.append(raw.decode().rstrip("\n"))
        if seen(lines[-1]):
            os.killpg(p.pid, signal.SIGKILL)
            break
    p.stdout.close()
    p.wait(timeout=300)
    return lines


@pytest.mark.slow  # runs make all again and again: make test, not test-fast
def test_sigkill_at_observed_moments_then_make_all_recovers(tmp_path, tiny, reference_sha, capsys):
    rng = random.Random(7)
    # A complete build to start from (the session's, copied with its times), so every round is partial work.
    shutil.copytree(tiny.build, tmp_path / "build")
    shutil.copytree(tiny.dist, tmp_path / "dist")
    rounds = rng.sample(MOMENTS, len(MOMENTS))  # each moment once, in a seeded order
    for name, seen, force in rounds:
        (tmp_path / force).unlink(missing_ok=True)  # missing: an earlier round's kill left that work undone
        p = make_all(tmp_path, tiny.config, fork=False)  # the group's SIGKILL must reach the stage too
        out = kill_when(p, seen)
        # Killed, not finished: make itself died of the SIGKILL, so the round cut real work.
        assert p.returncode == -signal.SIGKILL, f"{name}: make ended by itself:\n" + "\n".join(out)
        check_no_partial_files(tmp_path)
    p = make_all(tmp_path, tiny.config, fork=False)  # new interpreters throughout: the forked build's bundle
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    assert sha256_file(tmp_path / "dist" / "bundle.tar.gz") == reference_sha
    assert [str(q) for q in tmp_path.rglob(".*.pid*")] == []
    with capsys.disabled():
        print(f"\n  faults: {len(rounds)} SIGKILLs of the whole make process group at observed moments "
              f"({', '.join(sorted({r[0] for r in rounds}))}), recovered to the same bundle sha256")


def stopped_writer(folder: Path, name: str, deadline: float) -> int:
    """The pid of the process stopped (PIPELINE_STOP_AT) with its temporary of ``name`` written in ``folder``."""
    while time.monotonic() < deadline:
        for tmp in folder.glob(f".{name}.pid*"):
            pid = int(tmp.name.split(".pid")[1].split(".")[0])
            with contextlib.suppress(FileNotFoundError):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state == "T":
                    return pid
        time.sleep(0.05)  # polling for an observed state, not a guessed duration
    raise AssertionError(f"no process stopped at {name} within the time limit")


@pytest.mark.slow  # runs make all again and again: make test, not test-fast
def test_two_make_all_at_once_do_not_corrupt_each_other(tmp_path, tiny, reference_sha):
    # The first run stops itself mid-train, holding the build lock; the second starts then,
    # must say it waits, and only then does the first go on: the overlap is certain.
    a = make_all(tmp_path, tiny.config, env={"PIPELINE_STOP_AT": "model.keras:written"})
    pid = stopped_writer(tmp_path / "build", "model.keras", time.monotonic() + 300)
    b = make_all(tmp_path, tiny.config)
    # Failsafe only: if b never says it waits (the bug this test is for), let a go on at
    # last so that both end and the assertions below report it, instead of hanging.
    failsafe = threading.Timer(300, os.kill, (pid, signal.SIGCONT))
    failsafe.start()
    out_b = []
    for raw in b.stdout:
        out_b.append(raw.decode())
        if "another pipeline run is using" in out_b[-1]:
            break
    failsafe.cancel()
    os.kill(pid, signal.SIGCONT)
    out_a = a.communicate(timeout=300)[0].decode()
    out_b.append(b.communicate(timeout=300)[0].decode())
    assert a.returncode == 0 and b.returncode == 0, out_a + "".join(out_b)
    assert "waiting for" in "".join(out_b) and "another pipeline run is using" in "".join(out_b)
    assert sha256_file(tmp_path / "dist" / "bundle.tar.gz") == reference_sha
    check_no_partial_files(tmp_path)


@pytest.fixture
def mount(tmp_path):
    """Mount a small tmpfs (options given) at a fresh folder; skip where mounting is not allowed."""
    mounted = []

    def do(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield do
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def bundle_into(built, tmp_path: Path, dist: Path) -> str:
    """Run the bundle stage from a copy of the good build into ``dist``; expect exit 3 and one line."""
    b = Built(tmp_path, built.config)
    shutil.copytree(built.build, b.build)
    b.dist = dist
    r = b.run("bundle")
    assert r.returncode == 3, r.stderr
    (line,) = r.stderr.decode().splitlines()
    assert line.startswith("error: cannot write "), line
    return line


@pytest.mark.root  # mounts a tmpfs
def test_read_only_output_folder_is_one_clear_line_and_no_file(built, tmp_path, mount):
    ro = mount("ro", "ro,size=1m")
    line = bundle_into(built, tmp_path, ro / "dist")
    assert str(ro) in line and "Read-only file system" in line, line
    assert list(ro.iterdir()) == []


@pytest.mark.root  # mounts a tmpfs
def test_full_disk_is_one_clear_line_and_no_partial_file(built, tmp_path, mount):
    small = mount("full", "size=40k")
    line = bundle_into(built, tmp_path, small / "dist")
    assert "No space left on device" in line, line
    leftovers = [p for p in small.rglob("*") if p.is_file()]
    assert leftovers == []  # neither the bundle files nor their temporaries


@pytest.mark.root  # mounts a tmpfs
def test_full_disk_during_verify_keeps_the_previous_report(built, tmp_path, mount):
    small = mount("build", "size=600k")
    b = Built(tmp_path, built.config)
    b.build = small / "build"
    shutil.copytree(built.build, b.build, ignore=shutil.ignore_patterns("model.keras", "*.png", "history.json"))
    before = (b.build / "verify" / "report.json").read_bytes()
    filler = small / "filler"
    free = shutil.disk_usage(small).free
    filler.write_bytes(b"\0" * max(free - 4096, 0))
    r = b.run("verify")
    assert r.returncode == 3, r.stderr
    (line,) = r.stderr.decode().splitlines()
    # verify writes the plots' data, then the report: the first write that does not fit stops it
    assert ("plots.npz" in line or "report.json" in line) and "No space left on device" in line, line
    assert (b.build / "verify" / "report.json").read_bytes() == before
    assert [p.name for p in (b.build / "verify").iterdir() if p.name.startswith(".")] == []
