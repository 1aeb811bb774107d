"""`make runtime-check`: the runtime tests in the device's situation, under every supported Python here.

For each Python found (PYTHON first, then pyenv's versions and python3.X on PATH, one per
minor version), a virtual environment under the cache folder with the bundle's
requirements.txt alone, installed as a device installs them: from the wheelhouse
(deploy/wheelhouse.py) for this machine's target (``x86_64:<python X.Y>:<glibc X.Y>``),
offline and hash-checked. pytest, to run the tests, is not part of the bundle and is not on
a device: it comes from the package index, installed first with the venv's own pip, so the
wheelhouse's install is the last word on the bundle's packages. Then the runtime tests run
in that venv against the bundle tarball. Pythons older than the runtime's minimum are
listed as such: the runtime refuses them (tests/runtime/test_runtime_env.py checks how).

A venv is ``<cache>/py<X.Y>``, the wheelhouse ``<cache>/wheelhouse``. A venv is reused while
its ``.installed`` stamp (written last: a killed setup is redone) names the same wheelhouse
(its id is the lock's sha256), the same pytest and the same Python version.

    python -m deploy.devicecheck.runtime_check --tarball dist/bundle.tar.gz [--python python3] [--cache .cache/runtime-venv]
    python -m deploy.devicecheck.runtime_check --venv-only [--tarball T] [--python python3] [--cache ...]
        # just that Python's venv, its path on stdout (for `make bench`); without --tarball
        # it is made from the source tree's runtime/requirements.txt

Exit codes: 0 every Python's tests passed (--venv-only: the venv is ready); 1 a Python's
tests failed or its venv could not be set up; 3 the tarball is missing or unreadable;
5 no usable Python. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import glob
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from deploy import wheelhouse

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "runtime" / "requirements.txt"  # --venv-only without --tarball: the source tree's
# The tests that need only the runtime (test_runtime_fuzz.py needs hypothesis: not on a device;
# test_serve_app.py, test_serve_v2.py and test_runtime_multi.py make their bundles with onnx).
TESTS = ["tests/runtime/test_runtime_api.py", "tests/runtime/test_runtime_cli.py", "tests/runtime/test_runtime_wall.py",
         "tests/runtime/test_runtime_env.py", "tests/runtime/test_serve.py", "tests/runtime/test_serve_traffic.py",
         "tests/runtime/test_serve_state.py", "tests/runtime/test_serve_keepalive.py", "tests/runtime/test_trust.py",
         "tests/runtime/test_old_bundles.py"]
PYTEST = "pytest==9.2.0"
MINIMUM = (3, 10)  # runtime/__init__.py refuses older Pythons


class SetupError(Exception):
    """A venv could not be made; the message is one line."""


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


def host_target(minor: tuple[int, int]) -> str:
    """The wheelhouse target of a Python ``minor`` on this machine, e.g. ``x86_64:3.12:2.36``."""
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None
    if not libc or not libc.startswith("glibc "):
        raise SetupError(f"this machine's C library is {libc or 'unknown'}, not glibc: no manylinux wheels")
    glibc = ".".join(libc.split()[1].split(".")[:2])
    return f"{platform.machine()}:{minor[0]}.{minor[1]}:{glibc}"


def requirements_of(tarball: Path | None) -> str:
    """What the venv installs: the bundle's own requirements.txt, or without a tarball the
    source tree's runtime/requirements.txt."""
    return REQUIREMENTS.read_text() if tarball is None else wheelhouse.bundle_requirements(tarball)


def venv_for(python: str, minor: tuple[int, int], cache: Path, requirements: str | None = None) -> Path:
    """A venv of ``python`` with ``requirements`` (default: the source tree's
    runtime/requirements.txt) from the wheelhouse, plus pytest; reused while its stamp matches.
    Callers at the same time (test workers, `make bench` beside `make runtime-check`) take turns
    (an flock beside the venv): one makes it, the others find it made. Raises SetupError (one line)."""
    text = requirements_of(None) if requirements is None else requirements
    cache = Path(cache)
    houses = cache / "wheelhouse"
    venv = cache / f"py{minor[0]}.{minor[1]}"
    stamp = venv / ".installed"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f".py{minor[0]}.{minor[1]}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _venv_for(python, minor, text, houses, venv, stamp)
    except OSError as e:
        raise SetupError(f"{e.filename}: {e.strerror}" if e.filename else str(e)) from None


