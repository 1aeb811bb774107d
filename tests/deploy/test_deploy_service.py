"""The deploy as a running service sees it: zero dropped requests across a deploy and a
rollback; a doc-only commit that deploys nothing; a model-only update that sends the bundle and
no wheels; another model (the wine classifier) gated by its own selfcheck and answering its
signature."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support.builds import Checkout
from tests.support.core import FAILSAFE, ROOT, wait_until
from tests.support.fleet import fleet_cmd, sha12, state

# SSH test hosts (sshd as root): `make test` only, not test-fast.
pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root]


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
