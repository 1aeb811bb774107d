"""Signed bundles on the fleet (issue 18): the trusted keys a deploy installs root-owned, a key
rotation across two deploys, and the gate refusing a revoked key's bundle, the issue's one-byte
attack and an unsigned bundle, each leaving the device's release and keys as they were."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.bundles import keypair, resign, shifted_bundle, sign
from tests.support.core import sha256_file
from tests.support.fleet import fleet_cmd, predict, sha12, state, tar_bundle

# SSH test hosts (sshd as root): `make test` only, not test-fast.
pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root]


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


def test_signed_deploy_installs_the_trusted_keys_root_owned(signed_hosts, signing, signed):
    rotate, guard = signed_hosts
    for h, keys in ((rotate, ["old", "new"]), (guard, ["new"])):
        assert trust_file(h) == {"keys": [pub(signing[k]) for k in keys], "beside": [], "mode": "0o644", "owner": 0,
                                 "folder": "0o755"}, h.name
        assert state(h)["current"] == f"releases/{sha12(signed['one-new'])}"


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
