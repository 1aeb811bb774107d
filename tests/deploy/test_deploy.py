"""`make deploy`, `make rollback`, `make fleet-status`: real Ansible over real SSH to test hosts on 127.0.0.1.

The fleet: sshd per host (tests/support/sshfleet.py), each with its own edge_root; one host is an
emulated Raspberry Pi 4 (arm64 Python 3.11 under qemu-aarch64-static -cpu cortex-a72, so
the aarch64 wheelhouse is installed offline and the selfcheck runs emulated), one runs
Debian's /usr/bin/python3 (3.11, no numpy: a fresh Raspberry Pi OS), one a Python 3.10
(the requirements' other pins). The second model is the default one with its output bias
moved by +1 degF, re-signed throughout (conftest.shifted_bundle): known answers, no
second training run.

The tests in the lifecycle part run in order on one fleet, each asserting the device state
it leaves (symlinks, releases, venvs, what `predict 100` answers on the device).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.support.builds import Checkout
from tests.support.bundles import keypair, resign, shifted_bundle, sign
from tests.support.core import FAILSAFE, ROOT, sha256_file, wait_until
from tests.support.fleet import fleet_cmd, make_fleet, predict, pyenv_python, sha12, shifted_models, state, tar_bundle

# SSH test hosts (sshd as root) and an emulated Pi 4 (QEMU): `make test` only, not test-fast.
# The tests stand alone (spread over pytest-xdist's workers), except the lifecycle's and the
# signing's, which take their hosts through states in order (a group each).
pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root, pytest.mark.spread]
LIFECYCLE = pytest.mark.xdist_group("deploy-lifecycle")
SIGNING = pytest.mark.xdist_group("deploy-signing")


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(built, tmp_path_factory) -> dict:
    """Tarballs: the default bundle, the +1 degF model and +2 / +3 ones, and one with a damaged model file."""

    d = tmp_path_factory.mktemp("models")
    out = shifted_models(built, d)
    bad = d / "bad"
    shutil.copytree(d / "one" / "bundle", bad)
    model = bytearray((bad / "model.onnx").read_bytes())
    model[-5] ^= 0x01  # a flipped bit the manifest's sha256 catches: the selfcheck refuses it
    (bad / "model.onnx").write_bytes(bytes(model))
    out["bad"] = tar_bundle(bad, d / "bad.tar.gz")
    return out


@pytest.fixture(scope="module")
def hosts(fleet, tmp_path_factory):
    """The lifecycle fleet, canary first: Debian's python3 twice (a fresh Raspberry Pi OS) and a
    Python 3.10. The emulated Pi 4 has a test of its own (test_an_emulated_pi_4_canary_...)."""
    py310 = pyenv_python("10") or "/usr/bin/python3"
    return [  # not seeded: the first deploy installs their venvs
        fleet.add("canary", python="/usr/bin/python3", seed=False),
        fleet.add("deb311", python="/usr/bin/python3", seed=False),
        fleet.add("py310", python=py310, seed=False),
    ]


@pytest.fixture(scope="module")
def inventory(fleet, hosts, tmp_path_factory) -> Path:
    return fleet.inventory(tmp_path_factory.mktemp("inv") / "inventory.ini", hosts)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def close(a: float, b: float, host) -> bool:
    # Native hosts run the same onnxruntime build as the reference: bit-identical. The
    # emulated Pi runs aarch64 kernels (pi-check compares them within the manifest's
    # tolerances; a one-neuron model is exact there too, but do not demand more than that).
    return a == b if "edge_python_launcher" not in host.vars else abs(a - b) <= 1e-4 * max(1.0, abs(b))


# --- the lifecycle --------------------------------------------------------------------------

@LIFECYCLE
def test_first_deploy(hosts, inventory, models, answers, tmp, capsys):
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["one"])
    assert r.rc == 0, r.out[-3000:] + r.err
    one = sha12(models["one"])
    for h in hosts:
        assert r.result(h) == "deployed", r.report
        assert r.report[h.name]["new"] == one and r.report[h.name]["previous"] == "-"
        s = state(h)
        assert s["current"] == f"releases/{one}" and s["previous"] is None, s
        assert s["releases"] == [one] and len(s["venvs"]) == 1 and s["other"] == [], s  # wheels/ deleted
        assert close(predict(h), answers["one"], h)
    assert r.report["deb311"]["arch"] == "x86_64" and state(hosts[1])["venvs"][0].startswith("cp311-x86_64-")
    assert "| table" not in r.out and re.search(r"^host\s+arch\s+python\s+previous\s+new\s+result$", r.out, re.M)
    with capsys.disabled():
        print(f"\n  first deploy to 3 hosts (serial 1 / 25% / rest): {r.seconds:.1f} s")
    test_first_deploy.seconds = r.seconds


@LIFECYCLE
def test_redeploy_unchanged_changes_nothing(hosts, inventory, built, tmp, capsys):
    """Through `make deploy`, as a user runs it (the build is up to date: make starts no stage)."""
    before = {h.name: (state(h), os.lstat(h.edge_root / "current").st_mtime_ns) for h in hosts}
    r = make_fleet("deploy", inventory, built, tmp, ansible_args="--forks 3")
    assert r.rc == 0, r.out[-3000:] + r.err[-3000:]
    assert "--forks 3" in r.out and not re.search(r"^\S+ -m pipeline", r.out, re.M)
    for h in hosts:
        assert r.result(h) == "unchanged"
        assert r.recap(h)["changed"] == 0, r.recap(h)
        assert (state(h), os.lstat(h.edge_root / "current").st_mtime_ns) == before[h.name]
    with capsys.disabled():
        print(f"\n  unchanged redeploy to 3 hosts: {r.seconds:.1f} s (first deploy "
              f"{getattr(test_first_deploy, 'seconds', float('nan')):.1f} s)")


def test_a_doc_only_commit_rebuilds_the_same_release_and_deploys_nothing(fleet, built, tmp, tmp_path):
    """A clean bundle after an empty and a README-only commit is the release the device already
    runs: the deploy reports it unchanged, changed=0 (it used to restart every device)."""
    src = Checkout(tmp_path / "src", date=1_700_000_000)
    first = src.bundle(built, tmp_path / "first")
    host = fleet.add("doc-commit")
    inv = fleet.inventory(tmp_path / "inventory.ini", [host])
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=first)
    assert r.rc == 0 and r.result(host) == "deployed", r.out[-3000:] + r.err
    src.commit("doc", 1_700_001_000)
    src.commit("README", 1_700_002_000, {"README.md": "Better explained.\n"})
    again = src.bundle(built, tmp_path / "again")
    assert sha12(again) == sha12(first)
    before = (state(host), os.lstat(host.edge_root / "current").st_mtime_ns)
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=again)
    assert r.rc == 0, r.out[-3000:] + r.err
    assert r.result(host) == "unchanged" and r.recap(host)["changed"] == 0, (r.report, r.recap(host))
    assert (state(host), os.lstat(host.edge_root / "current").st_mtime_ns) == before


@LIFECYCLE
def test_check_mode_plans_and_changes_nothing(hosts, inventory, models, tmp):
    before = {h.name: state(h) for h in hosts}
    r = fleet_cmd("deploy", inventory, "--check", tmp=tmp, bundle=models["two"])
    assert r.rc == 0, r.out[-3000:]
    for h in hosts:
        assert r.result(h) == "would deploy", r.report
        assert state(h) == before[h.name]


@LIFECYCLE
def test_second_model_then_rollback(hosts, inventory, models, answers, tmp, capsys):
    one, two = sha12(models["one"]), sha12(models["two"])
    venvs = {h.name: state(h)["venvs"] for h in hosts}
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["two"])
    assert r.rc == 0, r.out[-3000:]
    for h in hosts:
        assert (r.result(h), r.report[h.name]["previous"], r.report[h.name]["new"]) == ("deployed", one, two)
        s = state(h)
        assert (s["current"], s["previous"]) == (f"releases/{two}", f"releases/{one}"), s
        assert s["releases"] == sorted([one, two]) and s["venvs"] == venvs[h.name], s  # same wheels: same venv
        assert close(predict(h), answers["two"], h)
    seconds = r.seconds

    r = fleet_cmd("rollback", inventory, tmp=tmp)
    assert r.rc == 0, r.out[-3000:]
    for h in hosts:
        assert (r.result(h), r.report[h.name]["from"], r.report[h.name]["to"]) == ("rolled back", two, one)
        s = state(h)
        assert (s["current"], s["previous"]) == (f"releases/{one}", f"releases/{two}"), s
        assert close(predict(h), answers["one"], h)
    with capsys.disabled():
        print(f"\n  model-only update to 3 hosts: {seconds:.1f} s; rollback: {r.seconds:.1f} s")


@LIFECYCLE
def test_fleet_status(hosts, inventory, models, built, tmp):
    r = make_fleet("fleet-status", inventory, built, tmp)
    assert r.rc == 0, r.out[-3000:]
    for h in hosts:
        row = r.report[h.name]
        assert (row["current"], row["previous"], row["selfcheck"], row["result"]) == (
            sha12(models["one"]), sha12(models["two"]), "passed", "healthy"), row


@LIFECYCLE
def test_canary_gate_failure_rolls_back_and_stops_the_rollout(hosts, inventory, models, tmp):
    """A bundle whose model file was damaged: the canary refuses it at its selfcheck and keeps
    its release; the rollout stops there, and the other devices are not touched."""
    before = {h.name: (state(h), os.lstat(h.edge_root / "current").st_mtime_ns) for h in hosts}
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["bad"])
    assert r.rc == 2, r.out[-3000:]
    canary, *rest = hosts
    assert r.result(canary).startswith(f"rolled back: selfcheck of {sha12(models['bad'])} failed (exit "), r.report
    assert "model.onnx | sha256 mismatch" in r.result(canary), r.report
    s = state(canary)
    assert s == before[canary.name][0], s  # the refused release was not kept
    for h in rest:
        assert r.result(h).startswith("not reached"), r.report
        assert (state(h), os.lstat(h.edge_root / "current").st_mtime_ns) == before[h.name]
    assert re.search(r"^canary\s.*rolled back: selfcheck of", r.out, re.M)  # the table on stdout


@LIFECYCLE
def test_unhealthy_service_after_the_switch_is_rolled_back(hosts, inventory, models, answers, tmp):
    """The switch happened, then /healthz never answered 200: current goes back, the host fails."""
    h = hosts[2]
    before = state(h)
    r = fleet_cmd("deploy", inventory, "--limit", h.name, "-e", "edge_service=true", "-e", "edge_service_manager=command",
                  "-e", '{"edge_service_restart_command": ["true"]}', "-e", "edge_healthz_url=http://127.0.0.1:9/healthz",
                  "-e", "edge_healthz_timeout=2", tmp=tmp, bundle=models["three"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(h).startswith("rolled back: Wait for /healthz"), r.report
    s = state(h)
    assert (s["current"], s["previous"]) == (before["current"], before["previous"]), s
    assert close(predict(h), answers["one"], h)


@LIFECYCLE
def test_old_releases_are_pruned(hosts, inventory, models, tmp, capsys):
    h = hosts[1]
    for name in ("three", "four"):
        r = fleet_cmd("deploy", inventory, "--limit", h.name, tmp=tmp, bundle=models[name])
        assert r.rc == 0 and r.result(h) == "deployed", r.out[-3000:]
    s = state(h)
    three, four = sha12(models["three"]), sha12(models["four"])
    assert (s["current"], s["previous"]) == (f"releases/{four}", f"releases/{three}")
    assert len(s["releases"]) == 3 and sha12(models["one"]) in s["releases"], s  # kept: four, three, and one (newer than two)
    assert len(s["venvs"]) == 1, s


@pytest.mark.qemu
def test_an_emulated_pi_4_canary_installs_the_aarch64_wheels_offline_and_answers_as_x86(fleet, models, answers, tmp,
                                                                                         tmp_path, capsys):
    """An emulated Raspberry Pi 4 (arm64 Python 3.11 under qemu-aarch64 -cpu cortex-a72) as the
    canary of a two-device run: the aarch64 wheelhouse installed offline, the selfcheck run
    emulated, the answer the x86 reference's; then a model-only update reuses its venv."""
    from deploy.devicecheck.emulated_pi import make_device

    pi = make_device(tmp_path / "pi4", ROOT / ".cache" / "pi")
    hosts = [fleet.add("pi4", python=pi["python"], vars={"edge_python_launcher": pi["launcher"]}),
             fleet.add("after-pi", python="/usr/bin/python3")]  # the Pi is not seeded: no template for its Python
    inv = fleet.inventory(tmp_path / "inventory.ini", hosts)
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=models["one"])
    assert r.rc == 0, r.out[-3000:] + r.err
    assert [r.result(h) for h in hosts] == ["deployed", "deployed"], r.report
    assert (r.report["pi4"]["arch"], r.report["after-pi"]["arch"]) == ("aarch64", "x86_64")
    [venv] = state(hosts[0])["venvs"]
    assert venv.startswith("cp311-aarch64-"), venv
    assert close(predict(hosts[0]), answers["one"], hosts[0])
    first = r.seconds
    r = fleet_cmd("deploy", inv, "--limit", "pi4", tmp=tmp, bundle=models["two"])
    assert r.rc == 0 and r.result(hosts[0]) == "deployed", r.out[-3000:] + r.err
    assert state(hosts[0])["venvs"] == [venv]  # the same wheels: the same venv
    assert close(predict(hosts[0]), answers["two"], hosts[0])
    with capsys.disabled():
        print(f"\n  first deploy to an emulated Pi 4 (canary) and a native host: {first:.1f} s; "
              f"a model-only update of the Pi: {r.seconds:.1f} s")


