"""`make deploy` and `make rollback` to a device with a real systemd as PID 1, the path every Pi takes.

The device (tests/systemd_host.py): systemd 252 booted with systemd-nspawn on an overlay of
this machine's root, sshd inside, the deploy user `pi` with passwordless sudo; the inventory
has the role's defaults (edge_service_manager=systemd) with edge_service=true. edge_root
(/opt/edge-model) does not exist on it at first: the deploy creates it (issue 19, section 5).
The service's socket is on a port of the host's own (a drop-in for edge-model.socket), which
the tests reach on 127.0.0.1: the container shares this machine's network.

The tests run in order on one device, each asserting the state it leaves.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import FAILSAFE, shifted_bundle, wait_until
from test_deploy import fleet_cmd, sha12, tar_bundle

pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root]

UNITS = ("edge-model.socket", "edge-model.service")
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def host(systemd_host):
    return systemd_host


@pytest.fixture(scope="module")
def models(built, tmp_path_factory) -> dict:
    """The default bundle and the +1 / +2 degF ones (conftest.shifted_bundle)."""
    d = tmp_path_factory.mktemp("systemd-models")
    with tarfile.open(built.dist / "bundle.tar.gz") as tar:
        tar.extractall(d / "one", filter="data")
    out = {"one": built.dist / "bundle.tar.gz"}
    for name, delta in (("two", 1.0), ("three", 2.0)):
        out[name] = tar_bundle(shifted_bundle(d / "one" / "bundle", d / name, delta), d / f"{name}.tar.gz")
    return out


@pytest.fixture(scope="module")
def answers(models) -> dict:
    """What the service answers for 100 degC, per model (computed here, the same onnxruntime)."""
    import numpy as np

    from runtime import Runner

    out = {}
    for name, tarball in models.items():
        with tarfile.open(tarball) as tar, tempfile.TemporaryDirectory() as t:
            tar.extractall(t, filter="data")
            with Runner.from_bundle(Path(t) / "bundle") as r:
                out[name] = float(r.predict(np.float32([100.0]))[0])
    return out


@pytest.fixture(scope="module")
def inventory(host, tmp_path_factory) -> Path:
    return host.inventory(tmp_path_factory.mktemp("systemd-inv") / "inventory.ini")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("systemd-runs")


def state(host) -> dict:
    """The device's edge_root, read through the overlay's mount point."""
    root = host.path(host.edge_root)

    def link(name):
        p = root / name
        return os.readlink(p) if p.is_symlink() else None

    listing = lambda sub: sorted(os.listdir(root / sub)) if (root / sub).is_dir() else []  # noqa: E731
    return {"current": link("current"), "previous": link("previous"), "releases": listing("releases")}


def ask(host, value: float = 100.0, timeout: float = 60) -> tuple[str, float]:
    """POST /predict on the service's socket: (model sha256, fahrenheit)."""
    c = http.client.HTTPConnection("127.0.0.1", host.service_port, timeout=timeout)
    try:
        c.request("POST", "/predict", json.dumps({"celsius": [value]}), {"Content-Type": "application/json"})
        r = c.getresponse()
        doc = json.loads(r.read())
        assert r.status == 200, (r.status, doc)
        return doc["model"], doc["fahrenheit"][0]
    finally:
        c.close()


def starts(host) -> int:
    """How many times systemd started edge-model.service since the boot (its journal)."""
    out = host.nsenter("journalctl", "--no-pager", "-o", "cat", "-u", "edge-model.service").stdout
    return len(re.findall(r"^Started edge-model\.service", out, re.M))


def f32(x: float) -> float:
    """The float32 the service computed (its JSON prints the shortest repr of that float32)."""
    import numpy as np

    return float(np.float32(x))


