"""Export's TFLite worker (pipeline/tflite_worker.py): the second core converts the TFLite
variants while the first exports the rest; the bytes are the same as built in one process, and
a worker that dies costs nothing but time. (The suite turns the worker off, PIPELINE_TFLITE_WORKER=0
in tests/conftest.py; these tests turn it on.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline import config, tflite_worker
from tests.support.builds import Built
from tests.support.core import PRESETS, ROOT


def variant_shas(build) -> dict[str, str]:
    index = json.loads((build / "variants" / "index.json").read_text())["variants"]
    return {name: v["sha256"] for name, v in index.items()}


def with_worker() -> dict[str, str]:
    """The environment without the suite's PIPELINE_TFLITE_WORKER=0: export starts its worker."""
    return {k: v for k, v in os.environ.items() if k != "PIPELINE_TFLITE_WORKER"}


@pytest.mark.slow  # exports twice: make test, not test-fast
def test_the_worker_builds_the_same_bytes_as_one_process(built, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core here: export never starts the worker")
    two = Built(tmp_path / "two", built.config)
    shutil.copytree(built.build, two.build)
    for d in (two.build / "variants",):
        shutil.rmtree(d)
    r = subprocess.run([sys.executable, "-m", "pipeline", *two.args("export")], cwd=ROOT, capture_output=True,
                       timeout=600, env=with_worker())
    assert r.returncode == 0, r.stderr.decode()
    shas = variant_shas(two.build)
    assert sorted(shas) == sorted(n for n in config.load(PRESETS / "default.toml")["variants"] if "-" in n)
    # The worker converted them, not export after the worker failed: the same bytes either way.
    tflite = [n for n in shas if n.startswith("tflite-")]
    line = next(ln for ln in r.stdout.decode().splitlines() if ln.startswith("export: "))
    assert f" variants in {two.build / 'variants'}/ ({len(tflite)} from the TFLite worker), " in line, line
    assert shas == variant_shas(built.build)  # the session's build: one process (PIPELINE_TFLITE_WORKER=0)
    assert [p.name for p in two.build.iterdir() if p.name.startswith(".")] in ([], [".lock"])


# In a process of its own: the worker only starts before its parent imports TensorFlow, and a
# pytest worker may have imported it for another test.
DIES = """
import os
import sys
from pathlib import Path

import numpy as np

from pipeline import config, tflite_worker

os.environ["PIPELINE_TFLITE_WORKER"] = "0"
assert tflite_worker.start(config.load(Path(sys.argv[1]))) is None, "a worker started, turned off"
del os.environ["PIPELINE_TFLITE_WORKER"]
w = tflite_worker.start(config.load(Path(sys.argv[1])))
assert w is not None, "no worker started"
w.proc.kill()
w.proc.wait()
w.submit(Path(sys.argv[2]) / "savedmodel", np.zeros((2, 1), np.float32), ["tflite-fp16"], Path(sys.argv[2]) / "out")
assert w.result() is None, "a dead worker gave a result"  # export then builds the variants itself
w.close()
assert w.proc.poll() is not None
assert "tensorflow" not in sys.modules
print("ok")
"""


def test_a_worker_turned_off_is_not_started_and_one_that_dies_gives_no_result_and_is_not_waited_for(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the worker only starts on two cores")
    r = subprocess.run([sys.executable, "-c", DIES, str(PRESETS / "default.toml"), str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=with_worker())
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr[-3000:]


def test_no_worker_without_tflite_variants_or_a_second_core(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINE_TFLITE_WORKER", raising=False)
    cfg = config.load(PRESETS / "default.toml")
    cfg["variants"] = {k: v for k, v in cfg["variants"].items() if not k.startswith("tflite-")}
    assert tflite_worker.start(cfg) is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert tflite_worker.start(config.load(PRESETS / "default.toml")) is None
