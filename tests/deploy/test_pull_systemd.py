"""Pull mode on the systemd test host (issue 19, section 4): the device deploys itself.

A push deploy with `edge_pull_url` installs edge-pull.timer and edge-pull.service; from then
on the device's own timer runs ansible-pull on the repository `python -m deploy.publish`
wrote (here a bare Git repository on the device, /srv/edge-pull.git, owned by pi), with the
settings of that push (/etc/edge-pull/settings.json). The test never starts a pull itself: it
publishes and waits for the device's timer to converge. The timer here fires 1 s after it
starts and an hour after each run ends (edge_pull_first, edge_pull_interval): each start of it
gives one run, the one a test waits for (runs 1 s apart also ran on into the push that follows,
each a whole ansible-pull for nothing: CPU the other tests want). A test stops it once it has
seen that run, and the next starts it again.

The tests run in order on a systemd host of the module's own: the first push deploy installs
the release and pull mode together.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.core import FAILSAFE, ROOT, wait_until
from tests.support.fleet import ask, f32, fleet_cmd, sha12, tar_bundle
from tests.support.fleet import overlay_state as state
from tests.support.sshfleet import python_key

pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root]

REPO = "/srv/edge-pull.git"
REPORT = "/var/lib/edge-pull/report.json"
UNITS = ("/etc/systemd/system/edge-pull.service", "/etc/systemd/system/edge-pull.timer", "/etc/edge-pull/settings.json")
SETTINGS_DIR = "/etc/edge-pull"


@functools.cache
def target() -> str:
    """The container's wheelhouse target: this machine's (it is an overlay of this root)."""
    r = subprocess.run(["/usr/bin/python3", "-c", "import os, platform, sys; print(platform.machine(), "
                        "'%d.%d' % sys.version_info[:2], os.confstr('CS_GNU_LIBC_VERSION').split()[1])"],
                       capture_output=True, text=True, check=True)
    machine, python, glibc = r.stdout.split()
    return f"{machine}:{python}:{'.'.join(glibc.split('.')[:2])}"


@pytest.fixture(scope="module")
def host(systemd_host, venv_templates):
    """The module's systemd host, its release venv already installed (the install under systemd
    is test_deploy_systemd.py's first test): the pull tests start at pull mode's own install."""
    systemd_host.seed_venvs(venv_templates / python_key("/usr/bin/python3"))
    yield systemd_host
    # Whatever the tests did: no pull left running into later modules.
    systemd_host.systemctl("disable", "--now", "edge-pull.timer")
    systemd_host.systemctl("stop", "edge-pull.service")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pull-runs")


@pytest.fixture(scope="module")
def bad(models, tmp_path_factory) -> Path:
    """The default bundle with a flipped bit in model.onnx: its selfcheck (the gate) refuses it."""
    d = tmp_path_factory.mktemp("pull-bad")
    with tarfile.open(models["one"]) as tar:
        tar.extractall(d, filter="data")
    model = bytearray((d / "bundle" / "model.onnx").read_bytes())
    model[-5] ^= 0x01
    (d / "bundle" / "model.onnx").write_bytes(bytes(model))
    return tar_bundle(d / "bundle", d / "bad.tar.gz")


@pytest.fixture(scope="module")
def inventory(host, tmp_path_factory) -> Path:
    """The push inventory of the device, with pull mode on: its repository, and a timer that
    fires 1 s after it starts and an hour after each run (the deploy installs ansible-pull)."""
    return host.inventory(tmp_path_factory.mktemp("pull-inv") / "inventory.ini", edge_pull_url=f"file://{REPO}",
                          edge_pull_first="1s", edge_pull_interval="1h", edge_pull_jitter="0")


def publish(host, bundle: Path) -> str:
    """`python -m deploy.publish` into the device's repository, then owned by pi as a Git server's would be."""
    r = subprocess.run([sys.executable, "-m", "deploy.publish", "--repo", str(host.path(REPO)), "--bundle", str(bundle),
                        "--target", target()], cwd=ROOT, capture_output=True, text=True, timeout=FAILSAFE)
    assert r.returncode == 0, r.stderr
    chown = host.nsenter("chown", "-R", "pi:pi", REPO)
    assert chown.returncode == 0, chown.stderr
    return r.stdout.strip()


def report(host) -> dict:
    """The last pull run's row (the table's JSON, which each run writes at its end)."""
    p = host.path(REPORT)
    try:
        return json.loads(p.read_text()).get("localhost", {})
    except (OSError, ValueError):  # none yet, or being replaced (os.replace: never half-written)
        return {}


def journal(host) -> str:
    """edge-pull.service's journal: systemd's lines and ansible-pull's output."""
    return host.nsenter("journalctl", "--no-pager", "-o", "cat", "-u", "edge-pull.service").stdout


