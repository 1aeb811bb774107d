"""The wall: runtime/ imports the stdlib, numpy and onnxruntime only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.support.core import ROOT, runtime_cli

FORBIDDEN = {"tensorflow", "keras", "tf2onnx", "onnx"}


def test_no_runtime_source_imports_a_heavy_package():
    found = []
    for path in sorted((ROOT / "runtime").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
        text = path.read_text()
        for word in ("tensorflow", "keras", "tf2onnx", "import onnx\n", "from onnx "):
            if word in text:
                found.append(f"{path.name}: names {word.strip()!r}")
    assert found == []


def test_importing_and_running_the_runtime_loads_none_of_them(bundle):
    code = (
        "import sys, runtime, runtime.__main__, runtime.cli, runtime.env, runtime.stream, runtime.bench; "
        "import runtime.compat; "
        "from runtime import Runner; r = Runner.from_bundle('.'); r.predict([1.0, 2.0]); "
        "from runtime import selfcheck; assert all(c['ok'] for c in selfcheck('.')); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# Modules a cold `predict` on an unsigned bundle has no use for: ssh-keygen's subprocess and its
# feeder threads (only to verify a signature), shutil (argparse's terminal width, only for help), shlex
# (only for the missing-package advice), the service and bench. Those a bare onnxruntime script loads
# on this Python anyway (an older numpy's import loads subprocess and threading through platform) are
# no cost of the runtime's.
NOT_FOR_PREDICT = ("subprocess", "threading", "shutil", "shlex", "socket", "http", "runtime.serve",
                   "runtime.serve_http", "runtime.serve_app", "runtime.bench", "runtime.examples")


def test_a_cold_predict_imports_only_what_it_needs(bundle):
    """`python -m runtime predict 100` (its cold start is held to a bare onnxruntime script's by
    `make bench`) loads none of NOT_FOR_PREDICT; a signature check still loads what it needs."""
    def loaded(code: str) -> str:
        code += f"; print(sorted(m for m in {NOT_FOR_PREDICT!r} if m in sys.modules))"
        r = subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": ""}, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()[-1]

    bare = loaded("import sys, numpy, onnxruntime; onnxruntime.InferenceSession('model.onnx').get_inputs()")
    assert loaded("import sys; from runtime.cli import main; assert main(['predict', '100']) == 0") == bare


def test_bundle_runtime_is_the_repo_runtime(bundle):
    for path in (ROOT / "runtime").glob("*.py"):
        assert (bundle / "runtime" / path.name).read_bytes() == path.read_bytes(), path.name
    assert (bundle / "requirements.txt").read_bytes() == (ROOT / "runtime" / "requirements.txt").read_bytes()


def test_help_works_without_a_bundle():
    r = runtime_cli(ROOT, "--help")
    assert r.returncode == 0 and b"predict" in r.stdout and b"selfcheck" in r.stdout


def test_the_device_environment_has_none_of_them_installed():
    """Under `make runtime-check` (RUNTIME_TEST_BUNDLE set) the venv is the bundle's requirements alone."""
    import importlib.util

    if not os.environ.get("RUNTIME_TEST_BUNDLE"):
        import pytest

        pytest.skip("only meaningful in the runtime-check venv")
    assert [m for m in sorted(FORBIDDEN) if importlib.util.find_spec(m)] == []
