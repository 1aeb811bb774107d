"""The role's variables refused before a device is reached: types and allowed values by Ansible
against deploy/roles/edge/meta/argument_specs.yml (for each entry point the playbooks import),
what that cannot say by the first tasks of preflight.yml. No SSH host: the inventory's device
is 127.0.0.1 on a port nothing listens on, so a run that tried to reach it would say
`unreachable:` instead of `refused:`."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml

from tests.support.core import ROOT
from tests.support.fleet import fleet_cmd

HOST = "nowhere"


class Host:
    name = HOST


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> Path:
    with socket.socket() as s:  # a port the kernel picked, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path_factory.mktemp("arguments") / "inventory.ini"
    path.write_text(f"[edge]\n{HOST} ansible_host=127.0.0.1 ansible_port={port} ansible_user=pi "
                    "ansible_python_interpreter=/usr/bin/python3\n")
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A bundle path that exists (python -m deploy checks that much); never read: every run here
    ends before the wheelhouse step."""
    path = tmp_path_factory.mktemp("no-bundle") / "bundle.tar.gz"
    path.write_bytes(b"")
    return path


CASES = [  # (command, -e value, the row's exact result, or a pattern for Ansible's wording)
    ("deploy", "edge_keep_releases=three",
     re.compile(r"refused: argument 'edge_keep_releases' is of type str and we were unable to convert to int: .*three")),
    ("rollback", "edge_service=maybe",
     re.compile(r"refused: argument 'edge_service' is of type str and we were unable to convert to bool: .*maybe")),
    ("status", "edge_service_manager=upstart",
     "refused: value of edge_service_manager must be one of: systemd, command, got: upstart"),
    ("deploy", '{"edge_trusted_keys": {"ssh-ed25519": "AAAA"}}',
     re.compile(r"refused: argument 'edge_trusted_keys' is of type dict and we were unable to convert to list")),
    # what argument_specs cannot say: preflight.yml's first tasks
    ("deploy", "edge_trusted_keys=ssh-ed25519 AAAAC3Nza",
     "refused: edge_trusted_keys must be a list of public keys, each one line as ssh-keygen's KEY.pub holds it "
     "(ssh-ed25519 AAAA... comment); it is a str, not a list"),
    ("deploy", '{"edge_service": true, "edge_service_manager": "command"}',
     'refused: edge_service_manager is command, but edge_service_restart_command is []; set it to the argv that '
     'restarts the service, as a list (e.g. ["sudo", "systemctl", "restart", "edge-model.service"])'),
]


IDS = ["deploy-int", "rollback-bool", "status-choices", "deploy-list", "deploy-keys-a-string", "deploy-command-manager"]


@pytest.fixture(scope="module")
def runs(inventory, bundle, tmp_path_factory) -> dict:
    """Each case's run (by its id), and "defaults": fleet-status with nothing set. Started together:
    each is an ansible-playbook that ends before any device, a second or two of one core, so they
    overlap instead of queuing one behind another."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = {name: (command, ("-e", value), bundle if command == "deploy" else None)
            for name, (command, value, _) in zip(IDS, CASES, strict=True)}
    jobs["defaults"] = ("status", (), None)
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(fleet_cmd, command, inventory, *args, tmp=tmp_path_factory.mktemp(name), bundle=b)
                   for name, (command, args, b) in jobs.items()}
    return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case, expected", [(name, expected) for name, (_, _, expected) in zip(IDS, CASES)], ids=IDS)
def test_a_wrong_variable_is_refused_naming_it_before_the_device_is_reached(runs, case, expected):
    r = runs[case]
    assert r.rc == 2, r.out[-3000:] + r.err[-2000:]
    result = r.result(Host)
    if isinstance(expected, str):
        assert result == expected, result
    else:
        assert expected.fullmatch(result) or expected.match(result), result
    assert "\n" not in result
    assert r.recap(Host)["unreachable"] == 0 and "UNREACHABLE" not in r.out, r.out[-3000:]  # never connected


def test_the_defaults_pass_and_the_run_goes_on_to_the_device(runs):
    """The role's defaults (templated ones included) pass every check: fleet-status goes on to
    the probe, which cannot reach the device."""
    r = runs["defaults"]
    assert r.rc == 4, r.out[-3000:]
    assert r.result(Host).startswith("unreachable:"), r.report
    assert "Validating arguments against arg spec 'status'" in r.out  # it did run, and passed


def test_every_entry_point_the_playbooks_import_has_an_argument_spec():
    """ansible-core 2.19 looks an entry point up by tasks_from's exact text: `tasks_from: preflight.yml`
    would find no spec named `preflight` and validate nothing, silently."""
    specs = yaml.safe_load((ROOT / "deploy" / "roles" / "edge" / "meta" / "argument_specs.yml").read_text())
    entry_points = set(specs["argument_specs"])
    options = {name: set(spec["options"]) for name, spec in specs["argument_specs"].items()}
    imported = set()
    for playbook in ("deploy.yml", "rollback.yml", "status.yml"):  # pull mode runs deploy.yml
        for play in yaml.safe_load((ROOT / "deploy" / playbook).read_text()):
            for task in play.get("tasks", []):
                role = task.get("ansible.builtin.import_role") or task.get("ansible.builtin.include_role")
                if role:
                    imported.add(role["tasks_from"])
    assert imported and imported <= entry_points, (imported, entry_points)
    defaults = yaml.safe_load((ROOT / "deploy" / "roles" / "edge" / "defaults" / "main.yml").read_text())
    internal = {"edge_min_python", "edge_launcher"}  # in defaults/main.yml, not for the inventory
    for name in entry_points:
        assert options[name] == set(defaults) - internal, name  # every user variable, in every entry point


def test_a_bundle_the_wheelhouse_cannot_read_fails_the_run_with_the_wheelhouses_line(bundle, tmp_path):
    """Past the checks, on a device the run can reach (this machine, connection local): the
    wheelhouse step (the role's edge_wheelhouse action, in Ansible's own process) cannot read an
    empty bundle, and the device's row is wheelhouse.py's one line; nothing was written there."""
    root = tmp_path / "edge-model"
    root.mkdir()
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[edge]\n{HOST} ansible_connection=local ansible_python_interpreter=/usr/bin/python3 "
                         f"edge_root={root}\n")
    r = fleet_cmd("deploy", inventory, tmp=tmp_path, bundle=bundle)
    assert r.rc == 2, r.out[-3000:] + r.err[-2000:]
    assert r.result(Host) == ("failed: edge : Build the wheelhouse for every target, and read the bundle (on the "
                              f"deploying machine): error: wheelhouse: {bundle}: not a readable tarball (file could not "
                              "be opened successfully)"), r.report
    assert list(root.iterdir()) == []
