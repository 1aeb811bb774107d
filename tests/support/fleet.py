"""Deploy runs the tests share: `python -m deploy` and `make deploy` against test hosts, what a
device's edge_root holds, what it answers, and the tarballs deployed (the session's bundle and
copies of it with known answers)."""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.bundles import shifted_bundle
from tests.support.core import FAILSAFE, ROOT, sha256_file


def pyenv_python(minor: str) -> str | None:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", f"3.{minor}.*", "bin", "python3")))
    return found[-1] if found else shutil.which(f"python3.{minor}")


def tar_bundle(folder: Path, tarball: Path) -> Path:
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="bundle")
    return tarball


def shifted_models(built, d: Path, count: int = 3) -> dict:
    """Tarballs in d: "one", the session's bundle, and "two", "three", ... (count of them), its
    model +1, +2, ... degF (conftest.shifted_bundle); "one" is also unpacked in d/one/bundle."""
    with tarfile.open(built.dist / "bundle.tar.gz") as tar:
        tar.extractall(d / "one", filter="data")
    out = {"one": built.dist / "bundle.tar.gz"}
    for name, delta in list(zip(("two", "three", "four", "five"), (1.0, 2.0, 3.0, 4.0)))[:count]:
        out[name] = tar_bundle(shifted_bundle(d / "one" / "bundle", d / name, delta), d / f"{name}.tar.gz")
    return out


def sha12(tarball: Path) -> str:
    return sha256_file(tarball)[:12]


class Run:
    def __init__(self, r: subprocess.CompletedProcess, report: dict, seconds: float):
        self.rc, self.out, self.err, self.report, self.seconds = r.returncode, r.stdout, r.stderr, report, seconds

    def result(self, host) -> str:
        return self.report[host.name]["result"]

    def recap(self, host) -> dict:
        m = re.search(rf"^{re.escape(host.name)}\s+: (.*)$", self.out, re.M)
        assert m, self.out[-2000:]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[1])}


def fleet_cmd(command: str, inventory: Path, *args: str, tmp: Path, bundle: Path | None = None, env=None) -> Run:
    """`python -m deploy COMMAND` as make runs it; the table's JSON read back."""
    report = tmp / f"{command}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "deploy", command, "--inventory", str(inventory), "--report", str(report)]
    if bundle:
        cmd += ["--bundle", str(bundle)]
    e = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
         "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"), "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
         "ANSIBLE_NOCOLOR": "1", **(env or {})}
    t = time.perf_counter()
    r = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, env=e, timeout=FAILSAFE)
    seconds = time.perf_counter() - t
    rep = json.loads(report.read_text()) if report.exists() else {}
    return Run(r, rep, seconds)


def make_fleet(target: str, inventory: Path, built, tmp: Path, ansible_args: str = "") -> Run:
    """`make TARGET INVENTORY=...` as a user runs it, on the test session's build (already up to date)."""
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("run through `make test` (needs the Makefile's .venv)")
    e = {**os.environ, "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"), "ANSIBLE_NOCOLOR": "1"}
    t = time.perf_counter()
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), target, f"VENV={venv}", f"BUILD={built.build}",
                        f"DIST={built.dist}", f"CONFIG={built.config}", f"INVENTORY={inventory}",
                        f"ANSIBLE_ARGS={ansible_args}"], capture_output=True, text=True, env=e, timeout=FAILSAFE)
    seconds = time.perf_counter() - t
    report = built.build / "deploy" / f"{'status' if target == 'fleet-status' else target}.json"
    return Run(r, json.loads(report.read_text()) if report.exists() else {}, seconds)


def edge_root_state(root: Path) -> dict:
    """What an edge_root folder holds: its links, releases, venvs and anything else."""
    def link(name):
        p = root / name
        return os.readlink(p) if p.is_symlink() else None

    listing = lambda sub: sorted(os.listdir(root / sub)) if (root / sub).is_dir() else []  # noqa: E731
    return {"current": link("current"), "previous": link("previous"), "releases": listing("releases"),
            "venvs": listing("venvs"), "other": sorted(set(listing(".")) - {"current", "previous", "releases", "venvs"})}


def state(host) -> dict:
    """What the device's edge_root holds, read directly (the hosts share this file system)."""
    return edge_root_state(host.edge_root)


def answers_close(a: float, b: float, host) -> bool:
    """Whether a device's answer ``a`` is the x86 reference's ``b``. Native hosts run the same
    onnxruntime build as the reference: bit-identical. An emulated Pi runs aarch64 kernels
    (pi-check compares them within the manifest's tolerances; a one-neuron model is exact there
    too, but do not demand more than that)."""
    return a == b if "edge_python_launcher" not in host.vars else abs(a - b) <= 1e-4 * max(1.0, abs(b))


def predict(host, value: str = "100") -> float:
    """`python -m runtime predict VALUE` in the device's current release, run over SSH in its venv."""
    launcher = host.vars.get("edge_python_launcher", "")
    r = host.ssh(f"cd {host.edge_root}/current && {launcher} .venv/bin/python -m runtime predict --json {value}")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["fahrenheit"][0]


# --- the systemd test host (tests/support/systemd_host.py) ---

# fleet-status's speed column for a release the gate measured (deploy/roles/edge/files/probe.py).
SPEED_TEXT = re.compile(r"p50 [0-9.]+ \u00b5s, p99 [0-9.]+ \u00b5s, [0-9.]+ MB, 1 thread")


def speed_record(root: Path, release: str) -> dict:
    """The speed record the deploy's gate wrote for ``release`` under the edge_root ``root``
    (release.py: releases/<release>/.edge-speed.json), checked as a measured one: the bench ran at
    the service's one thread, its 300 calls, p50 <= p99."""
    rec = json.loads((root / "releases" / release / ".edge-speed.json").read_text())
    assert rec["ok"] is True and rec["release"] == release, rec
    assert (rec["threads"], rec["calls"]) == (1, 300) and 0 < rec["p50_us"] <= rec["p99_us"], rec
    assert rec["peak_rss_mb"] > 10 and rec["seconds"] > 0, rec
    return rec


def overlay_state(host) -> dict:
    """The systemd host's links and releases, read through the overlay's mount point."""
    s = edge_root_state(host.path(host.edge_root))
    return {k: s[k] for k in ("current", "previous", "releases")}


def ask(host, value: float = 100.0, timeout: float = 60, sent=None) -> tuple[str, float]:
    """POST /predict on the service's socket: (model sha256, fahrenheit). ``sent``, if given, is
    called once the request is in the kernel's hands (connected, written), before the answer."""
    c = http.client.HTTPConnection("127.0.0.1", host.service_port, timeout=timeout)
    try:
        c.request("POST", "/predict", json.dumps({"celsius": [value]}), {"Content-Type": "application/json"})
        if sent:
            sent()
        r = c.getresponse()
        doc = json.loads(r.read())
        assert r.status == 200, (r.status, doc)
        return doc["model"], doc["fahrenheit"][0]
    finally:
        c.close()


def f32(x: float) -> float:
    """The float32 the service computed (its JSON prints the shortest repr of that float32)."""
    import numpy as np

    return float(np.float32(x))
