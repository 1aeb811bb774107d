"""The benchmark's own machinery: its process helper never deadlocks on a child's output, and
its no-op check counts every pipeline stage make really starts. (The measurements themselves
run in `make bench`; nothing here times anything.)"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench import proc
from bench.measure_pipeline import make, stages_run
from conftest import FAILSAFE, ROOT

MIB = 2**20


def in_thread(fn, *args, **kw):
    """``fn(*args, **kw)`` in a thread joined with the failsafe: a hang fails, it does not hang pytest.

    No verdict depends on the bound: the child is done in well under a second anywhere, and only
    a deadlock (the child blocked writing to a full pipe nobody reads) reaches it."""
    box: dict = {}

    def call():
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as e:  # SystemExit too: re-raised below in the test's thread
            box["error"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(FAILSAFE)
    assert not t.is_alive(), f"failsafe: {fn.__name__} still waiting for its child after {FAILSAFE:g} s (deadlock)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# 16 times what a Linux pipe holds (64 KiB): a parent that reads it only after the wait deadlocks.
LOUD = f"import sys; sys.stderr.write('e' * {MIB}); sys.stderr.flush()"


def test_a_child_writing_a_mib_to_stderr_runs_to_its_end():
    done = in_thread(proc.run, child(LOUD))
    assert done.code == 0
    assert len(done.err) == MIB
    assert done.wall_s > 0 and done.peak_rss_mb > 0


def test_a_worker_writing_a_mib_to_stderr_between_its_stdout_lines():
    """The worker's way: a first line timed apart, then stderr noise, then the JSON line, all read."""
    code = ("import json, sys; print('FIRST 0.1 0.2', flush=True); "
            f"sys.stderr.write('w' * {MIB}); sys.stderr.flush(); print('x' * {MIB}); print(json.dumps({{'ok': 1}}))")
    done = in_thread(proc.run, child(code), capture=True, first_line=True)
    assert done.first_line == "FIRST 0.1 0.2\n"
    assert 0 < done.first_line_s <= done.wall_s
    assert done.json() == {"ok": 1}
    assert len(done.out) == MIB + 1 + len('{"ok": 1}\n')
    assert len(done.err) == MIB


def test_a_failing_child_stops_the_bench_with_the_end_of_its_stderr():
    code = LOUD + "; sys.stderr.write('the reason'); sys.exit(7)"
    with pytest.raises(SystemExit) as e:
        in_thread(proc.run, child(code), what="the loud child")
    assert str(e.value).startswith("bench: the loud child failed (7): ")
    assert str(e.value).endswith("the reason")
    assert in_thread(proc.run, child(code), check=False).code == 7


def test_the_spawner_reports_a_loud_childs_own_peak_rss():
    wall, rss_mb = in_thread(proc.peak_rss_run, child(LOUD), ROOT)
    assert wall > 0 and 0 < rss_mb < 200


def test_no_process_in_bench_is_started_outside_proc():
    """The one place: no other bench module starts or waits for a process itself."""
    calls = ("subprocess.", "Popen(", "os.wait4(", "os.waitpid(", "os.system(", "posix_spawn(", ".communicate(")
    offenders = {p.name: c for p in (ROOT / "bench").glob("*.py") if p.name != "proc.py"
                 for c in calls if c in p.read_text()}
    assert offenders == {}


# --- the no-op check: which pipeline stages a make run started ---

# What make echoes for the stage recipes (Makefile: `$(PIPELINE) train --no-plot`, ...), as bench
# runs it (VENV=, BUILD= and DIST= on the command line).
ECHOED = """\
/work/main/.venv/bin/python -m pipeline --config /b/build/config.toml --build /b/build --dist /b/dist train --no-plot
/work/main/.venv/bin/python -m pipeline --config /b/build/config.toml --build /b/build --dist /b/dist export
/work/main/.venv/bin/python -m pipeline --config /b/build/config.toml --build /b/build --dist /b/dist plot --only loss
/work/main/.venv/bin/python -m pipeline --config /b/build/config.toml --build /b/build --dist /b/dist verify
/work/main/.venv/bin/python -m pipeline --config /b/build/config.toml --build /b/build --dist /b/dist bundle
all: done; report /b/build/verify/report.md, bundle /b/dist/bundle.tar.gz (0123456789abcdef...)
"""


def test_the_train_recipe_make_echoes_counts_as_a_stage():
    assert "train" in stages_run(ECHOED)
    assert sorted(stages_run(ECHOED)) == ["bundle", "export", "plot", "train", "verify"]


def test_each_stage_line_alone_counts_once_and_nothing_else_does():
    lines = ECHOED.splitlines(keepends=True)
    for line, stage in zip(lines, ("train", "export", "plot", "verify", "bundle")):
        assert stages_run(line) == [stage], line
        assert stages_run(line.rstrip("\n")) == [stage], "the last line of output has no newline"
    assert stages_run(lines[-1]) == []  # "all: done ... bundle ..." is make's echo, not a stage
    # the config check is the one Python a no-op run may start; pip is not the pipeline
    assert stages_run("cmp -s configs/default.toml build/config.toml 2>/dev/null || .venv/bin/python -m pipeline "
                      "--build build config --config configs/default.toml --out build/config.toml\n") == []
    assert stages_run(".venv/bin/python -m pip install --quiet -r requirements.txt\n") == []
    assert stages_run("make: Nothing to be done for 'all'.\n") == []


def test_a_build_folder_named_like_a_stage_is_not_a_stage():
    line = ".venv/bin/python -m pipeline --config train/config.toml --build train --dist train export\n"
    assert stages_run(line) == ["export"]
    line = ".venv/bin/python -m pipeline --build=verify --dist=bundle bundle\n"
    assert stages_run(line) == ["bundle"]


def test_every_recipe_of_make_all_from_nothing_is_counted(tmp_path):
    """make's own echo, without running it (make -n), exactly as bench builds the command line:
    a run from an empty build/ starts every stage, the plots twice."""
    r = subprocess.run(make("-n", "all", f"BUILD={tmp_path}/build", f"DIST={tmp_path}/dist"),
                       capture_output=True, text=True, timeout=FAILSAFE)
    assert r.returncode == 0, r.stderr
    assert sorted(stages_run(r.stdout)) == ["bundle", "export", "plot", "plot", "train", "verify"], r.stdout


def test_a_stage_make_would_echo_but_bench_does_not_know_still_counts():
    """A command added to the pipeline later is counted, not silently ignored."""
    assert stages_run(".venv/bin/python -m pipeline --build b --dist d calibrate --fast\n") == ["calibrate"]


def test_bench_refuses_a_missing_build(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--build", str(tmp_path / "b"),
                        "--dist", str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True, timeout=FAILSAFE)
    assert r.returncode == 3
    assert r.stderr.startswith(f"error: {Path(tmp_path / 'b' / 'model.onnx')}: not found")