# --- devices the deploy must refuse, and a cut connection ------------------------------------

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


# --- zero dropped requests across a deploy and a rollback ------------------------------------

def test_no_request_dropped_across_deploy_and_rollback(fleet, models, tmp, tmp_path, capsys):
    """The service on a device (a held socket and serve restarted on it, as systemd's socket
    unit does; tests/support/deploy_service.py) answers a client loop through a deploy and a rollback:
    every request gets a 200, and the model switches once each way."""
    import http.client

    svc = tmp_path / "svc"
    svc.mkdir()
    helper = ROOT / "tests" / "support" / "deploy_service.py"
    h = fleet.add("svc", vars={
        "edge_service": True, "edge_service_manager": "command",
        "edge_service_restart_command": [sys.executable, str(helper), "restart", str(svc)]})
    sup = subprocess.Popen([sys.executable, str(helper), "run", str(svc), str(h.edge_root)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def started():
            assert sup.poll() is None, "the supervisor exited"
            return (svc / "port").exists()

        wait_until("the supervisor's port file", started)
        port = int((svc / "port").read_text())
        h.vars["edge_healthz_url"] = f"http://127.0.0.1:{port}/healthz"
        inv = fleet.inventory(tmp_path / "inventory.ini", [h])
        r = fleet_cmd("deploy", inv, tmp=tmp, bundle=models["one"])
        assert r.rc == 0 and r.result(h) == "deployed", r.out[-3000:]

        seen, failures, stop = [], [], threading.Event()

        def client():
            body = json.dumps({"celsius": [100.0]})
            cap = time.monotonic() + FAILSAFE
            for _ in range(100_000):  # bounded in count and time; stops when told
                if stop.is_set() or time.monotonic() > cap:
                    return
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    c.request("POST", "/predict", body, {"Content-Type": "application/json"})
                    a = c.getresponse()
                    doc = json.loads(a.read())
                    if a.status != 200:
                        failures.append((a.status, doc))
                    elif not seen or seen[-1][0] != doc["model"]:
                        seen.append((doc["model"], doc["fahrenheit"][0], 1))
                    else:
                        seen[-1] = (seen[-1][0], seen[-1][1], seen[-1][2] + 1)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    failures.append(repr(e))
                finally:
                    c.close()

        t = threading.Thread(target=client, daemon=True)
        t.start()
        r2 = fleet_cmd("deploy", inv, tmp=tmp, bundle=models["two"])
        r3 = fleet_cmd("rollback", inv, tmp=tmp)
        # A few answers after the rollback, so the last switch is observed, not assumed.
        wait_until("20 answers after the rollback",
                   lambda: (len(seen) >= 3 and seen[-1][2] >= 20) or failures or not t.is_alive())
        stop.set()
        t.join(FAILSAFE)
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(FAILSAFE)
    assert r2.rc == 0 and r2.result(h) == "deployed", r2.out[-3000:]
    assert r3.rc == 0 and r3.result(h) == "rolled back", r3.out[-3000:]
    assert not failures, failures[:5]
    models_seen = [m for m, _, _ in seen]
    assert len(models_seen) == 3 and models_seen[0] == models_seen[2] != models_seen[1], seen
    assert seen[1][1] == pytest.approx(seen[0][1] + 1.0, abs=1e-3)  # the +1 degF model, then back
    with capsys.disabled():
        print(f"\n  requests answered across a deploy and a rollback: {sum(n for _, _, n in seen)}, none failed; "
              f"models in order: {', '.join(f'{m[:12]} x{n}' for m, _, n in seen)}")


# --- signed bundles (issue 18): the keys a device trusts, and the gate that refuses the rest -----

def pub(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


def fingerprint(key: Path) -> str:
    return subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def trust_inventory(fleet, path: Path, trusted: dict) -> Path:
    """An inventory of the hosts in ``trusted``, each trusting the public keys of its keys."""
    for h, keys in trusted.items():
        h.vars["edge_trusted_keys"] = [pub(k) for k in keys]
    return fleet.inventory(path, list(trusted))


def trust_file(host) -> dict:
    """The host's trusted-keys file as the deploy left it: the keys it lists, its folder's other
    entries (a staged or kept copy left behind would show), owner and modes."""
    f = host.trusted_keys_file
    if not f.parent.exists():
        return {"keys": None, "beside": None}
    beside = sorted(p.name for p in f.parent.iterdir() if p != f)
    if not f.exists():
        return {"keys": None, "beside": beside}
    st, folder = f.stat(), f.parent.stat()
    return {"keys": [ln for ln in f.read_text().splitlines() if ln and not ln.startswith("#")], "beside": beside,
            "mode": oct(st.st_mode & 0o777), "owner": st.st_uid, "folder": oct(folder.st_mode & 0o777)}


def device(host) -> tuple:
    """Everything a refused deploy must leave as it was: links (and their mtimes), releases, venvs,
    the trusted-keys file and its folder."""
    return state(host), os.lstat(host.edge_root / "current").st_mtime_ns, trust_file(host)


def one_byte_attack(signed: Path, dest: Path) -> Path:
    """The issue's attack on a signed bundle: one byte of model.onnx changed (the output bias's
    exponent: the model now answers differently), its golden outputs recomputed and every sha256
    rewritten (conftest.resign), the build's signature left as it was. main's gate accepts it."""
    import struct

    import numpy as np

    from runtime import Runner

    shutil.copytree(signed, dest)
    with Runner.from_bundle(dest) as r:
        bias = r.predict(np.float32([0.0]))[0]
    model = (dest / "model.onnx").read_bytes()
    at = model.index(struct.pack("<f", bias)) + 3  # the float's top byte: sign and exponent
    resign(dest, "model.onnx", model[:at] + bytes([model[at] ^ 0x01]) + model[at + 1:])
    g = json.loads((dest / "golden.json").read_text())
    with Runner.from_bundle(dest) as r:
        g["outputs"] = r.predict(np.float32(g["inputs"])).tolist()
        assert abs(float(r.predict(np.float32([0.0]))[0]) - float(bias)) > 1.0  # it does answer differently
    resign(dest, "golden.json", json.dumps(g).encode())
    return dest


@pytest.fixture(scope="module")
def signing(tmp_path_factory) -> dict:
    """Signing keys: old and new (a rotation from one to the other) and rogue (trusted nowhere)."""
    d = tmp_path_factory.mktemp("keys")
    return {name: keypair(d, name) for name in ("old", "new", "rogue")}


@pytest.fixture(scope="module")
def signed(models, signing, tmp_path_factory) -> dict:
    """Tarballs: the default model signed by new, the +1 degF model signed by old, the attack on the
    first (one byte, every hash recomputed, new's signature kept), and the unsigned +1 degF one."""
    d = tmp_path_factory.mktemp("signed")
    with tarfile.open(models["one"]) as tar:
        tar.extractall(d / "unsigned", filter="data")
    one = d / "unsigned" / "bundle"
    assert not (one / "manifest.json.sig").exists()
    shutil.copytree(one, d / "one-new")
    sign(d / "one-new", signing["new"])
    sign(shifted_bundle(one, d / "two-old", 1.0), signing["old"])
    one_byte_attack(d / "one-new", d / "attack")
    out = {name: tar_bundle(d / name, d / f"{name}.tar.gz") for name in ("one-new", "two-old", "attack")}
    return {**out, "unsigned": models["two"]}


@pytest.fixture(scope="module")
def signed_hosts(fleet, signing, signed, tmp):
    """rotate (trusting old and new) and guard (new only), both deployed the bundle new signed, in one run."""
    rotate, guard = fleet.add("rotate"), fleet.add("guard")
    inv = trust_inventory(fleet, tmp / "signed-first.ini", {rotate: [signing["old"], signing["new"]],
                                                             guard: [signing["new"]]})
    r = fleet_cmd("deploy", inv, "-e", '{"edge_serial": ["100%"]}', tmp=tmp, bundle=signed["one-new"])
    assert r.rc == 0, r.out[-3000:] + r.err
    assert (r.result(rotate), r.result(guard)) == ("deployed", "deployed"), r.report
    return rotate, guard


@SIGNING
def test_signed_deploy_installs_the_trusted_keys_root_owned(signed_hosts, signing, signed):
    rotate, guard = signed_hosts
    for h, keys in ((rotate, ["old", "new"]), (guard, ["new"])):
        assert trust_file(h) == {"keys": [pub(signing[k]) for k in keys], "beside": [], "mode": "0o644", "owner": 0,
                                 "folder": "0o755"}, h.name
        assert state(h)["current"] == f"releases/{sha12(signed['one-new'])}"


@SIGNING
def test_key_rotation_across_two_deploys_then_the_revoked_keys_bundles_are_refused(
        fleet, signed_hosts, signing, signed, models, answers, tmp, capsys):
    """The issue's rotation: trust old and new, deploy a bundle new signed (the fixture); then trust new
    only: the running release is gated again under it and kept ("trusted keys updated"), while guard,
    whose keys and release did not change, is unchanged (changed=0). Afterwards a bundle old signed is
    refused at the gate, and so is removing the key that signed the running release; each refusal
    leaves links, releases and the trusted-keys file as they were. Last, an empty list: the file goes,
    and an unsigned bundle deploys as before signing existed (after a first try whose service never got
    healthy, which put back both the release and the keys)."""
    rotate, guard = signed_hosts
    old, new = signing["old"], signing["new"]
    one = sha12(signed["one-new"])
    before = state(rotate)
    t = time.perf_counter()
    inv = trust_inventory(fleet, tmp / "rotate-2.ini", {rotate: [new], guard: [new]})
    r = fleet_cmd("deploy", inv, "-e", '{"edge_serial": ["100%"]}', tmp=tmp, bundle=signed["one-new"])
    assert r.rc == 0, r.out[-3000:] + r.err
    assert r.result(rotate) == "trusted keys updated" and r.recap(rotate)["changed"] > 0, r.report
    assert r.result(guard) == "unchanged" and r.recap(guard)["changed"] == 0, (r.report, r.recap(guard))
    assert state(rotate) == before and trust_file(rotate)["keys"] == [pub(new)], trust_file(rotate)
    assert trust_file(rotate)["beside"] == [], trust_file(rotate)  # no staged or kept copy left behind
    r = fleet_cmd("status", inv, tmp=tmp)  # the selfcheck under the installed keys; how many there are
    assert r.rc == 0, r.out[-3000:]
    for h in (rotate, guard):
        assert (r.report[h.name]["trust"], r.report[h.name]["selfcheck"]) == ("1 key", "passed"), r.report

    kept = device(rotate)
    r = fleet_cmd("deploy", inv, "--limit", rotate.name, tmp=tmp, bundle=signed["two-old"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(rotate).startswith(
        f"rolled back: selfcheck of {sha12(signed['two-old'])} failed (exit 7): error: selfcheck signature: "
        f"manifest.json.sig | signed by {fingerprint(old)}, a key this device does not trust"), r.report
    assert device(rotate) == kept  # the refused release is not kept; current, previous and the keys are as they were
    assert predict(rotate) == answers["one"]

    inv = trust_inventory(fleet, tmp / "rotate-3.ini", {rotate: [old]})
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=signed["one-new"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(rotate).startswith(
        f"refused: the running release {one} fails its selfcheck under the new trusted keys (exit 7): error: "
        f"selfcheck signature: manifest.json.sig | signed by {fingerprint(new)}, a key this device does not "
        "trust"), r.report
    assert device(rotate) == kept

    # An empty list and an unsigned bundle, whose service then never gets healthy: the release and the
    # trusted keys both go back. Then the same without the service: deployed, and the file removed.
    inv = trust_inventory(fleet, tmp / "rotate-4.ini", {rotate: []})
    r = fleet_cmd("deploy", inv, "-e", "edge_service=true", "-e", "edge_service_manager=command",
                  "-e", '{"edge_service_restart_command": ["true"]}', "-e", "edge_healthz_url=http://127.0.0.1:9/healthz",
                  "-e", "edge_healthz_timeout=1", tmp=tmp, bundle=signed["unsigned"])
    assert r.rc == 2 and r.result(rotate).startswith("rolled back: Wait for /healthz"), r.report
    s = state(rotate)  # the links as they were (current re-made: its mtime is new), the release kept beside
    assert ((s["current"], s["previous"]), trust_file(rotate)) == ((kept[0]["current"], kept[0]["previous"]), kept[2])
    assert predict(rotate) == answers["one"]
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=signed["unsigned"])
    assert r.rc == 0 and r.result(rotate) == "deployed", r.out[-3000:]
    assert trust_file(rotate) == {"keys": None, "beside": []}, trust_file(rotate)
    assert (state(rotate)["current"], state(rotate)["previous"]) == (
        f"releases/{sha12(signed['unsigned'])}", f"releases/{one}")
    assert predict(rotate) == answers["two"]
    with capsys.disabled():
        print(f"\n  key rotation, fleet-status, a revoked key's bundle, a stranding key removal, an empty list "
              f"rolled back then deployed: 6 runs, {time.perf_counter() - t:.1f} s")


@SIGNING
def test_the_attack_and_an_unsigned_bundle_are_refused_at_the_gate(fleet, signed_hosts, signing, signed, answers, tmp,
                                                                     capsys):
    """guard trusts new and runs the bundle new signed. The issue's attack on that bundle (a model byte
    changed, golden outputs and every hash recomputed, the build's signature kept: main's gate accepts
    it) is refused at the gate by `make deploy`; an unsigned bundle is refused by the same gate
    (files/release.py, run over SSH as Ansible's `script` runs it, against the installed keys).
    guard keeps its release, its keys and its answers."""
    from deploy import wheelhouse

    _, guard = signed_hosts
    inv = trust_inventory(fleet, tmp / "guard.ini", {guard: [signing["new"]]})
    kept = device(guard)
    t = time.perf_counter()
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=signed["attack"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(guard).startswith(
        f"rolled back: selfcheck of {sha12(signed['attack'])} failed (exit 8): error: selfcheck signature: "
        f"manifest.json | does not match its signature by {fingerprint(signing['new'])}"), r.report
    assert device(guard) == kept
    assert predict(guard) == answers["one"]
    assert re.search(r"^guard\s.*rolled back: selfcheck of \S+ failed \(exit 8\)", r.out, re.M)  # the table
    seconds = time.perf_counter() - t

    unsigned = signed["unsigned"]
    script = wheelhouse.release_script(unsigned, sha256_file(unsigned), tmp / "release-scripts")
    [venv] = state(guard)["venvs"]
    out = guard.ssh(f"/usr/bin/python3 {script} install {guard.edge_root} {sha12(unsigned)} "
                    f"{guard.edge_root / 'venvs' / venv} --launcher '' --trusted-keys {guard.trusted_keys_file}")
    assert out.returncode == 1, out.stdout + out.stderr
    reason = json.loads(out.stdout)["reason"]
    assert reason.startswith(
        f"selfcheck of {sha12(unsigned)} failed (exit 6): error: selfcheck signature: manifest.json.sig | missing: "
        "the bundle is unsigned, and this device trusts only signed bundles"), reason
    assert device(guard) == kept
    assert predict(guard) == answers["one"]
    with capsys.disabled():
        print(f"\n  the attack refused at the deploy's gate: {seconds:.1f} s; an unsigned bundle at release.py's: "
              f"{time.perf_counter() - t - seconds:.1f} s")


# --- the playbooks themselves --------------------------------------------------------------

def test_ansible_lint_production_profile():
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-lint"), "--nocolor", "."], cwd=ROOT / "deploy",
                       capture_output=True, text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
                       timeout=FAILSAFE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in r.stderr + r.stdout


def test_no_insecure_ssh_options_anywhere():
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]  # the README and every docs/ page
    for path in [*(ROOT / "deploy").rglob("*"), *(ROOT / "tests").rglob("*.py"), ROOT / "Makefile", *docs]:
        if path.is_file() and path.suffix in (".py", ".yml", ".ini", ".cfg", ".md", "") and path != Path(__file__):
            text = path.read_text(errors="replace")
            assert not re.search(r"StrictHostKeyChecking\s*=\s*no|host_key_checking\s*=\s*False", text, re.I), path


def test_a_model_only_update_sends_no_wheels(fleet, models, tmp, tmp_path, capsys):
    """Every byte the deploying machine sends over SSH for an update whose requirements did not
    change (through a counting ProxyCommand, with Ansible's usual shared connection): the
    bundle and a few KiB around it, never the wheels (about 40 MB) again."""
    h = fleet.add("counted")
    inv = fleet.inventory(tmp_path / "inventory.ini", [h])
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=models["one"])
    assert r.rc == 0 and r.result(h) == "deployed", r.out[-3000:]
    log = tmp_path / "bytes.log"
    proxy = f"{sys.executable} {ROOT / 'tests' / 'support' / 'byte_proxy.py'} 127.0.0.1 {h.port} {log}"
    common = (f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes "
              f"-o HostKeyAlias=[127.0.0.1]:{h.port} -o ProxyCommand='{proxy}'")
    cp = tmp_path / "cp"  # Ansible's own SSH settings (one master connection, kept 60 s); ended below
    r = fleet_cmd("deploy", inv, "-e", json.dumps({"ansible_ssh_common_args": common}), tmp=tmp, bundle=models["two"],
                  env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp)})
    assert r.rc == 0 and r.result(h) == "deployed", r.out[-3000:]
    for sock in cp.iterdir():  # end the master connection, so the proxy writes its count
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "127.0.0.1"], capture_output=True, timeout=60)
    wait_until("the proxy's byte count", log.exists)
    counts = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    sent, received = sum(c[0] for c in counts), sum(c[1] for c in counts)
    tarball = models["two"].stat().st_size
    assert tarball < sent < tarball + (32 << 10), (sent, tarball)  # the bundle, the release script, the probe
    with capsys.disabled():
        print(f"\n  model-only update: {sent / 1024:.1f} KiB sent over {len(counts)} SSH connections "
              f"({received / 1024:.1f} KiB received); the bundle itself is {tarball / 1024:.1f} KiB")


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


