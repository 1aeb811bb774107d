"""Fixtures of the deploy tier: SSH test hosts, and the bundles deployed to them."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.support.fleet import shifted_models
from tests.support.sshfleet import Fleet, SshUnavailable, ensure_sshd


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A Fleet of the module's own (tests/support/sshfleet.py): sshd test hosts on 127.0.0.1."""
    try:
        ensure_sshd()
    except SshUnavailable as e:
        pytest.skip(str(e))
    with Fleet(tmp_path_factory.mktemp("fleet")) as f:
        yield f


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
