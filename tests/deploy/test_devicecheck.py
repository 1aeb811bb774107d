"""The one install path (deploy/wheelhouse.py's ``install``) and the device checks that use it,
without QEMU: small real packages from the index, real pip, offline and hash-checked
installs. (The emulated run itself is tests/pipeline/test_variants.py's pi-check case and `make pi-check`.)"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deploy import wheelhouse
from deploy.devicecheck import picheck, runtime_check
from tests.support.core import one_error_line, ROOT

# Small wheels: six is pure Python; MarkupSafe has a compiled module per platform, so an
# aarch64 install shows in its file names.
SIX = "six==1.17.0\n"
MARKUPSAFE = "MarkupSafe==3.0.2\n"


def fake_bundle(path: Path, requirements: str) -> Path:
    """A tarball with just bundle/requirements.txt and bundle/manifest.json (enough for what reads it)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("bundle/requirements.txt", requirements.encode()),
                           ("bundle/manifest.json", json.dumps({"model": {"file": "m"}, "files": {"m": "0"}}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def flip_a_byte(tar_path: Path, prefix: str) -> str:
    """Change one byte in the middle of the wheel ``prefix*`` inside the wheelhouse's wheels.tar."""
    with tarfile.open(tar_path) as tar:
        [member] = [m for m in tar.getmembers() if m.name.lower().startswith(prefix)]
    with open(tar_path, "r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    return member.name


@pytest.fixture(scope="module")
def x86_wheelhouse(tmp_path_factory) -> Path:
    """A cache holding six's x86_64 wheelhouse (one `pip download`), for the tests that install
    from it to copy."""
    cache = tmp_path_factory.mktemp("wh")
    wheelhouse.build(SIX, "x86_64:3.11:2.36", cache)
    return cache


@pytest.mark.slow  # downloads wheels (pip download) and installs them: make test, not test-fast
def test_install_puts_the_wheelhouse_in_a_venv_offline(tmp_path, x86_wheelhouse):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # as on the device
    shutil.copytree(x86_wheelhouse, tmp_path / "wh")
    out = wheelhouse.install(SIX, "x86_64:3.11:2.36", tmp_path / "wh", into=venv / "bin" / "python")
    assert out["wheels"] == ["six-1.17.0-py2.py3-none-any.whl"] and out["installed"] == str(venv / "bin" / "python")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import six; print(six.__version__)"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "1.17.0", r.stderr


@pytest.mark.slow  # downloads wheels (pip download) and installs them: make test, not test-fast
def test_install_refuses_a_wheel_whose_hash_changed(tmp_path):
    """One byte of a wheel changed in the cached wheelhouse: pip's hash check refuses it, as
    on the device, and the site folder is not made (nor reused later)."""
    cache, site = tmp_path / "wh", tmp_path / "site"
    house = wheelhouse.build(SIX, "aarch64:3.11:2.36", cache)
    assert flip_a_byte(Path(house["tar"]), "six-") == "six-1.17.0-py2.py3-none-any.whl"
    with pytest.raises(wheelhouse.WheelhouseError) as e:
        wheelhouse.install(SIX, "aarch64:3.11:2.36", cache, target_dir=site)
    assert str(e.value) == ("aarch64:3.11:2.36: offline install refused: THESE PACKAGES DO NOT MATCH THE HASHES "
                            "FROM THE REQUIREMENTS FILE: six==1.17.0")
    assert not site.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["wh"]  # no temporary left
    assert not [p for p in cache.iterdir() if p.name.startswith(".install.")]


@pytest.mark.slow  # downloads wheels (pip download) and installs them: make test, not test-fast
def test_install_refuses_a_pip_wheel_whose_hash_changed(tmp_path, x86_wheelhouse):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    shutil.copytree(x86_wheelhouse, tmp_path / "wh")
    house = wheelhouse.build(SIX, "x86_64:3.11:2.36", tmp_path / "wh")  # the copy's: no download
    assert Path(house["tar"]).is_relative_to(tmp_path)
    flip_a_byte(Path(house["tar"]), "pip-")
    with pytest.raises(wheelhouse.WheelhouseError, match=r"^x86_64:3\.11:2\.36: pip-26\.3-py3-none-any\.whl: "
                                                         r"sha256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64}$"):
        wheelhouse.install(SIX, "x86_64:3.11:2.36", tmp_path / "wh", into=venv / "bin" / "python")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import six"], capture_output=True)
    assert r.returncode != 0


def test_install_takes_exactly_one_destination(tmp_path):
    with pytest.raises(ValueError):
        wheelhouse.install(SIX, "x86_64:3.11:2.36", tmp_path, into="python3", target_dir=tmp_path / "s")
    with pytest.raises(ValueError):
        wheelhouse.install(SIX, "x86_64:3.11:2.36", tmp_path)


@pytest.mark.slow  # two pip installs of aarch64 wheels: make test, not test-fast
def test_picheck_installs_the_aarch64_wheelhouse_and_reuses_it(tmp_path, capsys):
    """pi-check's site folder is the aarch64 wheelhouse installed offline, named by its id; a
    second run reuses it; a run killed before .complete is redone."""
    site = picheck.ensure_site(tmp_path, MARKUPSAFE)
    [folder] = (tmp_path / "wheelhouse").glob("cp311-aarch64-glibc2.36-*")
    lock = (folder / "requirements.lock").read_text()
    assert "\nmarkupsafe==3.0.2 --hash=sha256:" in lock.lower()
    house = wheelhouse.build(MARKUPSAFE, picheck.TARGET, tmp_path / "wheelhouse")
    assert site == tmp_path / f"site-{house['id']}" and (site / ".complete").read_text() == house["id"] + "\n"
    assert [p.name for p in (site / "markupsafe").glob("_speedups*.so")] == ["_speedups.cpython-311-aarch64-linux-gnu.so"]
    assert "installing the aarch64:3.11:2.36 wheelhouse" in capsys.readouterr().err

    mtime = (site / ".complete").stat().st_mtime_ns
    assert picheck.ensure_site(tmp_path, MARKUPSAFE) == site
    assert (site / ".complete").stat().st_mtime_ns == mtime and capsys.readouterr().err == ""

    (site / ".complete").unlink()  # killed after pip, before the marker
    assert picheck.ensure_site(tmp_path, MARKUPSAFE) == site and (site / ".complete").exists()


@pytest.mark.slow  # trains or runs the pipeline again: make test, not test-fast
def test_runtime_check_makes_the_venv_from_the_bundles_requirements(tmp_path):
    """A bundle whose requirements.txt is not the source tree's gets a venv with the bundle's:
    six from the wheelhouse (offline, hash-checked) and pytest, and no numpy or onnxruntime."""
    tarball = fake_bundle(tmp_path / "b.tar.gz", SIX)
    cache = tmp_path / "rt"
    r = subprocess.run([sys.executable, "-m", "deploy.devicecheck.runtime_check", "--venv-only", "--tarball",
                        str(tarball), "--python", sys.executable, "--cache", str(cache)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv = Path(r.stdout.strip())
    assert venv == cache / f"py{minor}"
    code = ("import importlib.util as u, six, pytest; "
            "print(six.__version__, pytest.__version__, [m for m in ('numpy', 'onnxruntime') if u.find_spec(m)])")
    v = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    assert v.stdout.split() == ["1.17.0", runtime_check.PYTEST.split("==")[1], "[]"], v.stderr
    [lock] = (cache / "wheelhouse").glob(f"cp{minor.replace('.', '')}-x86_64-*/requirements.lock")
    assert "six==1.17.0 --hash=sha256:" in lock.read_text()
    house = wheelhouse.build(SIX, runtime_check.host_target(sys.version_info[:2]), cache / "wheelhouse")
    assert (venv / ".installed").read_text().startswith(f"wheelhouse {house['id']}\n")

    again = subprocess.run(r.args, cwd=ROOT, capture_output=True, text=True)  # reused: same path, same stamp
    assert again.returncode == 0 and again.stdout == r.stdout


def test_runtime_check_hands_every_python_the_bundles_requirements(tmp_path, monkeypatch):
    """The whole run (not --venv-only) makes each venv from the tarball's requirements.txt, not
    the source tree's (the venv step is recorded here; the tests "run" as a no-op)."""
    tarball = fake_bundle(tmp_path / "b.tar.gz", SIX)
    fake_python = tmp_path / "venv" / "bin" / "python"
    fake_python.parent.mkdir(parents=True)
    fake_python.write_text("#!/bin/sh\nexit 0\n")
    fake_python.chmod(0o755)
    calls = []

    def venv_for(python, minor, cache, requirements=None):
        calls.append(requirements)
        return tmp_path / "venv"

    monkeypatch.setattr(runtime_check, "venv_for", venv_for)
    monkeypatch.setattr(runtime_check, "candidates", lambda first: [first])
    code = runtime_check.main(["--tarball", str(tarball), "--python", sys.executable, "--cache", str(tmp_path / "rt")])
    assert code == 0 and calls == [SIX]


def test_runtime_check_runs_the_pythons_side_by_side_and_reports_each_in_order(tmp_path, monkeypatch, capsys):
    """Two Pythons at once (--jobs 2): each one's verdict and output, the summary in version order,
    and exit 1 when one of them fails."""
    tarball = fake_bundle(tmp_path / "b.tar.gz", SIX)
    venvs = {}
    for minor, code in ((10, 1), (12, 0)):
        python = tmp_path / f"venv3{minor}" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(f"#!/bin/sh\necho tests of 3.{minor}\nexit {code}\n")
        python.chmod(0o755)
        venvs[(3, minor)] = python.parent.parent
    monkeypatch.setattr(runtime_check, "venv_for", lambda python, minor, cache, requirements=None: venvs[minor])
    monkeypatch.setattr(runtime_check, "candidates", lambda first: ["py312", "py310"])
    monkeypatch.setattr(runtime_check, "version", lambda python: {"py310": (3, 10, "3.10.1", "py310"),
                                                                  "py312": (3, 12, "3.12.1", "py312")}[python])
    code = runtime_check.main(["--tarball", str(tarball), "--cache", str(tmp_path / "rt"), "--jobs", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "runtime-check: Python 3.10.1 (py310): FAILED (pytest exit 1)\ntests of 3.10\n" in out
    assert "runtime-check: Python 3.12.1 (py312): passed\ntests of 3.12\n" in out
    assert out.endswith("  Python 3.10.1 (py310): FAILED (pytest exit 1)\n  Python 3.12.1 (py312): passed\n"), out


def test_venv_only_without_a_tarball_uses_the_source_trees_requirements():
    assert runtime_check.requirements_of(None) == (ROOT / "runtime" / "requirements.txt").read_text()
    assert "runtime/requirements.txt" in runtime_check.__doc__


@pytest.mark.parametrize("module", ["deploy.devicecheck.runtime_check", "deploy.devicecheck.picheck"])
def test_a_tarball_that_is_not_one_is_one_line_exit_3(tmp_path, module):
    bad = tmp_path / "bundle.tar.gz"
    bad.write_text("not a tarball\n")
    r = subprocess.run([sys.executable, "-m", module, "--tarball", str(bad), "--cache", str(tmp_path / "c")],
                       cwd=ROOT, capture_output=True)
    assert r.returncode == 3 and r.stdout == b""
    assert one_error_line(r).endswith(f"{bad}: not a readable tarball (file could not be opened successfully)")
    no_reqs = tmp_path / "empty.tar.gz"
    with tarfile.open(no_reqs, "w:gz"):
        pass
    r = subprocess.run([sys.executable, "-m", module, "--tarball", str(no_reqs), "--cache", str(tmp_path / "c")],
                       cwd=ROOT, capture_output=True)
    assert r.returncode == 3 and one_error_line(r).endswith(f"{no_reqs}: no bundle/requirements.txt in it")



def test_an_emulated_pi_gets_its_arm64_ssh_keygen_and_says_what_its_runtime_needs(tmp_path, monkeypatch, capsys):
    """emulated_pi's host: bin/python3 and bin/ssh-keygen both run arm64 programs of the userland
    through the same QEMU command; every runtime process there needs EDGE_SSH_KEYGEN (printed as
    the inventory's edge_ssh_keygen, which the deploy passes on). No QEMU here: its path is faked."""
    import shlex

    from deploy.devicecheck import emulated_pi

    root = tmp_path / "cache" / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    monkeypatch.setattr(emulated_pi, "ensure_qemu", lambda: "/usr/bin/qemu-aarch64-static")
    monkeypatch.setattr(emulated_pi, "ensure_root", lambda cache: root)
    d = emulated_pi.make_device(tmp_path / "pi", tmp_path / "cache")
    keygen = tmp_path / "pi" / "bin" / "ssh-keygen"
    assert d["ssh_keygen"] == str(keygen) and d["environment"] == {"EDGE_SSH_KEYGEN": str(keygen)}
    last = keygen.read_text().splitlines()[-1]
    assert shlex.split(last) == ["exec", *shlex.split(d["launcher"]), str(root / "usr" / "bin" / "ssh-keygen"), "$@"]
    assert os.access(keygen, os.X_OK)
    assert emulated_pi.main(["--dir", str(tmp_path / "pi"), "--cache", str(tmp_path / "cache")]) == 0
    words = dict(w.split("=", 1) for w in shlex.split(capsys.readouterr().out))
    assert words["edge_ssh_keygen"] == d["ssh_keygen"] == d["environment"]["EDGE_SSH_KEYGEN"]
    assert words["edge_python_launcher"] == d["launcher"]
