"""The Makefile: stages are file targets, so make redoes exactly what changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PRESETS, ROOT

STAGES = ("train", "export", "verify", "bundle")


def make(tmp: Path, *args: str) -> tuple[int, str, set[str]]:
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("run through `make test` (needs the Makefile's .venv)")
    r = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", f"BUILD={tmp}/build",
         f"DIST={tmp}/dist", *args],
        capture_output=True, text=True, timeout=600,
    )
    ran = {s for s in STAGES if f" --dist {tmp}/dist {s}" in r.stdout}
    return r.returncode, r.stdout + r.stderr, ran


def test_make_runs_what_changed_and_nothing_else(tmp_path):
    rc, out, ran = make(tmp_path, "all")
    assert rc == 0, out
    assert ran == set(STAGES)
    assert "all: done" in out and (tmp_path / "dist" / "bundle.tar.gz").exists()

    rc, out, ran = make(tmp_path, "all")
    assert rc == 0 and ran == set(), out  # nothing changed: no stage runs

    os.utime(tmp_path / "build" / "model.onnx")
    rc, out, ran = make(tmp_path, "all")
    assert rc == 0 and ran == {"verify", "bundle"}, out

    edited = tmp_path / "edited.toml"
    edited.write_text((PRESETS / "default.toml").read_text().replace("steps = 2000", "steps = 1900"))
    rc, out, ran = make(tmp_path, "all", f"CONFIG={edited}")
    assert rc == 0 and ran == set(STAGES), out

    rc, out, ran = make(tmp_path, "all", f"CONFIG={edited}")  # same config again: no work
    assert rc == 0 and ran == set(), out


def test_make_bad_config_fails_fast_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((PRESETS / "default.toml").read_text().replace("[verify.onnx]", "[verify.onx]"))
    rc, out, ran = make(tmp_path, "all", f"CONFIG={bad}")
    assert rc != 0 and ran == set()
    assert f"error: config error: {bad}: verify.onx: unknown key" in out
    assert not (tmp_path / "build" / "model.keras").exists()


def test_make_help_lists_the_targets():
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for target in ("all", "train", "export", "verify", "bundle", "test", "clean"):
        assert any(line.split()[0] == target for line in r.stdout.splitlines() if line.strip()), target
