"""Fixtures every tier shares: the real pipeline's builds, made once per test run (and shared by
pytest-xdist's workers), bundles to damage, servers, and the systemd test host.

The helpers behind them live in tests/support/ (a package: `from tests.support.core import ...`);
a test module imports those, never another test module.
"""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support import forkrun
from tests.support.builds import begin_shared, Built, make_all, shared
from tests.support.bundles import precompile, signature_bundle
from tests.support.core import preset_with, PRESETS, ROOT
from tests.support.schedule import longest_first, needs_default_build
from tests.support.server import Server

# The suite runs as a fresh machine would, whatever the caller's shell holds: no signing key
# for the bundles it builds, no trusted keys for the bundles it runs. Tests that want them
# pass them explicitly.
for _name in ("SIGNING_KEY", "EDGE_TRUSTED_KEYS", "EDGE_SSH_KEYGEN"):
    os.environ.pop(_name, None)
# Export converts the TFLite variants in its own process: the worker's second TensorFlow import
# (4-5 s of CPU a build) buys nothing where the test workers keep both cores busy. The worker's
# own tests (tests/pipeline/test_tflite_worker.py) turn it back on.
os.environ["PIPELINE_TFLITE_WORKER"] = "0"


def pytest_configure(config):
    """pytest-xdist's controller, before it starts its workers: they share its fork servers
    (tests/support/forkrun.py), one TensorFlow import a run instead of one per worker."""
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        forkrun.share()


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session):
    """Let pytest keep the test modules it rewrites (its assert rewriting costs each process
    about 7 s of CPU) as bytecode even where PYTHONDONTWRITEBYTECODE is set, as on CI: the next
    run's collection reads them back. The modules they import while collecting get theirs too, in
    __pycache__ beside their sources (ignored by git), as on any machine that writes bytecode. Only
    while collecting; the processes the tests start get the environment as it is."""
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        yield
    finally:
        sys.dont_write_bytecode = saved


@pytest.hookimpl(trylast=True)  # after -m's deselection: the weights depend on what runs
def pytest_collection_modifyitems(config, items):
    """The longest test files first (tests/support/schedule.py): pytest-xdist hands the files out
    in this order (the Makefile turns its own reordering off)."""
    longest_first(items, ROOT, getattr(config, "workerinput", {}).get("workercount", 1))


def pytest_collection_finish(session):
    """Begin the default config's build (``built``) once the tests are collected, when one of them
    will ask for it: the tests that do not need it run meanwhile (tests/support/schedule.py hands
    them out first), instead of a worker waiting for it with a core idle. Under pytest-xdist each
    worker collects: the first to get here makes it, in a thread of its own."""
    config = session.config
    if config.option.collectonly or os.environ.get("RUNTIME_TEST_BUNDLE"):
        return
    if any(needs_default_build(item) for item in session.items):
        begin_shared(config._tmp_path_factory, "default", _maker(_default_config))


# --- builds, once per test run --------------------------------------------------------------

def _maker(config):
    """What makes a config's build in a shared folder: ``config(folder)`` gives the config's path
    (it may write it into the folder first)."""
    def make(folder: Path) -> None:
        r = Built(folder, config(folder)).run("all")
        assert r.returncode == 0, r.stderr.decode()[-3000:]

    return make


def build_all(tmp_path_factory, name: str, config) -> Built:
    """A config through all four stages, made once per test run into the shared folder ``name``."""
    folder = shared(tmp_path_factory, name, _maker(config))
    return Built(folder, config(folder))


def _default_config(folder: Path) -> Path:
    return PRESETS / "default.toml"


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    """The default config through all four stages (train, export, verify, bundle): read only."""
    return build_all(tmp_path_factory, "default", _default_config)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Built:
    """tests/support/tiny.toml, the orchestration tests' config, through all four stages: read only.
    Its config is tiny.config (in the shared folder, with the files it names beside it)."""
    def config(folder: Path) -> Path:
        path = folder / "tiny.toml"
        return path if path.exists() else preset_with(path, preset="tiny")

    return build_all(tmp_path_factory, "tiny", config)


@pytest.fixture(scope="session")
def example_build(tmp_path_factory):
    """``example_build(name)``: (build, dist) of `make all CONFIG=examples/<name>/edge.toml`,
    made once per test run and shared: copy it (``copied_build``) before changing anything."""
    def get(name: str) -> tuple[Path, Path]:
        def make(folder: Path) -> None:
            r = make_all(ROOT / "examples" / name / "edge.toml", folder / "build", folder / "dist")
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

        base = shared(tmp_path_factory, f"example-{name}", make)
        return base / "build", base / "dist"

    return get


@pytest.fixture(scope="session")
def bundle_tarball(request) -> Path:
    """The bundle under test: $RUNTIME_TEST_BUNDLE (make runtime-check), else the default build's."""
    given = os.environ.get("RUNTIME_TEST_BUNDLE")
    if given:
        return Path(given).resolve()
    return request.getfixturevalue("built").dist / "bundle.tar.gz"


@pytest.fixture
def bundle(tmp_path, bundle_tarball) -> Path:
    """A freshly unpacked copy of the bundle (tests may damage it), its runtime/ byte-compiled as
    the device's install does it (``precompile``)."""
    with tarfile.open(bundle_tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    return precompile(tmp_path / "bundle")


@pytest.fixture
def runner(bundle):
    """A ``runtime.Runner`` on the test's bundle, closed at the end."""
    from runtime import Runner

    with Runner.from_bundle(bundle) as r:
        yield r


# --- servers ----------------------------------------------------------------------------------

def _servers():
    started = []

    def start(bundle_dir: Path, *args: str, **kw) -> Server:
        if not any(a in ("--port", "--unix") for a in args) and "pass_fds" not in kw:
            args = (*args, "--port", "0")
        s = Server(bundle_dir, *args, **kw)
        started.append(s)
        return s

    return started, start


@pytest.fixture
def serve(bundle):
    """Start servers on the test's bundle (``serve(*args)``, ephemeral port by default); all stopped at the end."""
    started, start = _servers()
    yield lambda *args, bundle_dir=None, **kw: start(bundle_dir or bundle, *args, **kw)
    for s in started:
        s.stop()


@pytest.fixture
def serve_bundle():
    """Start servers on any bundle folder (``serve_bundle(dir, *args)``, ephemeral port); all stopped at the end."""
    started, start = _servers()
    yield start
    for s in started:
        s.stop()


# --- signature bundles (tests/support/bundles.py): built by hand, no pipeline -----------------

@pytest.fixture
def tabular_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "tabular", "tabular")


@pytest.fixture
def image_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "image", "image")


@pytest.fixture
def regression_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "regression", "regression")


@pytest.fixture
def scalar_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "scalar", "scalar")


# --- the systemd test host (tests/support/systemd_host.py) --------------------------------------

@pytest.fixture(scope="module")
def systemd_host(tmp_path_factory):
    """A booted systemd test host of the module's own (about 15 s to boot; the modules that use one
    run on any pytest-xdist worker, side by side); the tests skip (one line) where it cannot boot."""
    from tests.support.systemd_host import SystemdHost, SystemdUnavailable, ensure_nspawn

    try:
        ensure_nspawn()
        host = SystemdHost(tmp_path_factory.mktemp("systemd-host"))
        host.__enter__()
    except SystemdUnavailable as e:
        pytest.skip(f"no systemd test host: {e}")
    try:
        yield host
    finally:
        host.close()
