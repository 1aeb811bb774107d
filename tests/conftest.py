"""Shared fixtures: the real pipeline, run once per session into a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs"


def run_module(module: str, *args: str, cwd: Path = ROOT, stdin: bytes | None = None, env=None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` (bytes out) with the repo on the path."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, input=stdin, capture_output=True,
        env=e, timeout=timeout,
    )


def pipeline(*args: str, **kw) -> subprocess.CompletedProcess:
    return run_module("pipeline", *args, **kw)


class Built:
    """Paths of one real pipeline run."""

    def __init__(self, root: Path, config: Path):
        self.root, self.config = root, config
        self.build, self.dist = root / "build", root / "dist"

    def args(self, stage: str) -> list[str]:
        return [stage, "--config", str(self.config), "--build", str(self.build), "--dist", str(self.dist)]

    def run(self, stage: str, **kw) -> subprocess.CompletedProcess:
        return pipeline(*self.args(stage), **kw)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    """The default config through all four stages (train, export, verify, bundle)."""
    b = Built(tmp_path_factory.mktemp("default"), PRESETS / "default.toml")
    r = b.run("all")
    assert r.returncode == 0, r.stderr.decode()
    return b


@pytest.fixture(scope="session")
def bundle_tarball(request) -> Path:
    """The bundle under test: $RUNTIME_TEST_BUNDLE (make runtime-check), else a fresh pipeline run's."""
    given = os.environ.get("RUNTIME_TEST_BUNDLE")
    if given:
        return Path(given).resolve()
    return request.getfixturevalue("built").dist / "bundle.tar.gz"


@pytest.fixture
def bundle(tmp_path, bundle_tarball) -> Path:
    """A freshly unpacked copy of the bundle (tests may damage it)."""
    import tarfile

    with tarfile.open(bundle_tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "bundle"


def runtime_cli(bundle: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`python -m runtime ...` run from inside the bundle, with the bundle's own runtime/."""
    return run_module("runtime", *args, cwd=bundle, stdin=stdin, env={"PYTHONPATH": ""})


def resign(bundle: Path, name: str, data: bytes) -> None:
    """Replace a bundle file and make the manifest's hashes agree with it (a re-signed bad file)."""
    import json

    from runtime.manifest import sha256_bytes

    (bundle / name).write_bytes(data)
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][name] = sha256_bytes(data)
    raw = (json.dumps(m, indent=2, sort_keys=True) + "\n").encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.json.sha256").write_text(f"{sha256_bytes(raw)}  manifest.json\n")
