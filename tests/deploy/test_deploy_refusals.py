"""Devices the deploy must refuse (32-bit ARM, an unknown host key, a service edge_root its unit
cannot see, a Python below the minimum), a connection cut mid-install, a wheel changed in the
wheelhouse, and a missing inventory or bundle: each one line, nothing left half-done."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support.core import FAILSAFE, ROOT, wait_until
from tests.support.fleet import fleet_cmd, predict, pyenv_python, sha12, state

# SSH test hosts (sshd as root): `make test` only, not test-fast.
pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root]


FAKE_ARMV7L = (  # a 32-bit Raspberry Pi OS, as far as Python can tell: os.uname().machine
    "import os\n"
    "_u = os.uname()\n"
    "os.uname = lambda: os.uname_result((_u.sysname, _u.nodename, _u.release, _u.version, 'armv7l'))\n"
)


def test_refused_devices_and_unknown_host_keys(fleet, models, tmp, tmp_path):
    """armv7l, an unknown host key, a service edge_root its unit could not see, a Python below
    the minimum: each refused with its reason, nothing written on them, while a good device in
    the same run is deployed."""
    fake = tmp_path / "armv7l"
    (fake / "site").mkdir(parents=True)
    (fake / "site" / "sitecustomize.py").write_text(FAKE_ARMV7L)
    (fake / "python3").write_text(f"#!/bin/sh\nPYTHONPATH={fake / 'site'} exec /usr/bin/python3 \"$@\"\n")
    (fake / "python3").chmod(0o755)
    py39 = pyenv_python("9")
    refused = [fleet.add("armv7l", python=str(fake / "python3"), seed=False),
               fleet.add("stranger", trusted=False, seed=False)]  # not seeded: nothing may be written on them
    refused += [fleet.add("hidden-root", vars={"edge_service": True, "edge_root": "/root/edge-model-test"}, seed=False)]
    refused += [fleet.add("old-python", python=py39, seed=False)] if py39 else []
    good = fleet.add("good")
    inv = fleet.inventory(tmp_path / "inventory.ini", [*refused, good])
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=models["one"])
    assert r.rc != 0, r.out[-3000:]
    assert r.result(good) == "deployed", r.report
    assert r.result(refused[0]).startswith("refused: armv7l with a 64-bit Python is 32-bit ARM, and onnxruntime "
                                           "ships no 32-bit ARM wheels; install the 64-bit Raspberry Pi OS"), r.report
    assert r.result(refused[1]).startswith("unreachable:") and "Host key verification failed" in r.result(refused[1])
    assert r.result(refused[2]) == ("refused: edge_service is on and edge_root /root/edge-model-test is under /home or "
                                    "/root, which the service's unit hides (ProtectHome=yes); set edge_root outside "
                                    "them, e.g. /opt/edge-model")
    if py39:
        assert re.fullmatch(r"refused: \S+ is Python 3\.9\.\d+; the runtime needs 3\.10 or newer", r.result(refused[3]))
    for h in refused:
        assert not h.edge_root.exists(), h.name
    assert not Path("/root/edge-model-test").exists()


def test_sshd_killed_mid_deploy_then_a_rerun_converges(fleet, models, answers, tmp, tmp_path):
    """The device's sshd and its sessions are killed while the wheels are being installed (an
    observed moment: the wheel tar unpacked on the device); the run reports it unreachable,
    and the next run, once the device is back, finishes the deploy with nothing left over."""
    h = fleet.add("flaky", seed=False)  # the kill comes while its wheels are being installed
    inv = fleet.inventory(tmp_path / "inventory.ini", [h])
    report = tmp / "killed.json"
    e = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
         "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"), "ANSIBLE_NOCOLOR": "1"}
    p = subprocess.Popen([sys.executable, "-m", "deploy", "deploy", "--inventory", str(inv), "--bundle",
                          str(models["one"]), "--report", str(report)], cwd=ROOT, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def wheels_arrived():
            assert p.poll() is None, f"the deploy ended before the kill: {p.stdout.read()[-3000:]}"
            return list(h.edge_root.glob("wheels/*/requirements.lock"))

        wait_until("the wheels on the device", wheels_arrived)
        h.kill()
        out = p.communicate(timeout=FAILSAFE)[0]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 4, out[-3000:]  # ansible-playbook: a host unreachable
    assert json.loads(report.read_text())["flaky"]["result"].startswith("unreachable:")
    assert not (h.edge_root / "current").exists()
    h.start()
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=models["one"])
    assert r.rc == 0 and r.result(h) == "deployed", r.out[-3000:]
    s = state(h)
    assert s["current"] == f"releases/{sha12(models['one'])}" and s["other"] == [], s
    assert s["releases"] == [sha12(models["one"])] and len(s["venvs"]) == 1, s
    assert predict(h) == answers["one"]


def test_missing_inventory_and_bundle_are_one_line_errors(tmp_path):
    base = [sys.executable, "-m", "deploy", "deploy"]
    r = subprocess.run([*base, "--inventory", str(tmp_path / "nope.ini")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: inventory {tmp_path / 'nope.ini'}: not found; copy deploy/inventory.example.ini")
    (tmp_path / "inv.ini").write_text("[edge]\n")
    r = subprocess.run([*base, "--inventory", str(tmp_path / "inv.ini"), "--bundle", str(tmp_path / "no.tar.gz")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == f"error: bundle {tmp_path / 'no.tar.gz'}: not found; run `make bundle` first (make deploy does)\n"


def test_a_wheel_changed_in_the_wheelhouse_is_refused_on_the_device(fleet, models, tmp, tmp_path, bundle_tarball):
    """One byte of numpy's wheel flipped in the wheelhouse (the cache, or the copy in transit):
    pip on the device refuses it against the lock's sha256, the venv is never marked
    complete, and the device gets no release."""
    from deploy import wheelhouse

    cache = tmp_path / "wheelhouse"
    assert wheelhouse.main(["--tarball", str(models["one"]), "--target", "x86_64:3.11:2.36", "--cache", str(cache)]) == 0
    [tar_path] = cache.glob("cp311-x86_64-*/wheels.tar")
    with tarfile.open(tar_path) as tar:
        [numpy] = [m for m in tar.getmembers() if m.name.startswith("numpy-")]
    with open(tar_path, "r+b") as f:
        f.seek(numpy.offset_data + numpy.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    h = fleet.add("tampered", seed=False)  # pip on the device is what refuses the wheel
    inv = fleet.inventory(tmp_path / "inventory.ini", [h])
    r = fleet_cmd("deploy", inv, "-e", f"edge_wheelhouse_cache={cache}", tmp=tmp, bundle=models["one"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(h).startswith("rolled back: Install the wheels, offline and hash-checked:"), r.report
    assert "HASHES" in r.out, r.out[-3000:]
    s = state(h)
    assert s["current"] is None and s["releases"] == [], s
    assert not list(h.edge_root.glob("venvs/*/.edge-complete"))
