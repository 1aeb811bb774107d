"""`python -m pipeline` as docs/pipeline.md shows it: per-command help, the config in force, a clear
line when run outside the venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.builds import Built
from tests.support.core import pipeline, preset_with, ROOT, sha256_file
from tests.support.make_runs import make


@pytest.mark.parametrize(
    "command, reads, writes",
    [
        ("train", "reads CONFIG", "writes BUILD/model.keras, BUILD/train/history.json"),
        ("plot", "reads BUILD/train/history.json", "writes BUILD/train/loss.png"),
        ("export", "BUILD/model.keras",
         "writes BUILD/model.onnx, BUILD/model.tflite, BUILD/variants/ (each variant and index.json), BUILD/reference.npz"),
        ("verify", "BUILD/reference.npz", "writes BUILD/verify/report.json"),
        ("bundle", "BUILD/verify/report.json", "writes DIST/bundle/ and DIST/bundle.tar.gz"),
        ("config", "reads CONFIG", "writes OUT"),
    ],
)
def test_each_command_help_says_what_it_reads_and_writes(command, reads, writes):
    r = pipeline(command, "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.decode().split())  # argparse wraps lines
    assert f"usage: python -m pipeline {command}" in text
    assert reads.lower() in text.lower() and writes in text, text


def test_options_work_before_and_after_the_command(tmp_path):
    bad = tmp_path / "missing.toml"
    for args in (["--config", str(bad), "train"], ["train", "--config", str(bad)]):
        r = pipeline(*args, "--build", str(tmp_path / "b"))
        assert r.returncode == 2
        assert r.stderr.decode().splitlines() == [
            f"error: config error: {bad}: file: not found (expected a TOML config; "
            "the presets are configs/default.toml, configs/tutorial.toml)"
        ]


@pytest.mark.slow  # trains or runs the pipeline again: make test, not test-fast
def test_a_stage_run_by_hand_records_its_config_so_make_rebuilds_for_another(tmp_path, tiny):
    """`python -m pipeline all --config other.toml`, then `make all CONFIG=tiny.toml`: tiny's bundle,
    not other's; then `make all CONFIG=other.toml` goes back, by make alone. (The orchestration
    config, tests/support/tiny.toml: make's logic, not accuracy.)"""
    other = preset_with(tmp_path / "config" / "other.toml", ("epochs = 300", "epochs = 290"), preset="tiny")
    b = Built(tmp_path / "t", other)
    r = b.run("all")
    assert r.returncode == 0, r.stderr.decode()
    assert (b.build / "config.toml").read_bytes() == other.read_bytes()
    other_sha = sha256_file(b.dist / "bundle.tar.gz")

    # New interpreters here (fork=False): tiny's bundle, which forked stages built, byte for byte.
    rc, out, ran = make(tmp_path / "t", "all", f"CONFIG={tiny.config}", fork=False)
    assert rc == 0 and ran == {"train", "export", "verify", "bundle"}, out
    assert sha256_file(b.dist / "bundle.tar.gz") == sha256_file(tiny.dist / "bundle.tar.gz") != other_sha

    rc, out, ran = make(tmp_path / "t", "all", f"CONFIG={other}")  # and back, by make alone
    assert rc == 0 and ran == {"train", "export", "verify", "bundle"}, out
    assert sha256_file(b.dist / "bundle.tar.gz") == other_sha


def test_a_mistyped_preset_lists_the_presets(tmp_path):
    rc, out, ran = make(tmp_path, "all", "PRESET=tutorail")
    assert rc != 0 and ran == set()
    assert ("error: config error: configs/tutorail.toml: file: not found (expected a TOML config; "
            "the presets are configs/default.toml, configs/tutorial.toml)") in out
    assert "Traceback" not in out


def only(*modules: str, dest: Path) -> Path:
    """A folder holding links to just these installed packages, for a Python started with -S."""
    import importlib.util

    dest.mkdir()
    for m in modules:
        origin = Path(importlib.util.find_spec(m).origin).parent
        (dest / m).symlink_to(origin)
    return dest


@pytest.mark.parametrize(
    "stage, packages, module, package",
    [
        ("train", (), "numpy", "numpy"),  # no site-packages at all
        ("train", ("numpy",), "absl", "absl-py"),  # numpy, but no TensorFlow and friends
        ("verify", ("numpy",), "onnxruntime", "onnxruntime"),  # not "model.onnx does not load"
    ],
)
def test_outside_the_venv_a_missing_package_is_one_line_naming_it_and_the_fix(tmp_path, built, stage, packages,
                                                                              module, package):
    path = only(*packages, dest=tmp_path / "site")
    b = Built(tmp_path, built.config)
    if stage == "verify":
        import shutil

        shutil.copytree(built.build, b.build)
    r = subprocess.run(
        [sys.executable, "-S", "-m", "pipeline", *b.args(stage)], cwd=ROOT, capture_output=True, timeout=120,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}"},
    )
    assert r.returncode == 5, r.stderr.decode()
    (line,) = r.stderr.decode().splitlines()
    assert line.startswith(f"error: no module named {module!r} (package {package}) in {sys.executable}: "), line
    assert f"/bin/python -m pipeline {stage} --config" in line and "/bin/activate" in line, line
