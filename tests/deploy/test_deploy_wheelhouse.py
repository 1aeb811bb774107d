"""deploy/wheelhouse.py and the device-side release, venv and service scripts, without SSH: the pins, the
markers, what the device gets, and the scripts' refusals."""

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
from tests.support.core import ROOT, sha256_bytes, wait_until
from tests.support.fleet import SPEED_TEXT, speed_record

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


PROBE_PY = wheelhouse.RELEASE_PY.parent / "probe.py"


def bundle_files(folder: Path) -> dict[str, bytes]:
    """The files of an unpacked bundle, as its tarball holds them (not the .pyc it was given)."""
    return {f"bundle/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def probed_speed(root: Path):
    r = subprocess.run([sys.executable, str(PROBE_PY), str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["speed"]


def test_the_gate_records_the_releases_speed_and_a_bench_that_fails_refuses_nothing(tmp_path):
    """release.py install, as the deploy runs it on the device (this venv as the release's): after
    the selfcheck, `runtime bench` (bounded) is recorded in the release folder and printed; the
    probe (fleet-status) reads it for the current release. Then a release whose bench fails (a
    launcher that runs the selfcheck but refuses the bench, exit 2) is recorded as not measured,
    with the bench's last line, and still deployed."""
    from tests.support.bundles import multi_bundle, signature_bundle

    root = tmp_path / "root"
    assert probed_speed(root) is None  # no release: nothing to show
    refuse = tmp_path / "refuse-bench"
    refuse.write_text('#!/bin/sh\ncase "$*" in *" -m runtime bench "*) echo "error: no bench here" >&2; exit 2;; esac\n'
                      'exec "$@"\n')
    refuse.chmod(0o755)
    for name, folder, launcher in (("multi", multi_bundle(tmp_path / "src-multi"), ""),
                                   ("image", signature_bundle(tmp_path / "src-image", "image"), str(refuse))):
        pyz = release_pyz(tmp_path, bundle_files(folder))
        r = subprocess.run([sys.executable, str(pyz), "install", str(root), name, sys.prefix, "--launcher", launcher,
                            "--lock-timeout", "5"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert doc["current"] == name, doc
        recorded = json.loads((root / "releases" / name / ".edge-speed.json").read_text())
        assert recorded == doc["speed"] and recorded["release"] == name and recorded["emulated"] is bool(launcher)
        assert 0 < recorded["seconds"] < 60, recorded
        text = probed_speed(root)["text"]
        if name == "multi":
            assert speed_record(root, name) == recorded
            assert SPEED_TEXT.fullmatch(text), text
        else:
            assert (recorded["ok"], recorded["reason"]) == (False, "bench exit 2: error: no bench here"), recorded
            assert text == "not measured: bench exit 2: error: no bench here"
    assert not [p.name for p in root.rglob(".edge-speed.json.tmp-*")]


def test_a_bench_that_hangs_is_killed_and_recorded_and_the_probe_reads_any_record(tmp_path):
    """release.measure's bound (its timeout, through the launcher as an emulated device runs the
    venv's Python) and the probe's reading of every kind of record."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("release", wheelhouse.RELEASE_PY)
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    root = tmp_path / "root"
    (root / "releases" / "r1").mkdir(parents=True)
    (root / "current").symlink_to("releases/r1")
    hang = tmp_path / "hang"  # a launcher that forks what hangs, and waits for it
    hang.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {tmp_path / 'child'}\nwait\n")
    hang.chmod(0o755)
    rec = release.measure(str(root), "r1", [str(hang)], timeout=0.5)
    assert (rec["ok"], rec["reason"], rec["emulated"]) == (False, "bench did not finish within 0.5 s (killed)", True)
    child = int((tmp_path / "child").read_text())

    def child_gone() -> bool:  # killed with the launcher: no bench left running on the device
        try:
            return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    wait_until("the hung bench's child killed", child_gone)
    assert probed_speed(root)["text"] == "not measured: bench did not finish within 0.5 s (killed)"

    record = root / "releases" / "r1" / ".edge-speed.json"
    good = {"ok": True, "threads": 2, "calls": 300, "p50_us": 9.876, "p99_us": 1234.5, "peak_rss_mb": 57.62}
    for doc, text in [
        (good, "p50 9.88 \u00b5s, p99 1234 \u00b5s, 57.6 MB, 2 threads"),
        ({**good, "threads": 1, "emulated": True}, "p50 9.88 \u00b5s, p99 1234 \u00b5s, 57.6 MB, 1 thread, emulated"),
        ({**good, "p99_us": None}, "unreadable: .edge-speed.json lacks float() argument must be a string or a real "
                                   "number, not 'NoneType'"),
        ({"ok": False}, "not measured: no reason recorded"),
    ]:
        record.write_text(json.dumps(doc))
        assert probed_speed(root)["text"] == text
    for garbled, why in [(b'{"ok": tr', "unreadable: .edge-speed.json: "), (b"[1, 2]", "unreadable: .edge-speed.json: "
                                                                              "not a JSON object"), (b"\xff", "unreadable: ")]:
        record.write_bytes(garbled)
        got = probed_speed(root)
        assert got["ok"] is False and got["text"].startswith(why), got


def test_pull_modes_ansible_core_is_the_version_the_deploying_machine_pins():
    """deploy/pull-requirements.txt (a device's ansible-pull in pull mode) pins the ansible-core
    of requirements.txt: the role is tested with that one."""
    def pins(path):
        return re.findall(r"^ansible-core==(\S+)", (ROOT / path).read_text(), re.M)

    assert pins("deploy/pull-requirements.txt") == pins("requirements.txt") != [], (
        pins("deploy/pull-requirements.txt"), pins("requirements.txt"))


VENV_PY = ROOT / "deploy" / "roles" / "edge" / "files" / "venv.py"


@pytest.mark.parametrize("case", ["pip-wheel-changed", "not-a-tar", "no-python"])
def test_the_device_side_venv_install_refuses_and_leaves_no_wheels_and_no_complete_venv(tmp_path, case):
    """venv.py as `script` runs it, on the wheels' tar `copy` put in wheels/<id>/: pip's wheel
    whose bytes are not the wheelhouse's sha256 (a venv is never made), a tar that is not one, or
    a device Python that does not run. Exit 1, the JSON line names the step, and wheels/ is gone;
    no .edge-complete."""
    root, wid = tmp_path / "edge-model", "cp311-x86_64-000000000000"
    (root / "wheels" / wid).mkdir(parents=True)
    tar = root / "wheels" / wid / "wheels.tar"
    if case == "not-a-tar":
        tar.write_bytes(b"not a tar")
    else:
        with tarfile.open(tar, "w") as t:
            for name, data in (("pip-26.3-py3-none-any.whl", b"changed in transit"), ("requirements.lock", b"")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    venv = root / "venvs" / wid
    want = sha256_bytes(b"changed in transit" if case == "no-python" else b"the wheelhouse's pip")
    r = subprocess.run([sys.executable, str(VENV_PY), str(root), wid, str(venv), "pip-26.3-py3-none-any.whl", want,
                        "numpy", "--python", str(tmp_path / "no-python3"), "--launcher", ""],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr == "", r.stdout + r.stderr
    [line] = r.stdout.splitlines()
    reason = json.loads(line)["reason"]
    if case == "not-a-tar":
        assert reason.startswith("Copy the wheels this device needs: "), reason
    elif case == "no-python":
        assert reason == f"Create the venv: [Errno 2] No such file or directory: '{tmp_path / 'no-python3'}'", reason
    else:
        assert reason == (f"pip-26.3-py3-none-any.whl | sha256 mismatch: expected {want}, "
                          f"got {sha256_bytes(b'changed in transit')}"), reason
    assert sorted(p.name for p in root.iterdir()) == (["venvs"] if case == "no-python" else []), list(root.iterdir())
    assert not venv.exists()


SERVICE_PY = ROOT / "deploy" / "roles" / "edge" / "files" / "service.py"


@pytest.fixture
def healthz():
    """A /healthz on 127.0.0.1 (an ephemeral port) answering 200 with the model in `state`."""
    import http.server
    import threading

    state = {"model": "a" * 64, "gets": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            state["gets"] += 1
            body = json.dumps({"status": "ok", "model": state["model"]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    yield state
    server.shutdown()
    thread.join(timeout=10)


def restart(*args):
    r = subprocess.run([sys.executable, str(SERVICE_PY), "restart", *args], capture_output=True, text=True, timeout=60)
    [line] = r.stdout.splitlines()
    return r.returncode, json.loads(line)


def test_the_device_side_restart_waits_for_the_model_and_names_the_step_that_failed(healthz, tmp_path):
    """service.py restart with the command manager, as `script` runs it: the restart command runs, then
    /healthz is polled until it reports the expected model; the wrong model until the timeout, a
    restart command that fails, or nothing listening: exit 1, the reason naming the step."""
    marker = tmp_path / "restarted"
    ok = ["--command", json.dumps(["touch", str(marker)]), "--url", healthz["url"], "--timeout", "1"]
    assert restart(*ok, "--expect", healthz["model"]) == (0, {"ok": True}) and marker.exists()
    assert restart(*ok, "--expect", "") == (0, {"ok": True})  # any healthy model
    gets = healthz["gets"]
    rc, doc = restart(*ok, "--expect", "b" * 64)
    assert rc == 1 and doc["reason"] == (f"Wait for /healthz to answer 200 for the model: after 2 tries, status 200, "
                                         f"model {healthz['model']} (expected {'b' * 64})"), doc
    assert healthz["gets"] == gets + 2
    rc, doc = restart("--command", json.dumps(["false"]), "--url", healthz["url"], "--timeout", "1", "--expect", "")
    assert rc == 1 and doc["reason"] == "Restart the service with edge_service_restart_command: exit 1", doc
    rc, doc = restart("--command", '["true"]', "--url", closed_port_url(), "--timeout", "0", "--expect", "")
    assert rc == 1 and doc["reason"].startswith("Wait for /healthz to answer 200 for the model: after 1 tries, "
                                                "Request failed: "), doc
    assert restart("--url", healthz["url"], "--timeout", "1")[0] == 2  # neither --systemd nor --command


def closed_port_url() -> str:
    """A /healthz URL on a port the kernel picked and that was closed again: nothing listens there."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/healthz"


def test_the_device_side_drop_in_names_the_release_and_the_trusted_keys_and_is_written_once(tmp_path, monkeypatch,
                                                                                           capsys):
    """service.py's drop-in (its dropin mode, as revert.yml runs it; install writes the same): the
    lines systemd reads, rewritten only when they change, mode 0644. Its path moved under tmp_path:
    the real one is /etc/systemd/system, the systemd tier's (tests/deploy/test_deploy_systemd.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_service_py", SERVICE_PY)
    service = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(service)
    monkeypatch.setattr(service, "DROPIN", str(tmp_path / "edge-model.service.d" / "deploy.conf"))
    runs = [["dropin", "/opt/edge-model", "--trusted-keys", "/etc/edge-model/trusted_keys", "--ssh-keygen", "/usr/bin/ssh-keygen"],
            ["dropin", "/opt/edge-model", "--trusted-keys", "/etc/edge-model/trusted_keys", "--ssh-keygen", "/usr/bin/ssh-keygen"],
            ["dropin", "/opt/edge-model"]]
    changed = []
    for argv in runs:
        assert service.main(argv) == 0
        changed.append(json.loads(capsys.readouterr().out)["changed"])
        if argv is runs[0]:
            assert Path(service.DROPIN).read_text() == (
                "# Written by the deploy (deploy/roles/edge): the release the service runs, and the keys it trusts.\n"
                "[Service]\nEnvironment=EDGE_BUNDLE=/opt/edge-model/current\n"
                "Environment=EDGE_TRUSTED_KEYS=/etc/edge-model/trusted_keys\nEnvironment=EDGE_SSH_KEYGEN=/usr/bin/ssh-keygen\n")
    assert changed == [True, False, True]
    assert Path(service.DROPIN).read_text().splitlines()[1:] == ["[Service]", "Environment=EDGE_BUNDLE=/opt/edge-model/current"]
    assert Path(service.DROPIN).stat().st_mode & 0o777 == 0o644 and sorted(p.name for p in Path(service.DROPIN).parent.iterdir()) == ["deploy.conf"]
    assert service.main(["install", "/x"]) == 2 and "usage: " in capsys.readouterr().out