def pulls(host) -> int:
    """How many pull runs ended (either way), from the journal."""
    return sum(1 for ln in journal(host).splitlines()
               if ln.startswith(("Finished edge-pull.service", "Failed to start edge-pull")))


def stop_pulling(host) -> None:
    """The timer stopped, and the run it started (if any) ended."""
    host.systemctl("stop", "edge-pull.timer")
    wait_until("no pull running", lambda: host.systemctl("is-active", "edge-pull.service") != "activating")


def test_a_push_deploy_with_edge_pull_url_installs_pull_mode(host, inventory, models, tmp, capsys):
    out = publish(host, models["one"])
    assert out.startswith("published: "), out
    assert publish(host, models["one"]).startswith("up to date: ")  # nothing new: no commit
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["one"])
    assert r.rc == 0 and r.result(host) in ("deployed", "unchanged"), r.out[-3000:] + r.err[-2000:]
    for f in UNITS:
        assert host.path(f).is_file(), f
    settings = json.loads(host.path("/etc/edge-pull/settings.json").read_text())
    assert settings["edge_pull_url"] == f"file://{REPO}"
    assert settings["edge_healthz_url"] == f"http://127.0.0.1:{host.service_port}/healthz"
    assert settings["edge_service"] is True and settings["edge_root"] == str(host.edge_root)
    assert host.systemctl("is-enabled", "edge-pull.timer") == "enabled"
    assert host.systemctl("is-active", "edge-pull.timer") == "active"
    assert host.show("edge-pull.service", "User") == "pi"
    # ansible-pull from the venv the deploy installed offline (deploy/pull-requirements.txt's pin)
    venvs = sorted(os.listdir(host.path(host.edge_root / "pull")))
    assert len(venvs) == 1 and host.path(host.edge_root / "pull" / venvs[0] / ".edge-complete").exists(), venvs
    ansible_pull = f"{host.edge_root}/pull/{venvs[0]}/bin/ansible-pull"
    assert host.show("edge-pull.service", "ExecStart").startswith(f"{{ path={ansible_pull} ;"), \
        host.show("edge-pull.service", "ExecStart")
    version = host.ssh(ansible_pull, "--version")
    pin = re.search(r"^ansible-core==(\S+)$", (ROOT / "deploy/pull-requirements.txt").read_text(), re.M)[1]
    assert version.stdout.startswith(f"ansible-pull [core {pin}]"), version
    # The timer, not the test, runs the first pull: the repository holds what the device runs.
    wait_until("a first pull run by the timer", lambda: pulls(host) >= 1)
    row = report(host)
    assert row.get("result") == "unchanged" and row.get("new") == sha12(models["one"]), (row, journal(host)[-3000:])
    stop_pulling(host)  # until the next test has published its release
    with capsys.disabled():
        print(f"\n  pull mode: installed by a push deploy in {r.seconds:.1f} s; "
              f"published {out.split()[-4]} ({os.path.getsize(models['one'])} B bundle)")


