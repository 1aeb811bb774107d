"""One deploy at a time per device (issue 19, section 3): the lock files/release.py (and
files/trusted_keys.py) hold under edge_root, first on its own (fast, no SSH), then through
`python -m deploy deploy` over real SSH to a test host (tests/support/sshfleet.py).

No verdict depends on timing: a deploy is made to wait by a lock this test holds itself (a
real flock on edge_root/.deploy.lock, with this process's pid written in it), and the tests
wait for observed progress (a process with the lock file open, a marker file a gate wrote).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.core import FAILSAFE, ROOT, wait_until
from tests.support.device_lock import HeldLock, openers
from tests.support.fleet import tar_bundle

RELEASE_PY = ROOT / "deploy" / "roles" / "edge" / "files" / "release.py"
TRUSTED_KEYS_PY = ROOT / "deploy" / "roles" / "edge" / "files" / "trusted_keys.py"


# A launcher's first line that lets the gate's speed measurement (`runtime bench`, after the
# selfcheck passed; release.py records whatever it gives) through without logging or waiting:
# these launchers stand for the selfcheck.
NOT_THE_BENCH = 'case "$*" in *" -m runtime bench "*) exit 0;; esac\n'


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def lock_doc(root: Path) -> dict | None:
    path = root / ".deploy.lock"
    text = path.read_text().strip() if path.exists() else ""
    return json.loads(text) if text else None


def temporaries(root: Path) -> list[str]:
    """What an interrupted or interleaved run would leave: unpack folders, half-made links."""
    found = [p.name for p in (root / "releases").glob(".incoming-*")]
    found += [p.name for p in root.glob("*.new-*")] + [p.name for p in (root / "releases").glob("*/.venv.new*")]
    return found


# --- release.py's lock on its own (no SSH) --------------------------------------------------

@pytest.fixture
def device(tmp_path) -> Path:
    """An edge_root with two releases (a manifest each) and current / previous."""
    root = tmp_path / "edge-model"
    for name in ("r1", "r2"):
        (root / "releases" / name).mkdir(parents=True)
        (root / "releases" / name / "manifest.json").write_text(
            json.dumps({"model": {"file": "model.onnx"}, "files": {"model.onnx": name * 8}}))
    os.symlink("releases/r1", root / "current")
    os.symlink("releases/r2", root / "previous")
    return root


def release(*args: str, script: Path = RELEASE_PY) -> subprocess.Popen:
    """release.py (or a .pyz of it) run as the device runs it."""
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> tuple[int, dict]:
    out, err = p.communicate(timeout=FAILSAFE)
    assert out.strip(), err
    return p.returncode, json.loads(out.strip().splitlines()[-1])


def links(root: Path) -> tuple:
    return tuple(os.readlink(root / n) if (root / n).is_symlink() else None for n in ("current", "previous"))


def test_a_held_lock_makes_release_py_busy_with_the_holders_pid_and_time(device):
    held = HeldLock(device / ".deploy.lock")
    try:
        rc, doc = finish(release("revert", str(device), "r2", "r1", "--lock-timeout", "0.2"))
        assert (rc, doc["reason"], doc.get("busy")) == (3, held.busy, True), doc
        assert links(device) == ("releases/r1", "releases/r2")  # nothing changed
        rc, doc = finish(subprocess.Popen([sys.executable, str(TRUSTED_KEYS_PY), "forget", str(device / "keys"),
                                           "--lock", str(held.path), "--lock-timeout", "0.2"],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        assert (rc, doc["reason"]) == (3, held.busy), doc  # the trusted-keys steps share the lock
    finally:
        held.release()


def test_release_py_waits_for_the_lock_then_switches(device):
    held = HeldLock(device / ".deploy.lock")
    try:
        p = release("revert", str(device), "r2", "r1", "--lock-timeout", str(FAILSAFE))

        def waiting():
            assert p.poll() is None, p.communicate()
            return p.pid in openers(held.path)

        wait_until("release.py at the lock", waiting)
        assert links(device) == ("releases/r1", "releases/r2")  # it waits: nothing switched yet
    finally:
        held.release()
    rc, doc = finish(p)
    assert rc == 0 and links(device) == ("releases/r2", "releases/r1"), doc
    assert "lock_taken_over" not in doc, doc  # released normally by its holder
    assert not (device / ".deploy.lock").exists()  # removed as it let go


def test_a_lock_left_by_a_killed_holder_is_taken_over(device):
    code = ("import importlib.util, os, sys, signal\n"
            f"spec = importlib.util.spec_from_file_location('release', {str(RELEASE_PY)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            f"m.lock({str(device)!r}, 5, 'install')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    dead = subprocess.run([sys.executable, "-c", code])
    assert dead.returncode == -signal.SIGKILL
    left = lock_doc(device)
    assert left and left["pid"] != os.getpid(), left  # the dead holder's record is still there
    rc, doc = finish(release("revert", str(device), "r2", "r1", "--lock-timeout", "0"))
    assert rc == 0 and doc["lock_taken_over"]["pid"] == left["pid"], doc
    assert links(device) == ("releases/r2", "releases/r1")


def fake_release_script(tmp_path: Path, name: str) -> Path:
    """A .pyz as deploy/wheelhouse.py makes it, around a tiny bundle (a manifest only)."""
    from deploy import wheelhouse

    folder = tmp_path / f"src-{name}" / "bundle"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"model": {"file": "m"}, "files": {"m": name * 4}, "n": name}))
    tarball = tar_bundle(folder, tmp_path / f"{name}.tar.gz")
    return wheelhouse.release_script(tarball, name * 12, tmp_path / "cache")


def test_two_installs_at_once_do_not_interleave_and_leave_no_temporaries(device, tmp_path):
    """Two release.py install (from their .pyz) at once: their gates (a script that logs and waits
    for a go file) run one after the other, and the second switches from the first."""
    log, go = tmp_path / "gate.log", tmp_path / "go"
    gate = tmp_path / "gate.sh"
    gate.write_text(f"#!/bin/sh\n{NOT_THE_BENCH}echo \"start $PWD\" >> {log}\nwhile [ ! -e {go} ]; do sleep 0.01; done\n"
                    f"echo \"end $PWD\" >> {log}\n")
    gate.chmod(0o755)
    (device / "venvs" / "v").mkdir(parents=True)
    # what interrupted runs left, under the old fixed names and the new per-pid ones
    (device / "releases" / ".incoming-aaaa-999999").mkdir()
    (device / "releases" / ".incoming-bbbb").mkdir()
    os.symlink("x", device / "releases" / "r1" / ".venv.new")
    os.symlink("releases/r1", device / "current.new-999999")
    scripts = {n: fake_release_script(tmp_path, n) for n in ("aaaa", "bbbb")}
    procs = {n: release("install", str(device), n, str(device / "venvs" / "v"), "--launcher", str(gate),
                        "--lock-timeout", str(FAILSAFE), script=scripts[n])
             for n in ("aaaa", "bbbb")}

    def both_at_the_lock_or_gate():
        for p in procs.values():
            assert p.poll() is None, p.communicate()
        starts = log.read_text().count("start") if log.exists() else 0
        waiting = [p for p in procs.values() if p.pid in openers(device / ".deploy.lock")]
        return starts == 2 or (starts == 1 and len(waiting) == 2)

    wait_until("one gate running, the other install at the lock", both_at_the_lock_or_gate)
    assert log.read_text().count("start") == 1, log.read_text()  # the second did not reach its gate
    go.touch()
    results = {n: finish(p) for n, p in procs.items()}
    assert all(rc == 0 for rc, _ in results.values()), results
    lines = log.read_text().split()
    assert len(lines) == 8 and lines[0] == "start" and lines[2] == "end" and lines[1] == lines[3], lines
    first = Path(lines[1]).name
    second = ({"aaaa", "bbbb"} - {first}).pop()
    assert links(device) == (f"releases/{second}", f"releases/{first}")
    assert results[second][1]["before"]["current"] == first, results  # it switched from the first's
    assert temporaries(device) == [], temporaries(device)
    assert lock_doc(device) is None


def test_two_installs_of_one_release_at_once_the_second_finds_it_current(device, tmp_path):
    """Two release.py install of the same release (the same .pyz) at once, while this test holds
    the lock: the first unpacks, gates and switches; the second, under the lock, finds that
    release current with its venv and changes nothing ("unchanged", its gate never run); with
    --trust-changed it gates that release again (the new trusted keys), switching nothing."""
    log = tmp_path / "gate.log"
    gate = tmp_path / "gate.sh"
    gate.write_text(f"#!/bin/sh\n{NOT_THE_BENCH}echo \"gate $PWD\" >> {log}\nexec \"$@\"\n")
    gate.chmod(0o755)
    venv = device / "venvs" / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 0\n")  # the selfcheck, as far as the gate can tell
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".edge-complete").touch()
    script = fake_release_script(tmp_path, "cccc")
    held = HeldLock(device / ".deploy.lock")
    try:
        procs = [release("install", str(device), "cccc", str(venv), "--launcher", str(gate),
                         "--lock-timeout", str(FAILSAFE), script=script) for _ in range(2)]

        def both_waiting():
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            return {p.pid for p in procs} <= openers(held.path)

        wait_until("both installs at the lock", both_waiting)
    finally:
        held.release()
    results = sorted((finish(p) for p in procs), key=lambda r: bool(r[1].get("unchanged")))
    (rc1, first), (rc2, second) = results
    assert (rc1, rc2) == (0, 0), results
    assert first["before"]["current"] == "r1" and first["unpacked"] and "unchanged" not in first, first
    assert second["unchanged"] is True and second["before"]["current"] == "cccc", second
    assert (second["current"], second["previous"]) == ("cccc", "r1"), second
    assert log.read_text().count("gate ") == 1, log.read_text()  # the second gated nothing
    assert links(device) == ("releases/cccc", "releases/r1")
    assert temporaries(device) == [] and lock_doc(device) is None
    # With new trusted keys staged, the running release is gated under them (as `gate` does).
    rc, doc = finish(release("install", str(device), "cccc", str(venv), "--launcher", str(gate), "--trust-changed",
                             "--lock-timeout", "0", script=script))
    assert rc == 0 and doc["unchanged"] is True and log.read_text().count("gate ") == 2, (doc, log.read_text())
    assert links(device) == ("releases/cccc", "releases/r1")


def test_an_install_byte_compiles_the_runtime_with_the_venvs_python_checked_by_hash(device, tmp_path):
    """The service cannot write __pycache__ (its release is read-only to it): install compiles
    runtime/ with the venv's Python, as .pyc files Python uses only while their source's hash
    matches, so neither a start nor a command pays for compiling, and an edited source still wins."""
    venv = device / "venvs" / "v"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    gate = tmp_path / "gate.sh"
    gate.write_text("#!/bin/sh\nexit 0\n")  # the selfcheck passes, as far as install can tell
    gate.chmod(0o755)
    folder = tmp_path / "src" / "bundle"
    (folder / "runtime").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"model": {"file": "m"}, "files": {"m": "dddd" * 4}}))
    (folder / "runtime" / "__init__.py").write_text("ANSWER = 42\n")
    tar_bundle(folder, tmp_path / "d.tar.gz")
    from deploy import wheelhouse

    script = wheelhouse.release_script(tmp_path / "d.tar.gz", "dddd" * 3, tmp_path / "cache")
    rc, doc = finish(release("install", str(device), "dddd", str(venv), "--launcher", str(gate),
                             "--lock-timeout", "0", script=script))
    assert rc == 0 and doc["current"] == "dddd", doc
    final = device / "releases" / "dddd"
    [pyc] = (final / "runtime" / "__pycache__").glob("__init__.*.pyc")
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b11, flags  # hash-based, and checked against the source at every import
    # ... and valid for this source, so Python runs it rather than compiling
    assert pyc.read_bytes()[8:16] == importlib.util.source_hash((final / "runtime" / "__init__.py").read_bytes())
    code = "import runtime; print(runtime.ANSWER, runtime.__spec__.cached)"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": ""}
    r = subprocess.run([sys.executable, "-c", code], cwd=final, capture_output=True, text=True, env=env)
    assert r.stdout.split() == ["42", str(pyc)], r.stderr
    (final / "runtime" / "__init__.py").write_text("ANSWER = 43\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=final, capture_output=True, text=True, env=env)
    assert r.stdout.split()[0] == "43", r.stderr  # the stale .pyc is not used


def test_precompile_is_best_effort(tmp_path):
    spec = importlib.util.spec_from_file_location("release_py", RELEASE_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "runtime").mkdir()
    assert mod.precompile(str(tmp_path), str(tmp_path / "no-venv")) is False  # no Python there: nothing, no error


# --- through the deploy, over SSH ---------------------------------------------------------

@pytest.fixture(scope="module")
def models(built, tmp_path_factory) -> dict:
    from tests.support.fleet import shifted_models

    return shifted_models(built, tmp_path_factory.mktemp("lockmodels"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lockruns")


@pytest.fixture(scope="module")
def host(fleet, models, runs, tmp_path_factory):
    """One device, deployed the first model (its venv installed: later deploys only unpack and switch)."""
    from tests.support.fleet import fleet_cmd

    h = fleet.add("locked", python="/usr/bin/python3")
    h.inventory = fleet.inventory(tmp_path_factory.mktemp("lockinv") / "inventory.ini", [h])
    r = fleet_cmd("deploy", h.inventory, tmp=runs, bundle=models["one"])
    assert r.rc == 0 and r.result(h) == "deployed", r.out[-3000:] + r.err
    return h


def start_deploy(host, bundle: Path, runs: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    report = runs / f"deploy-{time.monotonic_ns()}.json"
    e = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
         "ANSIBLE_SSH_CONTROL_PATH_DIR": str(runs / "cp"), "ANSIBLE_LOCAL_TEMP": str(runs / "ansible-tmp"),
         "ANSIBLE_NOCOLOR": "1"}
    p = subprocess.Popen([sys.executable, "-m", "deploy", "deploy", "--inventory", str(host.inventory), "--bundle",
                          str(bundle), "--report", str(report), *args], cwd=ROOT, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p, report


def end_deploy(p: subprocess.Popen, report: Path, host) -> tuple[int, str, str]:
    out = p.communicate(timeout=FAILSAFE)[0]
    rep = json.loads(report.read_text()) if report.exists() else {}
    return p.returncode, rep.get(host.name, {}).get("result", ""), out


def release_waiters(root: Path) -> set[int]:
    """release.py processes on the device (this machine) with the lock file open."""
    return {pid for pid in openers(root / ".deploy.lock") if " install " in cmdline(pid)}


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.root
def test_two_deploys_at_once_to_one_device_run_one_after_the_other(host, models, runs, capsys):
    """While the device's lock is held, two `python -m deploy deploy` of different models both
    reach release.py and wait there; once it is free, one deploys, then the other, from the
    first's release: current and previous are the two new releases, nothing left over."""
    from tests.support.fleet import sha12, state

    root = host.edge_root
    t = time.perf_counter()
    held = HeldLock(root / ".deploy.lock")
    before = state(host)  # (with the lock file this test holds)
    try:
        a = start_deploy(host, models["two"], runs)
        b = start_deploy(host, models["three"], runs)

        def both_waiting():
            assert a[0].poll() is None and b[0].poll() is None, "a deploy ended while the lock was held"
            return len(release_waiters(root)) == 2

        wait_until("both deploys' release.py at the device's lock", both_waiting)
        assert state(host) == before  # neither unpacked nor switched while it waited
    finally:
        held.release()
    ra, rb = end_deploy(*a, host), end_deploy(*b, host)
    assert (ra[0], ra[1]) == (0, "deployed"), ra[2][-3000:]
    assert (rb[0], rb[1]) == (0, "deployed"), rb[2][-3000:]
    s = state(host)
    two, three = sha12(models["two"]), sha12(models["three"])
    assert {s["current"], s["previous"]} == {f"releases/{two}", f"releases/{three}"}, s  # the second from the first
    assert set(s["releases"]) >= {two, three} and s["other"] == [], s
    assert temporaries(root) == [] and lock_doc(root) is None
    with capsys.disabled():
        print(f"\n  two deploys at once to one device, one after the other: {time.perf_counter() - t:.1f} s")


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.root
def test_a_deploy_and_a_rollback_busy_past_the_timeout_change_nothing(host, models, runs):
    """The lock held (by this test, its pid recorded) longer than edge_lock_timeout: the deploy's
    and the rollback's rows say `busy: another deploy (pid N, since T)`, exit 2, and the device
    is as it was (links, their mtimes, releases)."""
    from tests.support.fleet import fleet_cmd, state

    root = host.edge_root
    held = HeldLock(root / ".deploy.lock")
    before = (state(host), os.lstat(root / "current").st_mtime_ns)
    try:
        r = fleet_cmd("deploy", host.inventory, "-e", "edge_lock_timeout=0.5", tmp=runs, bundle=models["four"])
        assert r.rc == 2, r.out[-3000:]
        assert r.result(host) == held.busy, r.report
        assert re.search(rf"^{host.name}\s.*{re.escape(held.busy)}$", r.out, re.M), r.out[-2000:]  # the table
        assert (state(host), os.lstat(root / "current").st_mtime_ns) == before
        r = fleet_cmd("rollback", host.inventory, "-e", "edge_lock_timeout=0.5", tmp=runs)
        assert r.rc == 2 and r.result(host) == held.busy, r.report
        assert (state(host), os.lstat(root / "current").st_mtime_ns) == before
    finally:
        held.release()
    assert temporaries(root) == []


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.root
def test_a_deploy_killed_holding_the_lock_then_a_rerun_takes_it_over(host, models, runs, tmp_path):
    """release.py is kill -9'd while it holds the lock (found by the pid in the lock file, at an
    observed moment: its gate started, through a launcher that writes a marker and waits); the
    lock file still names it. The rerun takes the lock at once and deploys."""
    from tests.support.fleet import fleet_cmd, sha12, state

    root = host.edge_root
    before = state(host)
    mark = tmp_path / "gate-started"
    hold = tmp_path / "hold.sh"
    hold.write_text(f"#!/bin/sh\necho $$ > {mark}.tmp && mv {mark}.tmp {mark}\nexec sleep {int(FAILSAFE)}\n")
    hold.chmod(0o755)
    p, report = start_deploy(host, models["four"], runs, "-e", f"edge_python_launcher={hold}")
    try:
        def gate_started():
            assert p.poll() is None, p.communicate()[0][-3000:]
            return mark.exists()

        wait_until("the killed deploy's gate", gate_started)
        holder = lock_doc(root)["pid"]
        assert " install " in cmdline(holder) and holder in openers(root / ".deploy.lock"), cmdline(holder)
        os.kill(holder, signal.SIGKILL)
        os.kill(int(mark.read_text()), signal.SIGKILL)
        rc, result, out = end_deploy(p, report, host)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 2 and not result.startswith("busy"), (result, out[-3000:])
    assert lock_doc(root)["pid"] == holder and not Path(f"/proc/{holder}").exists()  # left by a dead holder
    s = state(host)
    assert (s["current"], s["previous"]) == (before["current"], before["previous"]), s
    r = fleet_cmd("deploy", host.inventory, "-e", "edge_lock_timeout=0", tmp=runs, bundle=models["four"])
    assert r.rc == 0 and r.result(host) == "deployed", r.out[-3000:]
    s = state(host)
    assert (s["current"], s["previous"]) == (f"releases/{sha12(models['four'])}", before["current"]), s
    assert temporaries(root) == [] and lock_doc(root) is None and s["other"] == [], s
