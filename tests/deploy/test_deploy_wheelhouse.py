"""deploy/wheelhouse.py and the device-side release script, without SSH: the pins, the markers,
what the device gets, and the release script's refusals."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from deploy import wheelhouse
from tests.support.core import ROOT, sha256_bytes

REQUIREMENTS = (ROOT / "runtime" / "requirements.txt").read_text()


def test_markers_are_evaluated_for_the_device_python_not_pips():
    assert wheelhouse.resolve_markers(REQUIREMENTS, "aarch64", (3, 10)) == ["onnxruntime==1.23.2", "numpy==2.2.6"]
    assert wheelhouse.resolve_markers(REQUIREMENTS, "x86_64", (3, 12)) == ["onnxruntime==1.32.0", "numpy==2.4.6"]


def test_platform_tags_follow_the_device_glibc():
    tags = wheelhouse.platforms("aarch64", (2, 36))
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_28_aarch64" in tags
    assert tags[-1] == "manylinux2014_aarch64" and "manylinux_2_37_aarch64" not in tags
    assert "manylinux_2_28_x86_64" not in wheelhouse.platforms("x86_64", (2, 27))


@pytest.mark.slow  # pip downloads a target's wheels: make test, not test-fast
def test_the_wheelhouse_pins_every_wheel_by_sha256(tmp_path, bundle_tarball):
    out = wheelhouse.main(["--tarball", str(bundle_tarball), "--target", "x86_64:3.11:2.36", "--cache", str(tmp_path)])
    assert out == 0
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("cp311-x86_64-glibc2.36-")]
    lock = [ln for ln in (folder / "requirements.lock").read_text().splitlines() if not ln.startswith("#")]
    with tarfile.open(folder / "wheels.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    wheels = {n: b for n, b in members.items() if n.endswith(".whl") and not n.startswith("pip-")}
    assert {re.match(r"[^=]+", ln)[0].lower() for ln in lock} >= {"numpy", "onnxruntime"}
    assert len(lock) == len(wheels)
    for line in lock:
        name, version, digest = re.fullmatch(r"([\w.-]+)==(\S+) --hash=sha256:([0-9a-f]{64})", line).groups()
        [whl] = [n for n in wheels if n.lower().startswith(f"{name.lower().replace('-', '_')}-{version}-")]
        assert sha256_bytes(wheels[whl]) == digest
        assert whl.endswith(("-none-any.whl", "x86_64.whl")), whl
    pip_wheel, pip_sha = (folder / "pip.txt").read_text().split()
    assert sha256_bytes(members[pip_wheel]) == pip_sha
    assert not list(folder.glob("*.whl"))  # kept once, in the tar


def test_a_bad_target_is_one_line(tmp_path, bundle_tarball):
    r = subprocess.run([sys.executable, "-m", "deploy.wheelhouse", "--tarball", str(bundle_tarball),
                        "--target", "armv7l:3.11:2.36", "--cache", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr == ("error: wheelhouse: target 'armv7l:3.11:2.36': expected <arch>:<python X.Y>:<glibc X.Y> with "
                        "arch one of aarch64, x86_64, e.g. aarch64:3.11:2.36\n")


def release_pyz(tmp_path: Path, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pyz = tmp_path / "release.pyz"
    with zipfile.ZipFile(pyz, "w") as z:
        z.writestr("__main__.py", wheelhouse.RELEASE_PY.read_bytes())
        z.writestr("bundle.tar.gz", buf.getvalue())
    return pyz


def test_the_release_script_refuses_a_bundle_that_escapes_its_folder(tmp_path):
    root = tmp_path / "root"
    pyz = release_pyz(tmp_path, {"bundle/model.onnx": b"x", "bundle/../../evil": b"y"})
    r = subprocess.run([sys.executable, str(pyz), "install", str(root), "abc", str(tmp_path / "venv")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and "bundle/../../evil" in doc["reason"]
    assert not (tmp_path / "evil").exists() and not (root / "current").exists()
    assert not (root / "releases" / "abc").exists()


def test_the_release_script_refuses_a_rollback_with_nothing_to_go_back_to(tmp_path):
    root = tmp_path / "root"
    (root / "releases" / "aaa").mkdir(parents=True)
    (root / "current").symlink_to("releases/aaa")
    r = subprocess.run([sys.executable, str(wheelhouse.RELEASE_PY), "rollback", str(root)], capture_output=True, text=True)
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"] == "no previous release to roll back to (current: aaa)"
    assert (root / "current").readlink() == Path("releases/aaa")


def test_pull_modes_ansible_core_is_the_version_the_deploying_machine_pins():
    """deploy/pull-requirements.txt (a device's ansible-pull in pull mode) pins the ansible-core
    of requirements.txt: the role is tested with that one."""
    def pins(path):
        return re.findall(r"^ansible-core==(\S+)", (ROOT / path).read_text(), re.M)

    assert pins("deploy/pull-requirements.txt") == pins("requirements.txt") != [], (
        pins("deploy/pull-requirements.txt"), pins("requirements.txt"))