def _venv_for(python: str, minor: tuple[int, int], text: str, houses: Path, venv: Path, stamp: Path) -> Path:
    try:
        target = host_target(minor)
        house = wheelhouse.build(text, target, houses)  # reused once made: the id is the lock's sha256
        v = version(python)
        if v is None:
            raise SetupError(f"{python}: does not run")
        # The interpreter by its version, not its path: `make bench`'s .venv/bin/python and
        # runtime-check's python3 are the same CPython 3.11.7, and share this venv.
        want = f"wheelhouse {house['id']}\n{PYTEST}\npython {v[2]}\n"
        if stamp.is_file() and stamp.read_text() == want:
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        step(f"making {venv} ({python} -m venv)", [python, "-m", "venv", str(venv)])
        step(f"{PYTEST} from the index (not part of the bundle)",
             [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PYTEST])
        wheelhouse.install(text, target, houses, into=venv / "bin" / "python")
    except wheelhouse.WheelhouseError as e:
        raise SetupError(str(e)) from None
    except OSError as e:
        raise SetupError(f"{e.filename}: {e.strerror}" if e.filename else str(e)) from None
    stamp.write_text(want)
    return venv


def step(what: str, cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise SetupError(f"{what}: exited {r.returncode}: {tail[0].strip()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.devicecheck.runtime_check", description=__doc__.splitlines()[0])
    p.add_argument("--tarball", type=Path,
                   help="the bundle under test, whose requirements.txt the venvs get (required unless --venv-only)")
    p.add_argument("--python", default="python3", help="the first Python to use (default: python3)")
    p.add_argument("--cache", type=Path, default=Path(".cache/runtime-venv"),
                   help="where the venvs and their wheelhouse go (default: %(default)s)")
    p.add_argument("--venv-only", action="store_true",
                   help="just make the venv of --python and print its path (for `make bench`); from --tarball's "
                        "requirements.txt if given, else the source tree's runtime/requirements.txt")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="Pythons checked at the same time (default: one per CPU core)")
    args = p.parse_args(argv)
    tarball = args.tarball.resolve() if args.tarball else None
    if tarball is None and not args.venv_only:
        print("error: runtime-check: --tarball is required (or --venv-only)", file=sys.stderr)
        return 3
    try:
        if tarball is not None and not tarball.is_file():
            raise wheelhouse.WheelhouseError(f"{args.tarball}: not found (run `make bundle` first)")
        requirements = requirements_of(tarball)
    except (wheelhouse.WheelhouseError, tarfile.TarError, OSError) as e:
        print(f"error: runtime-check: {e}", file=sys.stderr)
        return 3

    if args.venv_only:
        v = version(args.python)
        if v is None:
            print(f"error: runtime-check: {args.python}: does not run", file=sys.stderr)
            return 5
        try:
            print(venv_for(v[3], v[:2], args.cache, requirements))
        except SetupError as e:
            print(f"error: runtime-check: Python {v[2]}: {e}", file=sys.stderr)
            return 1
        return 0

    seen: dict[tuple[int, int], tuple[str, str]] = {}  # (major, minor) -> (version, executable)
    too_old: dict[tuple[int, int], tuple[str, str]] = {}
    for python in candidates(args.python):
        v = version(python)
        if v is None or v[:2] in seen or v[:2] in too_old:
            continue
        (seen if v[:2] >= MINIMUM else too_old)[v[:2]] = v[2:]
    if not seen:
        print(f"error: runtime-check: no Python >= {MINIMUM[0]}.{MINIMUM[1]} found (tried {args.python} and pyenv's)",
              file=sys.stderr)
        return 5

    def check(minor: tuple[int, int], full: str, python: str) -> tuple[str, str, str]:
        """(label, verdict, pytest's output) for one Python: its venv, then the tests in it."""
        label = f"{full} ({python})"
        try:
            venv = venv_for(python, minor, args.cache, requirements)
        except SetupError as e:
            return label, f"FAILED to set up: {e}", ""
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                           cwd=ROOT, env={**os.environ, "RUNTIME_TEST_BUNDLE": str(tarball)}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        return label, "passed" if r.returncode == 0 else f"FAILED (pytest exit {r.returncode})", r.stdout

    # The Pythons side by side (--jobs), each one's output printed whole as it finishes.
    jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(seen)))
    print(f"runtime-check: Python {', '.join(full for full, _ in sorted(seen.values()))} "
          f"({jobs} at a time)", flush=True)
    results = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        running = {pool.submit(check, minor, *seen[minor]): minor for minor in sorted(seen)}
        for done in concurrent.futures.as_completed(running):
            label, verdict, output = done.result()
            print(f"runtime-check: Python {label}: {verdict}\n{output}", end="" if output.endswith("\n") else "\n",
                  flush=True)
            results[running[done]] = (label, verdict)
    results = [results[minor] for minor in sorted(results)]

    print("\nruntime-check: the runtime tests in a venv of the bundle's requirements.txt alone "
          "(from the wheelhouse, offline, hash-checked; plus pytest), per Python:")
    for label, verdict in results:
        print(f"  Python {label}: {verdict}")
    for full, python in sorted(too_old.values()):
        print(f"  Python {full} ({python}): below the minimum {MINIMUM[0]}.{MINIMUM[1]}, refused by the runtime (not run)")
    return 0 if all(v == "passed" for _, v in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PIP_NO_INPUT", "1")
    sys.exit(main())