def listener_holders(port: int) -> set[int]:
    """The pids (this machine's) that hold the listening socket on 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want and f[3] == "0A":
            inodes.add(f"socket:[{f[9]}]")
    holders = set()
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{d}/fd"):
                if os.readlink(f"/proc/{d}/fd/{fd}") in inodes:
                    holders.add(int(d))
                    break
        except OSError:
            continue
    return holders


def timed(name: str, seconds: float, capsys) -> None:
    TIMES[name] = seconds
    with capsys.disabled():
        print(f"\n  systemd host: {name}: {seconds:.1f} s")


# --- the lifecycle ----------------------------------------------------------------------------

def test_first_deploy_creates_edge_root_installs_the_units_and_serves_on_systemds_socket(
        host, inventory, models, answers, tmp, capsys):
    assert not host.path(host.edge_root).exists()  # no manual step on the device
    assert host.failed_units == [], host.failed_units
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["one"])
    assert r.rc == 0, r.out[-3000:] + r.err[-2000:]
    assert r.result(host) == "deployed", r.report
    one = sha12(models["one"])
    assert state(host)["current"] == f"releases/{one}"
    owner = host.ssh(f"stat -c %U:%G {host.edge_root}")
    assert owner.stdout.split() == ["pi:pi"], owner
    for unit in UNITS:
        assert host.systemctl("is-active", unit) == "active", host.systemctl("status", unit)
        assert host.systemctl("is-enabled", unit) == "enabled"
    assert host.show("edge-model.service", "User") == "edge-model"
    # systemd (the container's PID 1, host pid = the leader) holds the listening socket, and
    # so does the service it passed it to.
    holders = listener_holders(host.service_port)
    assert host.leader in holders and host.host_pid() in holders, (holders, host.leader, host.host_pid())
    model, f = ask(host)
    assert f32(f) == f32(answers["one"])
    timed("first deploy (edge_root created, units installed)", r.seconds, capsys)
    with capsys.disabled():
        print(f"  systemd host: booted (overlay, nspawn, systemd running, ssh and sudo) in {host.boot_seconds:.1f} s")


def test_unchanged_redeploy_changes_nothing_and_keeps_the_process(host, inventory, models, tmp, capsys):
    pid, started = host.main_pid(), starts(host)
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["one"])
    assert r.rc == 0 and r.result(host) == "unchanged", r.out[-3000:]
    assert r.recap(host)["changed"] == 0, r.recap(host)
    assert host.main_pid() == pid and starts(host) == started
    timed("unchanged redeploy", r.seconds, capsys)


def test_second_model_then_rollback_under_load_no_request_fails(host, inventory, models, answers, tmp, capsys):
    """A client loop on systemd's socket through a model-only deploy and `make rollback`: every
    request answered 200, the service started exactly once each way, the answers switch."""
    pid0, started = host.main_pid(), starts(host)
    seen, failures, stop = [], [], threading.Event()

    def client():
        cap = time.monotonic() + FAILSAFE
        for _ in range(100_000):  # bounded in count and time; stops when told
            if stop.is_set() or time.monotonic() > cap:
                return
            try:
                model, f = ask(host)
            except (OSError, http.client.HTTPException, ValueError, AssertionError) as e:
                failures.append(repr(e))
                continue
            if not seen or seen[-1][0] != model:
                seen.append((model, f, 1))
            else:
                seen[-1] = (model, f, seen[-1][2] + 1)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        wait_until("the first answers", lambda: seen or failures)
        r2 = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["two"])
        pid1, started1 = host.main_pid(), starts(host)
        r3 = fleet_cmd("rollback", inventory, tmp=tmp)
        pid2, started2 = host.main_pid(), starts(host)
        wait_until("20 answers after the rollback",
                   lambda: (len(seen) >= 3 and seen[-1][2] >= 20) or failures or not t.is_alive())
    finally:
        stop.set()
        t.join(FAILSAFE)
    assert r2.rc == 0 and r2.result(host) == "deployed", r2.out[-3000:]
    assert r3.rc == 0 and r3.result(host) == "rolled back", r3.out[-3000:]
    assert (started1 - started, started2 - started1) == (1, 1)  # exactly one start each way
    assert pid0 != pid1 != pid2 != pid0
    assert not failures, failures[:5]
    assert [f32(f) for _, f, _ in seen] == [f32(answers[m]) for m in ("one", "two", "one")], seen
    s = state(host)
    assert (s["current"], s["previous"]) == (f"releases/{sha12(models['one'])}", f"releases/{sha12(models['two'])}")
    timed("model-only update", r2.seconds, capsys)
    timed("rollback", r3.seconds, capsys)
    with capsys.disabled():
        print(f"  systemd host: requests answered across the update and the rollback: {sum(n for *_, n in seen)}, "
              f"none failed; models in order: {', '.join(f'{m[:12]} x{n}' for m, _, n in seen)}")


def test_a_service_that_never_becomes_healthy_is_rolled_back(host, inventory, models, answers, tmp, capsys):
    """The switch and the restart happen under systemd, then /healthz never answers 200 in
    time (the health URL points at a port nothing serves): the links go back, the service is
    restarted on the old release and answers for it, the host is reported rolled back."""
    before, pid0 = state(host), host.main_pid()
    r = fleet_cmd("deploy", inventory, "-e", "edge_healthz_url=http://127.0.0.1:9/healthz",
                  "-e", "edge_healthz_timeout=2", tmp=tmp, bundle=models["three"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(host).startswith("rolled back: Wait for /healthz to answer 200"), r.report
    assert (state(host)["current"], state(host)["previous"]) == (before["current"], before["previous"])
    assert host.systemctl("is-active", "edge-model.service") == "active"
    assert host.main_pid() != pid0  # restarted on the new release, then on the old one
    assert f32(ask(host)[1]) == f32(answers["one"])
    with capsys.disabled():
        print(f"\n  systemd host: unhealthy after the switch, rolled back: {r.seconds:.1f} s")


def test_the_units_sandbox_holds_under_the_real_manager(host, answers):
    """Every sandbox option of edge-model.service is in force on the running process, and it
    still predicts: not only what `systemd-analyze security` reads from the file."""
    pid = host.host_pid()
    assert pid, host.systemctl("status", "edge-model.service")
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    passwd = {ln.split(":")[0]: ln.split(":")[2] for ln in host.path("/etc/passwd").read_text().splitlines()}
    assert fields["Uid"].split()[0] == passwd["edge-model"]  # User=edge-model
    assert fields["NoNewPrivs"] == "1"  # NoNewPrivileges=yes
    assert fields["Seccomp"] == "2"  # SystemCallFilter=
    assert int(fields["CapBnd"], 16) == 0 and int(fields["CapEff"], 16) == 0  # CapabilityBoundingSet=
    # PrivateNetwork=yes: a network namespace of its own, not the one systemd listens in.
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink(f"/proc/{host.leader}/ns/net")
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    by_point = {m.split()[4]: m.split()[5] for m in mounts}
    assert by_point["/"].startswith("ro"), by_point["/"]  # ProtectSystem=strict
    assert "/home" not in by_point or by_point["/home"].startswith("ro")  # ProtectHome=yes (an empty, read-only /home)
    props = {"NoNewPrivileges": "yes", "PrivateNetwork": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
             "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
             "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
             "ProtectClock": "yes", "ProtectHostname": "yes", "ProtectProc": "invisible", "RestrictNamespaces": "yes",
             "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
             "MemoryDenyWriteExecute": "yes", "RemoveIPC": "yes", "UMask": "0077", "MemoryMax": str(512 << 20),
             "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}  # as systemctl sorts them
    shown = dict(ln.split("=", 1) for ln in host.systemctl("show", "-p", ",".join(props), "edge-model.service")
                 .splitlines())
    assert shown == props
    assert f32(ask(host)[1]) == f32(answers["one"])


def test_without_the_service_a_missing_edge_root_is_refused_with_what_to_do(host, inventory, models, tmp):
    """edge_service off: the deploy uses no become, so a missing edge_root that pi cannot create
    (under root's /srv) is refused with one line naming the command to run once."""
    r = fleet_cmd("deploy", inventory, "-e", "edge_service=false", "-e", "edge_root=/srv/edge-off",
                  tmp=tmp, bundle=models["one"])
    assert r.rc != 0, r.out[-3000:]
    assert r.result(host) == (
        "refused: /srv/edge-off does not exist and cannot be created by pi; create it once with "
        "`sudo install -d -o pi -g pi /srv/edge-off`, or set edge_service=true (the deploy then creates it "
        "with sudo), or set edge_root to a folder that user owns"), r.report
    assert not host.path("/srv/edge-off").exists()


def test_deploy_times_to_the_systemd_host(capsys):
    """The four deploy times together (the tests above measured them)."""
    if len(TIMES) < 4:
        pytest.skip("the lifecycle tests above did not all run")
    with capsys.disabled():
        print("\n  systemd host deploy times: " + "; ".join(f"{k}: {v:.1f} s" for k, v in TIMES.items()))
