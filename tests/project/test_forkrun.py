"""tests/support/forkrun.py: a forked `python -m`/`python -c` is what a new interpreter would be,
for everything the tests look at: output, exit status, argv, path, directory, environment,
stdin, an uncaught exception, a signal, atexit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support import forkrun
from tests.support.core import ROOT, wait_until

SHOW = """
import atexit, json, os, sys
atexit.register(lambda: print("atexit ran"))
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "env": os.environ.get("FORK_TEST"),
                  "stdin": sys.stdin.read(), "main": sorted(k for k in vars(sys.modules["__main__"]) if not k.startswith("__")),
                  "bytecode": sys.dont_write_bytecode}))
sys.stderr.write("to stderr\\n")
sys.exit(int(sys.argv[1]))
"""


def both(*args, cwd, env=None, input=None):
    """(a new interpreter's result, the forked one's), each as (returncode, stdout, stderr)."""
    env = {**os.environ, **(env or {})}
    fresh = subprocess.run([sys.executable, *args], cwd=cwd, env=env, input=input, capture_output=True, timeout=120)
    forked = forkrun.python(*args, cwd=cwd, env=env, input=input)
    assert forkrun.eligible(env)
    return [(r.returncode, r.stdout, r.stderr) for r in (fresh, forked)]


@pytest.mark.parametrize("code", ["0", "3"])
def test_c_code_sees_what_a_new_interpreter_sees(tmp_path, code):
    fresh, forked = both("-c", SHOW, code, "two words", cwd=tmp_path, env={"FORK_TEST": "é"}, input=b"in\n")
    assert forked == fresh
    assert forked[0] == int(code) and b'"stdin": "in\\n"' in forked[1] and forked[1].endswith(b"atexit ran\n")


def test_a_module_sees_what_a_new_interpreter_sees(tmp_path):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "__init__.py").write_text("")
    (tmp_path / "mod" / "__main__.py").write_text(SHOW.replace("sys.argv[1]", "sys.argv[2]"))
    fresh, forked = both("-m", "mod", "x", "0", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert forked == fresh
    assert str(tmp_path / "mod" / "__main__.py").encode() in forked[1]


def test_an_uncaught_exception_an_exit_message_a_ctrl_c_and_a_broken_stdout_end_as_in_a_new_interpreter(tmp_path):
    fresh, forked = both("-c", "import sys\nprint('partial')\nraise KeyError('x')", cwd=tmp_path)
    assert forked == fresh and forked[0] == 1 and forked[2].startswith(b"Traceback") and b"KeyError: 'x'" in forked[2]
    # stdout buffered whatever PYTHONUNBUFFERED says, then its descriptor closed: the flush at exit fails
    closed = "import io, os, sys\nsys.stdout = open(os.dup(1), 'w')\nprint('held in the buffer')\nos.close(sys.stdout.fileno())"
    fresh, forked = both("-c", closed, cwd=tmp_path)
    assert forked == fresh and forked[0] == 120 and b"Exception ignored" in forked[2]
    fresh, forked = both("-c", "import sys\nsys.exit('a message')", cwd=tmp_path)
    assert forked == fresh == (1, b"", b"a message\n")
    fresh, forked = both("-c", "raise KeyboardInterrupt", cwd=tmp_path)
    assert forked == fresh and forked[0] == -signal.SIGINT


def test_a_signal_reaches_the_command_and_its_status_says_so(tmp_path):
    p = forkrun.Forked(["-c", "import sys, time\nprint('up', flush=True)\ntime.sleep(600)"], tmp_path, dict(os.environ),
                       stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"up\n"
    assert p.poll() is None
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=120) == -signal.SIGKILL
    wait_until("the command's pid gone", lambda: not os.path.exists(f"/proc/{p.pid}"))


def test_what_python_reads_at_start_up_gets_a_new_interpreter():
    assert not forkrun.eligible({**os.environ, "PYTHONWARNINGS": "error"})
    assert not forkrun.eligible({k: v for k, v in os.environ.items() if k not in ("LANG", "LC_ALL")} | {"LANG": "xx"})
    assert forkrun.eligible({**os.environ, "PYTHONPATH": "/elsewhere", "ANYTHING": "1"})


WORKER = """
import json, os
from tests.support import forkrun
r = forkrun.python("-c", "import os; print(os.getppid())", cwd=".")
print(json.dumps({"path": forkrun._start("plain"), "server": int(r.stdout), "me": os.getpid()}))
"""

CONTROLLER = """
import json, subprocess, sys
from tests.support import forkrun
forkrun.share()
workers = [subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True, check=True)
           for _ in range(2)]
print(json.dumps([json.loads(w.stdout) for w in workers]))
try:
    forkrun._ask(forkrun.os.environ[forkrun.SHARED].partition(":")[2], "other")
except RuntimeError as e:
    print(e)
