"""Other people's clients, in venvs of their own: made once per requirements file under
.cache/ (locked: pytest-xdist's workers may ask at once) and reused while the file is unchanged."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.core import FAILSAFE, ROOT

TRITONCLIENT = Path(__file__).with_name("tritonclient-requirements.txt")


def client_python(requirements: Path) -> Path:
    """The python of a venv with ``requirements`` installed (pip, from the package index)."""
    key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    base = ROOT / ".cache" / "client-venvs"
    base.mkdir(parents=True, exist_ok=True)
    venv = base / f"{requirements.stem}-{key}"
    with open(base / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            for cmd in ([sys._base_executable, "-m", "venv", str(venv)],
                        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                         "-r", str(requirements)]):
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=FAILSAFE)
                assert r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr[-3000:]}"
            (venv / ".complete").touch()
    return venv / "bin" / "python"
