"""The tests' common ground: where the repository is, the one failsafe on every wait, running the
pipeline and the runtime as subprocesses, and small helpers for configs and error lines.

Light on purpose: the runtime tests import it on a device-like venv (numpy, onnxruntime, pytest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.support import forkrun
from runtime.manifest import sha256_bytes, sha256_file  # noqa: F401 - the tests' one sha256

ROOT = Path(__file__).resolve().parent.parent.parent
PRESETS = ROOT / "configs"
# Seconds: the one bound on every wait for observed progress (a line, a file, a socket, a
# state). Only a hang reaches it; no verdict depends on it, so a slow machine only waits longer.
FAILSAFE = 600.0


def wait_until(what: str, predicate, poll: float = 0.01, failsafe: float = FAILSAFE):
    """Poll an observed state until ``predicate()`` is truthy and return that value.

    ``what`` names the state in the failure, raised only if ``failsafe`` seconds pass first
    (a hang, never a slow machine's verdict). Between two looks it sleeps ``poll`` seconds, or
    four times as long as the last look took (up to 1 s) if that is longer: a predicate that
    starts a process (systemctl, journalctl) then costs at most a fifth of a core while it
    waits, instead of one that ran back to back through a 20 s wait.
    """
    deadline = time.monotonic() + failsafe
    while True:
        t = time.monotonic()
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"failsafe: still waiting for {what} after {failsafe:g} s")
        time.sleep(max(poll, min(4 * (now - t), 1.0)))


def edited(text: str, *pairs: tuple[str, str]) -> str:
    """``text`` with each ``(old, new)`` replaced; fails loudly unless ``old`` occurs exactly once
    (a preset edited since the test was written must not make the edit a silent no-op)."""
    for old, new in pairs:
        n = text.count(old)
        assert n == 1, f"expected {old!r} exactly once in the text to edit, found it {n} times"
        text = text.replace(old, new)
    return text


# The files the presets name by relative path: their data and their oracle.
PRESET_FILES = ("celsius.csv", "fahrenheit.py")


# The orchestration tests' config (what it is for: its own comments).
TINY = Path(__file__).with_name("tiny.toml")


def preset_with(dest: Path, *pairs: tuple[str, str], preset: str = "default") -> Path:
    """Write configs/<preset>.toml (or, for preset "tiny", tests/support/tiny.toml), edited by
    ``pairs`` (see ``edited``), to ``dest``, with the files it names beside it (``PRESET_FILES``);
    return ``dest``."""
    source = TINY if preset == "tiny" else PRESETS / f"{preset}.toml"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(edited(source.read_text(), *pairs))
    for name in PRESET_FILES:
        if not (dest.parent / name).exists():
            shutil.copyfile(PRESETS / name, dest.parent / name)
    return dest


def run_module(module: str, *args: str, cwd: Path = ROOT, stdin: bytes | None = None, env=None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` (bytes out) with the repo on the path: forked from a process
    with numpy and onnxruntime imported (tests/support/forkrun.py)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return forkrun.python("-m", module, *args, cwd=cwd, env=e, input=stdin, timeout=timeout)


def pipeline(*args: str, **kw) -> subprocess.CompletedProcess:
    return run_module("pipeline", *args, **kw)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The one `error:` line a failed command must print on stderr (and no traceback)."""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert b"Traceback" not in r.stderr
    return lines[0]


def runtime_cli(bundle: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`python -m runtime ...` run from inside the bundle, with the bundle's own runtime/."""
    return run_module("runtime", *args, cwd=bundle, stdin=stdin, env={"PYTHONPATH": ""})



# The minimal dataset-mode config (#17): a complete, valid config as it stands.
MINIMAL = """\
[data]
file = "data.csv"           # a CSV with a header row
target = "label"
validation = 0.2

[task]
kind = "classification"

[model]
builder = "model.py:build"
"""
