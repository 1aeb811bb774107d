"""The deploy to an emulated Raspberry Pi 4: arm64 Python 3.11 under qemu-aarch64 -cpu cortex-a72
(deploy/devicecheck/emulated_pi.py), as the canary of a run: the aarch64 wheelhouse installed
offline, the selfcheck run emulated, the x86 reference's answer. Once per test run: the rest of
the deploy tests use native hosts, four times faster."""

from __future__ import annotations


import pytest

from tests.support.core import ROOT
from tests.support.fleet import answers_close, fleet_cmd, predict, sha12, speed_record, state

# SSH test hosts (sshd as root) and QEMU: `make test` only, not test-fast.
pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root, pytest.mark.qemu]


@pytest.mark.qemu
def test_an_emulated_pi_4_canary_installs_the_aarch64_wheels_offline_and_answers_as_x86(fleet, models, answers, tmp,
                                                                                         tmp_path, capsys):
    """An emulated Raspberry Pi 4 (arm64 Python 3.11 under qemu-aarch64 -cpu cortex-a72) as the
    canary of a two-device run: the aarch64 wheelhouse installed offline, the selfcheck run
    emulated, the answer the x86 reference's (a venv's reuse by a model-only update: test_deploy.py)."""
    from deploy.devicecheck.emulated_pi import make_device

    pi = make_device(tmp_path / "pi4", ROOT / ".cache" / "pi")
    # The device's own Python (edge_python: the probe, the venv, the role's scripts and the gate)
    # is the emulated arm64 one; Ansible's modules (file, copy, command) run on this machine's
    # python3, which each would otherwise start under QEMU at ~10x the CPU for the same result.
    hosts = [fleet.add("pi4", python="/usr/bin/python3", seed=False,  # not seeded: its venv is aarch64's
                       vars={"edge_python": pi["python"], "edge_python_launcher": pi["launcher"]}),
             fleet.add("after-pi", python="/usr/bin/python3")]
    inv = fleet.inventory(tmp_path / "inventory.ini", hosts)
    r = fleet_cmd("deploy", inv, tmp=tmp, bundle=models["one"])
    assert r.rc == 0, r.out[-3000:] + r.err
    assert [r.result(h) for h in hosts] == ["deployed", "deployed"], r.report
    assert (r.report["pi4"]["arch"], r.report["after-pi"]["arch"]) == ("aarch64", "x86_64")
    [venv] = state(hosts[0])["venvs"]
    assert venv.startswith("cp311-aarch64-"), venv
    assert answers_close(predict(hosts[0]), answers["one"], hosts[0])
    # The gate's bench ran under the launcher too, and says so: QEMU's figures, not a Pi's.
    pi_speed, x86_speed = (speed_record(h.edge_root, sha12(models["one"])) for h in hosts)
    assert (pi_speed["emulated"], pi_speed["machine"], x86_speed["emulated"]) == (True, "aarch64", False), pi_speed
    with capsys.disabled():
        print(f"\n  first deploy to an emulated Pi 4 (canary) and a native host: {r.seconds:.1f} s; the gate's bench "
              f"{pi_speed['seconds']:.2f} s emulated, {x86_speed['seconds']:.2f} s native")
