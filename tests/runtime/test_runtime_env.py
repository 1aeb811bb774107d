"""A Python that cannot run the runner gets one `error:` line and exit 5, never a traceback.

Real interpreters, nothing mocked: `python -S` (no site-packages, so neither numpy nor
onnxruntime imports), `-S` with only numpy on PYTHONPATH, bare venvs, and every Python
older than 3.10 that is on this machine (skipped when absent). The line names what is
missing, this Python, and the exact command that fixes it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from tests.support.core import one_error_line

PY = sys.executable
VERSION = sys.version.split()[0]
OLD = ["2.7", "3.6", "3.7", "3.8", "3.9"]
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


def run(python: str, *args: str, cwd, pythonpath: str = "", stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([python, *args], cwd=cwd, input=stdin, capture_output=True, env=env, timeout=120)


def find_python(version: str) -> str:
    """An interpreter of this version (pyenv's, else one on PATH), or skip the test."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = [str(p) for p in sorted(root.glob(f"versions/{version}.*/bin/python{version}"))]
    on_path = shutil.which(f"python{version}")
    if on_path and "/shims/" not in on_path:  # a pyenv shim may stand for an uninstalled version
        found.append(on_path)
    if not found:
        pytest.skip(f"no Python {version} on this machine")
    return found[0]


def make_venv(path: Path) -> Path:
    """A real venv with nothing installed in it; returns its python."""
    subprocess.run([PY, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


@pytest.fixture
def numpy_only(tmp_path) -> Path:
    """A folder for PYTHONPATH holding numpy (a link to this venv's) and no onnxruntime."""
    d = tmp_path / "numpy-only"
    d.mkdir()
    (d / "numpy").symlink_to(Path(numpy.__file__).parent)
    return d


def new_venv_fix(bundle: Path) -> str:
    b = bundle.resolve()
    return f"run: {PY} -m venv {b}/.venv && {b}/.venv/bin/pip install -r {b}/requirements.txt"


@pytest.mark.parametrize("command", [["selfcheck"], ["predict", "100"], ["stream"], ["bench"], ["info"]])
@pytest.mark.parametrize("has_numpy", [False, True], ids=["no-packages", "numpy-only"])
def test_a_missing_package_is_one_line_naming_it_this_python_and_the_fix(bundle, numpy_only, command, has_numpy):
    missing = "onnxruntime" if has_numpy else "numpy"
    r = run(PY, "-S", "-m", "runtime", *command, cwd=bundle, stdin=b"1\n",
            pythonpath=str(numpy_only) if has_numpy else "")
    assert r.returncode == 5, r.stderr
    prefix = "selfcheck python: " if command == ["selfcheck"] else ""
    assert one_error_line(r) == (f"error: {prefix}{missing} is not installed for {PY} (Python {VERSION}); "
                                 f"{new_venv_fix(bundle)}")


def test_selfcheck_reports_the_missing_package_as_its_first_check(bundle, numpy_only):
    r = run(PY, "-S", "-m", "runtime", "selfcheck", cwd=bundle, pythonpath=str(numpy_only))
    out = r.stdout.decode().splitlines()
    assert r.returncode == 5 and len(out) == 2, out
    assert out[0].split(None, 2)[:2] == ["FAIL", "python"] and "onnxruntime is not installed" in out[0]
    assert out[1] == "selfcheck: FAILED"
    r = run(PY, "-S", "-m", "runtime", "selfcheck", "--json", cwd=bundle, pythonpath=str(numpy_only))
    doc = json.loads(r.stdout)
    assert doc["passed"] is False and [c["name"] for c in doc["checks"]] == ["python"]


def test_info_without_onnxruntime_still_prints_what_it_can(bundle, numpy_only):
    r = run(PY, "-S", "-m", "runtime", "info", cwd=bundle, pythonpath=str(numpy_only))
    assert r.returncode == 5
    doc = json.loads(r.stdout)
    model = json.loads((bundle / "manifest.json").read_text())["model"]
    assert doc["bundle"] == str(bundle.resolve())
    assert doc["python"] == {"version": VERSION, "executable": PY}
    assert doc["numpy"] == numpy.__version__ and doc["onnxruntime"] is None
    assert doc["model_needs"] == {k: model[k] for k in ("opset", "ir_version", "min_onnxruntime")}
    assert doc["loaded"] is False and doc["model_inputs"] is None
    assert one_error_line(r) == "error: " + doc["problem"]
    assert doc["problem"].startswith(f"onnxruntime is not installed for {PY}")


def test_help_and_the_package_import_need_no_numpy(bundle):
    for args in (["--help"], ["predict", "--help"]):
        r = run(PY, "-S", "-m", "runtime", *args, cwd=bundle)
        assert r.returncode == 0 and b"usage:" in r.stdout and r.stderr == b""
    code = ("import sys, runtime; from runtime import BundleError, SetupError; "
            "print(SetupError.exit_code, 'numpy' in sys.modules)")
    r = run(PY, "-S", "-c", code, cwd=bundle)
    assert r.returncode == 0 and r.stdout.split() == [b"5", b"False"], r.stderr


def test_the_library_raises_setup_error_and_selfcheck_fails_its_first_check(bundle, numpy_only):
    code = ("from runtime import Runner, SetupError, selfcheck\n"
            "try:\n    Runner.from_bundle('.')\nexcept SetupError as e:\n    print(e.message)\n"
            "print([(c['name'], c['ok']) for c in selfcheck('.')])\n")
    r = run(PY, "-S", "-c", code, cwd=bundle, pythonpath=str(numpy_only))
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().splitlines()
    assert out[0] == f"onnxruntime is not installed for {PY} (Python {VERSION}); {new_venv_fix(bundle)}"
    assert out[1] == "[('python', False)]"


def test_in_a_venv_without_the_packages_the_fix_installs_into_it(bundle, tmp_path):
    python = make_venv(tmp_path / "venv")
    r = run(str(python), "-m", "runtime", "predict", "1", cwd=bundle)
    assert r.returncode == 5
    assert one_error_line(r) == (f"error: numpy is not installed for {python} (Python {VERSION}); "
                                 f"run: {python} -m pip install -r {bundle.resolve()}/requirements.txt")


def test_with_a_bundle_venv_the_fix_is_the_same_command_in_it(bundle):
    b = bundle.resolve()
    venv_python = make_venv(b / ".venv")
    r = run(PY, "-S", "-m", "runtime", "predict", "-40", "--threads", "2", cwd=bundle)
    assert r.returncode == 5
    line = one_error_line(r)
    assert line == (f"error: numpy is not installed for {PY} (Python {VERSION}); "
                    f"run it in that venv: {venv_python} {b}/runtime predict -40 --threads 2")
    # That command as given, from anywhere: the (empty) venv now says how to fill it.
    r = run(*shlex.split(line.split("run it in that venv: ")[1]), cwd="/")
    assert r.returncode == 5
    assert one_error_line(r).endswith(f"; run: {venv_python} -m pip install -r {b}/requirements.txt")


@pytest.mark.parametrize("version", OLD)
def test_a_python_older_than_3_10_gets_one_line_and_exit_5(bundle, version):
    python = find_python(version)
    want = f"error: the runner needs Python >= 3.10; {python} is Python {version}."
    for args, cwd in ((["-m", "runtime", "predict", "1"], bundle), ([str(bundle / "runtime"), "predict", "1"], "/")):
        r = run(python, *args, cwd=cwd)
        assert r.returncode == 5 and r.stdout == b"", (args, r.stderr)
        assert one_error_line(r).startswith(want), args
    r = run(python, "-c", "import runtime", cwd=bundle)  # a library import: an ImportError saying why
    assert r.returncode == 1
    assert r.stderr.decode().splitlines()[-1].startswith("ImportError: the runner needs Python >= 3.10; ")


@pytest.mark.parametrize("version", SUPPORTED)
def test_supported_pythons_parse_every_runtime_file_and_run_it_up_to_the_packages(bundle, version):
    python = find_python(version)
    code = ("import pathlib, sys\n"
            "for p in pathlib.Path(sys.argv[1]).glob('*.py'):\n    compile(p.read_text(), str(p), 'exec')\n")
    r = run(python, "-c", code, str(bundle / "runtime"), cwd=bundle)
    assert r.returncode == 0, r.stderr
    r = run(python, "-S", "-m", "runtime", "predict", "1", cwd=bundle)  # -S: no numpy, whatever is installed
    assert r.returncode == 5 and f"numpy is not installed for {python} (Python {version}." in one_error_line(r)
