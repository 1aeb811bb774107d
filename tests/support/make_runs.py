"""`make` run from the tests, into a temporary build folder: which pipeline stages it ran.

Shared by tests/pipeline/test_make.py, tests/pipeline/test_pipeline_cli.py and tests/pipeline/test_faults.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import forkrun
from tests.support.core import ROOT

STAGES = ("train", "export", "verify", "bundle")


def make_argv(tmp: Path, *args: str, env: dict | None = None, fork: bool = True) -> list[str]:
    """`make ARGS` into ``tmp`` with the Makefile's .venv (the test is skipped outside it), its
    environment ``env`` (None: this process's). The pipeline's commands fork from this process's
    fork servers (forkrun.make_vars); ``fork=False``: new interpreters."""
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("run through `make test` (needs the Makefile's .venv)")
    return ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", f"BUILD={tmp}/build", f"DIST={tmp}/dist",
            *(forkrun.make_vars(dict(os.environ) if env is None else env) if fork else []), *args]


def make(tmp: Path, *args: str, fork: bool = True) -> tuple[int, str, set[str]]:
    """make ``args`` into ``tmp`` (make_argv): (exit status, its output, the stages it ran)."""
    r = subprocess.run(make_argv(tmp, *args, fork=fork), capture_output=True, text=True, timeout=600)
    ran = {s for s in STAGES if f" --dist {tmp}/dist {s}" in r.stdout}
    if f" --dist {tmp}/dist train --no-plot --export" in r.stdout:
        ran.add("export")  # in train's process: one TensorFlow start for both stages
        assert f" --dist {tmp}/dist export" not in r.stdout, r.stdout
    return r.returncode, r.stdout + r.stderr, ran