"""


def test_the_processes_a_sharing_process_starts_fork_from_its_servers(tmp_path):
    """What pytest-xdist's controller does for its workers (tests/conftest.py): two processes it
    starts after ``share`` get its one plain server, not each their own; an unknown kind is an
    error naming it."""
    env = {k: v for k, v in os.environ.items() if k != forkrun.SHARED} | {"PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", CONTROLLER, WORKER], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = json.loads(r.stdout.splitlines()[0])
    assert first["path"] == second["path"] and first["server"] == second["server"]
    assert first["me"] != second["me"] and first["server"] not in (first["me"], second["me"])
    assert r.stdout.splitlines()[1] == ("the tests' shared fork server did not start: "
                                        "ValueError: no server of kind 'other'")


@pytest.mark.slow  # starts the server that imports TensorFlow: make test, not test-fast
def test_a_pipeline_stage_that_imports_tensorflow_forks_from_the_server_that_has_it_unless_its_settings_differ():
    """Train, export and all fork from the server with TensorFlow imported; the other stages and
    `-c` code from the plain one; a command that sets what TensorFlow's import reads otherwise
    than the server had it starts without it. (That a stage forked from it builds the bundle a
    new interpreter builds, byte for byte: test_pipeline_cli's stage run by hand against make.)"""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for stage in ("train", "export", "all"):
        assert forkrun._kind(["-m", "pipeline", "--config", "c.toml", stage], env) == "tensorflow"
    assert forkrun._servers["tensorflow"]["preloaded"] == {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
                                                           "MPLBACKEND": "Agg"}
    assert forkrun._kind(["-m", "pipeline", "train"], {**env, "TF_CPP_MIN_LOG_LEVEL": "3"}) == "tensorflow"
    for args, e in ((["-m", "pipeline", "verify"], env), (["-m", "pipeline", "bundle"], env), (["-m", "runtime", "all"], env),
                    (["-m", "pipeline", "train", "--help"], env),
                    (["-c", "import pipeline", "train"], env), (["-m", "pipeline", "train"], {**env, "TF_CPP_MIN_LOG_LEVEL": "0"}),
                    (["-m", "pipeline", "all"], {**env, "TF_ENABLE_ONEDNN_OPTS": "0"}),
                    (["-m", "pipeline", "all"], {**env, "PYTHONHASHSEED": "7"})):
        assert forkrun._kind(args, e) == "plain", (args, e.get("TF_CPP_MIN_LOG_LEVEL"))


@pytest.mark.slow  # starts the server that imports TensorFlow: make test, not test-fast
def test_makes_py_forks_a_stage_that_imports_tensorflow_and_passes_on_its_end_and_signals(tmp_path, tiny):
    """tests/support/makepy.py, make's PY in the tests' `make all`: `python -m pipeline all` (a
    stage that imports TensorFlow) is forked (the writer's pid, in its temporary's name, is not
    makepy's), its SIGKILL of itself ends makepy by SIGKILL as make would see it, and a SIGTERM sent
    to makepy reaches it; another of the pipeline's commands is forked too (from the server without
    TensorFlow), with its output and exit status; anything else becomes the interpreter itself
    (the same pid)."""
    [py] = forkrun.make_vars(dict(os.environ))
    cmd = py.removeprefix("PY=").split()

    def stage(tag: str, hook: dict) -> subprocess.Popen:
        args = ["-m", "pipeline", "all", "--config", str(tiny.config), "--build", str(tmp_path / tag / "build"),
                "--dist", str(tmp_path / tag / "dist")]
        return subprocess.Popen([*cmd, *args], cwd=ROOT, env={**os.environ, **hook}, stderr=subprocess.PIPE)

    def writer(tag: str) -> int:
        [tmp] = (tmp_path / tag / "build").glob(".config.toml.pid*")
        return int(tmp.name.split(".pid")[1].split(".")[0])

    p = stage("killed", {"PIPELINE_KILL_AT": "config.toml:written"})
    assert p.wait(timeout=300) == -signal.SIGKILL, p.stderr.read()
    assert writer("killed") != p.pid

    p = stage("stopped", {"PIPELINE_STOP_AT": "config.toml:written"})
    wait_until("the stage stopped at its write", lambda: list((tmp_path / "stopped" / "build").glob(".config.toml.pid*"))
               and open(f"/proc/{writer('stopped')}/stat").read().rsplit(")", 1)[1].split()[0] == "T")
    child = writer("stopped")
    assert child != p.pid
    p.send_signal(signal.SIGTERM)  # to makepy, which passes it on: pending in the stopped stage until it goes on
    os.kill(child, signal.SIGCONT)
    assert p.wait(timeout=300) == -signal.SIGTERM, p.stderr.read()
    wait_until("the stage gone", lambda: not os.path.exists(f"/proc/{child}"))

    fresh = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--config", str(tmp_path / "none.toml")],
                           cwd=ROOT, capture_output=True, timeout=120)
    forked = subprocess.run([*cmd, "-m", "pipeline", "verify", "--config", str(tmp_path / "none.toml")],
                            cwd=ROOT, capture_output=True, timeout=120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr) != (0, b"", b"")

    p = subprocess.Popen([*cmd, "-c", "import os, sys; print(os.getpid(), sys.flags.no_site); sys.exit(3)"],
                         stdout=subprocess.PIPE, text=True)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 3 and out.split() == [str(p.pid), "0"], out  # the interpreter itself, with its site