def test_a_dataset_model_deploys_gated_by_its_own_selfcheck_and_answers_its_signature(fleet, tmp, tmp_path,
                                                                                       example_build):
    """Not only the tutorial's: the wine classifier (examples/wine, 13 features, string labels)
    goes to a device by the same playbook; its selfcheck runs the signature's golden rows, and
    the device answers a validation row's label as Keras did."""
    import numpy as np

    build, dist = example_build("wine")
    host = fleet.add("wine", python="/usr/bin/python3")
    inventory = fleet.inventory(tmp_path / "inventory.ini", [host])
    run = fleet_cmd("deploy", inventory, tmp=tmp, bundle=dist / "bundle.tar.gz")
    assert run.rc == 0 and run.result(host) == "deployed", run.out[-3000:] + run.err
    with np.load(build / "reference.npz") as z:
        row = z["x"][z["group"] == list(z["group_names"]).index("validation")][0]
        keras = z["keras_y"][z["group"] == list(z["group_names"]).index("validation")][0]
    m = json.loads((dist / "bundle" / "manifest.json").read_text())
    values = " ".join(repr(float(v)) for v in row)
    out = host.ssh(f"cd {host.edge_root}/current && .venv/bin/python -m runtime predict --json -- {values}")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["labels"] == [m["signature"]["labels"][int(np.argmax(keras))]]
    np.testing.assert_allclose(doc["outputs"][0], keras, atol=1e-5, rtol=1e-4)