def test_the_timer_pulls_a_published_release_and_the_device_converges_as_a_push_would(
        host, inventory, models, answers, tmp, capsys):
    pid0 = host.main_pid()
    publish(host, models["two"])
    host.systemctl("start", "edge-pull.timer")  # its first run 1 s later (OnActiveSec), then each 1 s after the last
    t = time.perf_counter()
    two = sha12(models["two"])
    wait_until("the pulled release deployed", lambda: report(host).get("new") == two and report(host).get("result"))
    seconds = time.perf_counter() - t
    assert report(host)["result"] == "deployed", report(host)
    s = state(host)
    assert s["current"] == f"releases/{two}" and s["previous"] == f"releases/{sha12(models['one'])}", s
    assert host.main_pid() != pid0
    assert f32(ask(host)[1]) == f32(answers["two"])
    owner = host.ssh(f"stat -c %U:%G {host.edge_root}/releases/{two}")
    assert owner.stdout.split() == ["pi:pi"], owner  # as a push deploy leaves it
    # The same state as a push: the push deploy of that release finds nothing to do.
    pid1 = host.main_pid()
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["two"])
    assert r.rc == 0 and r.result(host) == "unchanged", r.out[-3000:]
    assert r.recap(host)["changed"] == 0, r.recap(host)
    assert host.main_pid() == pid1
    stop_pulling(host)  # the next test starts it again
    with capsys.disabled():
        print(f"\n  pull mode: published to deployed (the timer's run) in {seconds:.1f} s")


def test_a_pulled_release_that_fails_its_gate_is_refused_and_the_device_keeps_its_own(
        host, models, answers, bad, capsys):
    before, pid = state(host), host.main_pid()
    publish(host, bad)
    host.systemctl("start", "edge-pull.timer")  # its first run 1 s later (OnActiveSec)
    wait_until("the pulled bad release's run", lambda: sha12(bad) in report(host).get("result", ""))
    stop_pulling(host)  # no later run (its retry, an hour on): the state is read after this one
    row = report(host)
    assert row["result"].startswith(f"rolled back: selfcheck of {sha12(bad)} failed (exit "), row
    assert "model.onnx | sha256 mismatch" in row["result"], row
    assert state(host) == before
    assert host.main_pid() == pid
    assert f32(ask(host)[1]) == f32(answers["two"])
    assert "rolled back: selfcheck of" in journal(host)  # the table, in the device's journal


def test_a_push_deploy_without_edge_pull_url_removes_pull_mode(host, models, tmp, tmp_path_factory):
    stop_pulling(host)  # no pull racing the push that removes it
    plain = host.inventory(tmp_path_factory.mktemp("pull-off") / "inventory.ini")
    r = fleet_cmd("deploy", plain, tmp=tmp, bundle=models["two"])
    assert r.rc == 0 and r.result(host) == "unchanged", r.out[-3000:]
    for f in (*UNITS, SETTINGS_DIR, host.edge_root / "pull"):
        assert not host.path(f).exists(), f
    assert host.systemctl("is-enabled", "edge-pull.timer") in ("", "not-found")


def test_pull_mode_needs_the_systemd_service(host, inventory, models, tmp):
    r = fleet_cmd("deploy", inventory, "-e", "edge_service=false", tmp=tmp, bundle=models["two"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(host) == ("refused: edge_pull_url is set, but pull mode needs edge_service=true and "
                              "edge_service_manager=systemd (its timer and service are systemd units); set both, "
                              "or leave edge_pull_url empty"), r.report
    assert not host.path(UNITS[1]).exists()


def test_publish_refuses_a_folder_that_is_not_a_repository_and_a_missing_bundle(tmp_path, models):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    cases = [(["--repo", str(tmp_path / "junk"), "--bundle", str(models["one"]), "--target", "x86_64:3.11:2.36"], 2,
              f"error: publish: repo {tmp_path / 'junk'}: not a bare Git repository and not empty; give a new or a bare one"),
             (["--repo", str(tmp_path / "r.git"), "--bundle", str(tmp_path / "none.tar.gz"), "--target", "x86_64:3.11:2.36"],
              2, f"error: publish: bundle {tmp_path / 'none.tar.gz'}: not found; run `make bundle` first"),
             (["--repo", str(tmp_path / "r.git"), "--bundle", str(models["one"]), "--target", "sparc:3.11:2.36"], 3, None)]
    for args, code, line in cases:
        r = subprocess.run([sys.executable, "-m", "deploy.publish", *args], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: publish: "), r.stderr
        if line:
            assert lines[0] == line
    assert not (tmp_path / "r.git").exists()  # nothing made before the wheelhouse was
