"""The playbooks themselves: ansible-lint's production profile, and no insecure SSH option in any
file of the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.core import FAILSAFE, ROOT

pytestmark = pytest.mark.slow  # ansible-lint takes a while: `make test` only


def test_ansible_lint_production_profile():
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-lint"), "--nocolor", "."], cwd=ROOT / "deploy",
                       capture_output=True, text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
                       timeout=FAILSAFE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in r.stderr + r.stdout


def test_no_insecure_ssh_options_anywhere():
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]  # the README and every docs/ page
    for path in [*(ROOT / "deploy").rglob("*"), *(ROOT / "tests").rglob("*.py"), ROOT / "Makefile", *docs]:
        if path.is_file() and path.suffix in (".py", ".yml", ".ini", ".cfg", ".md", "") and path != Path(__file__):
            text = path.read_text(errors="replace")
            assert not re.search(r"StrictHostKeyChecking\s*=\s*no|host_key_checking\s*=\s*False", text, re.I), path
