"""Can this Python run the runner? Its version, the numpy and onnxruntime it imports, and
for a missing one the exact command that fixes it.

Stdlib only: it runs before numpy is known to import. (A Python older than 3.10 never
gets here: runtime/__init__.py refuses it.)
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from . import manifest as manifest_mod
from .errors import BundleError, SetupError

PACKAGES = ("numpy", "onnxruntime")  # numpy first: onnxruntime imports it
RUNTIME_DIR = Path(__file__).resolve().parent


def _this_python() -> str:
    return f"{sys.executable} (Python {sys.version.split()[0]})"


def _import(name: str) -> tuple[str | None, str | None]:
    """(version, None) when ``name`` imports here, else (None, what is wrong)."""
    try:
        return importlib.import_module(name).__version__, None
    except Exception as e:
        if isinstance(e, ModuleNotFoundError) and e.name == name:
            return None, f"{name} is not installed for {_this_python()}"
        # A broken install: a wheel for another Python, a missing module or shared library, ...
        first = (str(e).strip().splitlines() or [""])[0]
        return None, f"{name} does not import in {_this_python()}: {type(e).__name__}: {first}"


def probe() -> tuple[dict[str, str | None], str | None]:
    """The versions of Python, numpy and onnxruntime here (None: does not import), and the first problem."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    problem = None
    for name in PACKAGES:
        found[name], why = _import(name)
        problem = problem or why
    return found, problem


def require(bundle: str | Path | None = None, argv: list[str] | None = None) -> str:
    """Check that numpy and onnxruntime import; return a one-line summary of the versions.

    Raises:
        SetupError: naming the package that does not import, this Python, and the command
            that fixes it (``argv``, the runner's arguments, completes a "run it with" command).
    """
    found, problem = probe()
    if problem:
        raise SetupError(f"{problem}; {_fix(bundle, argv)}")
    return (f"Python {found['python']} ({sys.executable}), numpy {found['numpy']}, "
            f"onnxruntime {found['onnxruntime']}")


def _fix(bundle: str | Path | None, argv: list[str] | None) -> str:
    """The command that gets the runner a Python with its requirements."""
    import shlex  # only for this message: not in every command's start

    try:
        home = manifest_mod.locate(bundle).resolve()
        requirements = home / "requirements.txt"
    except BundleError:  # no bundle found: still name a venv, and the runner's own requirements
        home = manifest_mod.HOME
        requirements = RUNTIME_DIR / "requirements.txt"
        if not requirements.exists():
            requirements = home / "requirements.txt"
    for folder in dict.fromkeys((home, manifest_mod.HOME)):  # the bundle's venv, or a checkout's
        venv = folder / ".venv"
        if (venv / "bin" / "python").exists() and venv.resolve() != Path(sys.prefix).resolve():
            python = str(venv / "bin" / "python")
            if argv is None:
                return f"run it with {python}"
            return "run it in that venv: " + shlex.join([python, str(RUNTIME_DIR), *argv])
    req = shlex.quote(str(requirements))
    if sys.prefix != sys.base_prefix:  # already a venv: install into it
        return f"run: {shlex.quote(sys.executable)} -m pip install -r {req}"
    # Debian's and Raspberry Pi OS's system Python refuse `pip install` (PEP 668): make a venv.
    venv = home / ".venv"
    return (f"run: {shlex.quote(sys.executable or 'python3')} -m venv {shlex.quote(str(venv))} && "
            f"{shlex.quote(str(venv / 'bin' / 'pip'))} install -r {req}")
