"""`make deploy`, `make rollback`, `make fleet-status`: the lifecycle of a fleet, by real Ansible over
real SSH to test hosts on 127.0.0.1 (tests/support/sshfleet.py: an sshd per host, each with its own
edge_root).

Three hosts, canary first: Debian's /usr/bin/python3 twice (3.11, no numpy: a fresh Raspberry Pi
OS) and a Python 3.10 (the requirements' other pins). The Python 3.10 is not seeded: the first
deploy installs its venv (its own pins), the proof of the install from nothing here. The two
3.11 hosts start with the run's template venv for their Python, the one a real first deploy of
the same wheels made (tests/deploy/conftest.py, venv_templates), so the first deploy finds it
complete and installs nothing there. The second model is the default one with its output bias moved by +1 degF,
re-signed throughout (tests/support/bundles.shifted_bundle): known answers, no second training
run. The tests run in order on one fleet, each asserting the device state it leaves (symlinks,
releases, venvs, what `predict 100` answers on the device). The other deploy tests are in the
files beside this one: test_deploy_pi.py (an emulated Pi 4), test_deploy_refusals.py,
test_deploy_service.py, test_deploy_signing.py, test_deploy_lint.py.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support.fleet import (answers_close, fleet_cmd, make_fleet, predict, pyenv_python, sha12, shifted_models,
                                 SPEED_TEXT, speed_record, state, tar_bundle)

# SSH test hosts (sshd as root): `make test` only, not test-fast.
pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root]


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
    return [
        fleet.add("canary", python="/usr/bin/python3"),  # the run's template venv (a first deploy's install)
        fleet.add("deb311", python="/usr/bin/python3"),  # the same
        fleet.add("py310", python=py310, seed=False),  # its own pins: its own install
    ]


@pytest.fixture(scope="module")
def inventory(fleet, hosts, tmp_path_factory) -> Path:
    return fleet.inventory(tmp_path_factory.mktemp("inv") / "inventory.ini", hosts)


# --- the lifecycle --------------------------------------------------------------------------

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
        assert answers_close(predict(h), answers["one"], h)
    # Each device measured the release at its gate (runtime bench, bounded), and printed it.
    speeds = {h.name: speed_record(h.edge_root, one) for h in hosts}
    assert r.report["deb311"]["arch"] == "x86_64" and state(hosts[1])["venvs"][0].startswith("cp311-x86_64-")
    assert state(hosts[1])["venvs"] == state(hosts[0])["venvs"]  # the template: no second install of the same wheels
    # pip compiled nothing; the import check and the gate left the bytecode of what the runtime imports
    site = glob.glob(f"{hosts[2].edge_root}/venvs/*/lib/python3.*/site-packages")
    assert len(site) == 1, site
    cached = {str(Path(p).relative_to(site[0])).split("/__pycache__/")[0] for p in glob.glob(f"{site[0]}/**/*.pyc", recursive=True)}
    assert {"numpy", "numpy/_core", "onnxruntime", "onnxruntime/capi"} <= cached, sorted(cached)
    assert not {d for d in cached if d.startswith(("onnxruntime/quantization", "onnxruntime/transformers", "numpy/f2py"))}, cached
    assert "| table" not in r.out and re.search(r"^host\s+arch\s+python\s+previous\s+new\s+result$", r.out, re.M)
    with capsys.disabled():
        print(f"\n  first deploy to 3 hosts (serial 1 / 25% / rest): {r.seconds:.1f} s; the gate's bench: "
              + ", ".join(f"{n} {s['seconds']:.2f} s (p50 {s['p50_us']:.1f} us)" for n, s in speeds.items()))
    test_first_deploy.seconds = r.seconds


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


def test_check_mode_plans_and_changes_nothing(hosts, inventory, models, tmp):
    before = {h.name: state(h) for h in hosts}
    r = fleet_cmd("deploy", inventory, "--check", tmp=tmp, bundle=models["two"])
    assert r.rc == 0, r.out[-3000:]
    for h in hosts:
        assert r.result(h) == "would deploy", r.report
        assert state(h) == before[h.name]


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
        assert answers_close(predict(h), answers["two"], h)
    seconds = r.seconds

    r = fleet_cmd("rollback", inventory, tmp=tmp)
    assert r.rc == 0, r.out[-3000:]
    for h in hosts:
        assert (r.result(h), r.report[h.name]["from"], r.report[h.name]["to"]) == ("rolled back", two, one)
        s = state(h)
        assert (s["current"], s["previous"]) == (f"releases/{one}", f"releases/{two}"), s
        assert answers_close(predict(h), answers["one"], h)
    with capsys.disabled():
        print(f"\n  model-only update to 3 hosts: {seconds:.1f} s; rollback: {r.seconds:.1f} s")


def test_fleet_status(hosts, inventory, models, built, tmp, capsys):
    r = make_fleet("fleet-status", inventory, built, tmp)
    assert r.rc == 0, r.out[-3000:]
    for h in hosts:
        row = r.report[h.name]
        assert (row["current"], row["previous"], row["selfcheck"], row["result"]) == (
            sha12(models["one"]), sha12(models["two"]), "passed", "healthy"), row
        # The speed the first deploy's gate measured for the current release (rollback kept it).
        rec = speed_record(h.edge_root, row["current"])
        assert SPEED_TEXT.fullmatch(row["speed"]), row
        mb = float(re.search(r"([0-9.]+) MB", row["speed"]).group(1))
        assert abs(mb - rec["peak_rss_mb"]) <= 0.5, (row, rec)
    table = r.out[r.out.index("\nhost "):].strip()
    with capsys.disabled():
        print("\n" + table)


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
    assert answers_close(predict(h), answers["one"], h)


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
