"""`make runtime-check`: the runtime tests in the device's situation, under every supported Python here.

For each Python found (PYTHON first, then pyenv's versions and python3.X on PATH, one per
minor version), a virtual environment under the cache folder made from the bundle's
requirements.txt alone (plus pytest, to run the tests), and the runtime tests run in it
against the bundle tarball. Pythons older than the runtime's minimum are listed as such:
the runtime refuses them (tests/test_runtime_env.py checks how). Stdlib only.

    python -m deploy.devicecheck.runtime_check --tarball dist/bundle.tar.gz [--python python3] [--cache .cache/runtime-venv]
    python -m deploy.devicecheck.runtime_check --venv-only [--python python3]    # just that Python's venv
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "runtime" / "requirements.txt"
# The tests that need only the runtime (test_runtime_fuzz.py needs hypothesis: not on a device).
TESTS = ["tests/test_runtime_api.py", "tests/test_runtime_cli.py", "tests/test_runtime_wall.py",
         "tests/test_runtime_env.py", "tests/test_serve.py", "tests/test_serve_traffic.py"]
PYTEST = "pytest==9.2.0"
MINIMUM = (3, 10)  # runtime/__init__.py refuses older Pythons


def candidates(first: str) -> list[str]:
    """Interpreters to try, in order: ``first``, pyenv's versions, python3.X on PATH."""
    found = [first]
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3")))
    found += [p for p in (shutil.which(f"python3.{m}") for m in range(6, 20)) if p]
    return found


def version(python: str) -> tuple[int, int, str, str] | None:
    """(major, minor, full version, real executable) of an interpreter, or None when it does not run."""
    code = "import sys; print('%d %d %s %s' % (sys.version_info[0], sys.version_info[1], sys.version.split()[0], sys.executable))"
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    parts = r.stdout.split(" ", 3)
    return (int(parts[0]), int(parts[1]), parts[2], parts[3].strip()) if r.returncode == 0 and len(parts) == 4 else None


def venv_for(python: str, minor: tuple[int, int], cache: Path) -> Path:
    """A venv of ``python`` with the bundle's requirements and pytest, remade when requirements.txt changes."""
    venv = cache / f"py{minor[0]}.{minor[1]}"
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_bytes() == REQUIREMENTS.read_bytes():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS), PYTEST], check=True)
    stamp.write_bytes(REQUIREMENTS.read_bytes())
    return venv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.devicecheck.runtime_check", description=__doc__.splitlines()[0])
    p.add_argument("--tarball", help="the bundle under test (required unless --venv-only)")
    p.add_argument("--python", default="python3", help="the first Python to use (default: python3)")
    p.add_argument("--cache", default=".cache/runtime-venv", help="where the venvs go (default: %(default)s)")
    p.add_argument("--venv-only", action="store_true", help="just make the venv of --python (for `make bench`)")
    args = p.parse_args(argv)
    if args.venv_only:
        v = version(args.python)
        if v is None:
            print(f"error: {args.python}: does not run", file=sys.stderr)
            return 5
        print(venv_for(v[3], v[:2], Path(args.cache)))
        return 0
    tarball = Path(args.tarball or "").resolve()
    if not args.tarball or not tarball.is_file():
        print(f"error: {args.tarball}: not found (run `make bundle` first)", file=sys.stderr)
        return 3

    seen: dict[tuple[int, int], tuple[str, str]] = {}  # (major, minor) -> (version, executable)
    too_old: dict[tuple[int, int], tuple[str, str]] = {}
    for python in candidates(args.python):
        v = version(python)
        if v is None or v[:2] in seen or v[:2] in too_old:
            continue
        (seen if v[:2] >= MINIMUM else too_old)[v[:2]] = v[2:]
    if not seen:
        print(f"error: no Python >= {MINIMUM[0]}.{MINIMUM[1]} found (tried {args.python} and pyenv's)", file=sys.stderr)
        return 5

    results = []
    for minor, (full, python) in sorted(seen.items()):
        label = f"{full} ({python})"
        print(f"runtime-check: Python {label}", flush=True)
        try:
            venv = venv_for(python, minor, Path(args.cache))
        except subprocess.CalledProcessError as e:
            results.append((label, f"FAILED to set up ({' '.join(map(str, e.cmd[:4]))} ... exited {e.returncode})"))
            continue
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                           cwd=ROOT, env={**os.environ, "RUNTIME_TEST_BUNDLE": str(tarball)})
        results.append((label, "passed" if r.returncode == 0 else f"FAILED (pytest exit {r.returncode})"))

    print("\nruntime-check: the runtime tests in a venv of the bundle's requirements.txt alone, per Python:")
    for label, verdict in results:
        print(f"  Python {label}: {verdict}")
    for full, python in sorted(too_old.values()):
        print(f"  Python {full} ({python}): below the minimum {MINIMUM[0]}.{MINIMUM[1]}, refused by the runtime (not run)")
    return 0 if all(v == "passed" for _, v in results) else 1


if __name__ == "__main__":
    sys.exit(main())
