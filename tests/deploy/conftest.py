"""Fixtures of the deploy tier: SSH test hosts, and the bundles deployed to them."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.support.builds import shared
from tests.support.fleet import fleet_cmd, shifted_models
from tests.support.sshfleet import ensure_sshd, Fleet, python_key, SshUnavailable


def _sshd() -> None:
    try:
        ensure_sshd()
    except SshUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def venv_templates(tmp_path_factory, built) -> Path:
    """The venv a real deploy of the default bundle installs on a host with Debian's python3, made
    once per test run (one host, one `python -m deploy deploy`) and kept as
    ``<folder>/<python_key>/<venv id>/``: the seed of fresh hosts (Fleet's ``venvs``)."""
    def make(folder: Path) -> None:
        with Fleet(folder / "fleet") as f:
            host = f.add("template", seed=False)
            r = fleet_cmd("deploy", f.inventory(folder / "inventory.ini", [host]), tmp=folder,
                          bundle=built.dist / "bundle.tar.gz")
            assert r.rc == 0 and r.result(host) == "deployed", r.out[-3000:] + r.err
            [venv] = (host.edge_root / "venvs").iterdir()
            (folder / "venvs" / python_key(host.python)).mkdir(parents=True)
            venv.rename(folder / "venvs" / python_key(host.python) / venv.name)

    _sshd()
    return shared(tmp_path_factory, "venv-templates", make) / "venvs"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, venv_templates):
    """A Fleet of the module's own (tests/support/sshfleet.py): sshd test hosts on 127.0.0.1,
    seeded with the run's template venvs unless added with ``seed=False``."""
    _sshd()
    with Fleet(tmp_path_factory.mktemp("fleet"), venvs=venv_templates) as f:
        yield f


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    """A folder for the module's deploy runs (their reports, Ansible's control sockets)."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def models(built, tmp_path_factory) -> dict:
    """Tarballs: "one", the default bundle, and "two", "three", its model +1, +2 degF (re-signed
    throughout: known answers, no second training run)."""
    return shifted_models(built, tmp_path_factory.mktemp("models"), count=2)


@pytest.fixture(scope="module")
def answers(models) -> dict:
    """What `predict 100` answers for each of ``models`` on this machine (the x86 reference)."""
    import numpy as np

    from runtime import Runner

    out = {}
    for name in ("one", "two", "three", "four"):
        if name in models:
            with tarfile.open(models[name]) as tar, tempfile.TemporaryDirectory() as t:
                tar.extractall(t, filter="data")
                with Runner.from_bundle(Path(t) / "bundle") as r:
                    out[name] = float(r.predict(np.float32([100.0]))[0])
    return out
