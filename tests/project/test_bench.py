"""The benchmark's own machinery: its process helper never deadlocks on a child's output, and
its no-op check counts every pipeline stage make really starts. (The measurements themselves
run in `make bench`; nothing here times anything.)"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench import proc
from bench.measure_pipeline import make, stages_run
from tests.support.core import FAILSAFE, ROOT

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

# What make echoes for the stage recipes (Makefile: `$(PIPELINE) train --no-plot --export`, ...; the
# export recipe echoes its command itself, when it runs it), as bench runs it (VENV=, BUILD= and
# DIST= on the command line).
ECHOED = """\
/work/main/.venv/bin/python -m pipeline --config /b/build/config.toml --build /b/build --dist /b/dist train --no-plot --export
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
    # make -n shows the export recipe whole: a test, then the echo (one quoted word) and the command
    # among shell operators; it counts once, as export
    pipe = "/work/main/.venv/bin/python -m pipeline --config /b/c.toml --build /b --dist /d"
    assert stages_run(f"( for t in /b/model.onnx; do [ \"$t\" -nt /b/model.keras ] || exit 1; done ) || "
                      f"{{ echo '{pipe} export'; {pipe} export; }}\n") == ["export"]
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
    from an empty build/ every stage's recipe is due, the plots twice (export's is the one that
    exports only when train's recipe did not already)."""
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


# --- the digits section and the targets it adds: rendering and verdicts on made-up numbers ---

def st(median: float) -> dict:
    return {"median": median, "min": median * 0.9, "max": median * 1.1, "n": 3}


def fake_digits(make_all: float, plain: float, overhead: float) -> dict:
    return {
        "counts": {"pairs": 1},
        "make_all_s": st(make_all), "plain_s": st(plain), "make_all_vs_plain": st(make_all / plain),
        "plain_parts_s": {"import": st(4.0), "fit": st(8.0), "tflite": st(2.0), "onnx": st(1.0), "total": st(15.0)},
        "predict_overhead": {"runner_us": st(40.0 * overhead), "raw_us": st(40.0), "ratio": st(overhead),
                             "calls_per_block": 500},
        "bare": {"64": 200_000.0, "4096": 150_000.0},
        "stream": {"lines": 50_000, "examples_per_s": st(15_000.0), "bare_batch": 4096, "vs_bare": 0.1},
        "serve": {"clients": 4, "batch": 64, "requests": 400, "errors": 0, "examples_per_s": st(16_000.0),
                  "p50_ms": st(15.0), "p99_ms": st(40.0), "bare_batch": 64, "vs_bare": 0.08},
        "int8": {"fp32_bytes": 288_330, "int8_bytes": 79_534, "bytes_ratio": 79_534 / 288_330,
                 "batch1": {"int8_us": st(55.0), "fp32_us": st(34.0), "ratio": st(1.62)},
                 "batch256": {"int8_us": st(2400.0), "fp32_us": st(1100.0), "ratio": st(2.2)}},
    }


def test_digits_targets_meet_and_miss_their_goals():
    from bench.targets import digits_targets, plain_way_target

    def verdicts(d):
        return [(what, ok(v)) for what, _, v, ok, _ in digits_targets(d)]

    met = verdicts(fake_digits(make_all=15.0, plain=16.0, overhead=1.10))
    assert [ok for _, ok in met] == [True, True]
    missed = verdicts(fake_digits(make_all=36.0, plain=18.0, overhead=1.40))
    assert [ok for _, ok in missed] == [False, False]
    assert "2.00x" in digits_targets(fake_digits(36.0, 18.0, 1.4))[0][4]

    # the default config's make all / plain tutorial script: <= 0.35x (issue 25), and a dash when not measured
    what, goal, v, ok, text = plain_way_target({"make_all_vs_plain_way": st(0.37), "make_all_from_empty_s": st(6.6),
                                                "plain_way_s": st(17.9)})
    assert goal == "<= 0.35x" and not ok(v) and text.startswith("0.37x") and "6.6 vs 17.9 s" in text
    assert plain_way_target({"make_all_vs_plain_way": st(0.33), "make_all_from_empty_s": st(5.9),
                             "plain_way_s": st(17.9)})[3](0.33)
    assert plain_way_target({})[2] is None


def test_the_digits_section_and_an_unmeasured_target_render():
    from bench import report

    d = fake_digits(make_all=36.0, plain=18.0, overhead=1.40)
    text = "\n".join(report.digits_markdown(d))
    assert "## The digits example" in text
    assert "| make all / plain (pair by pair) | 2.00 [1.80, 2.20]x |" in text
    assert "| Runner.predict, batch 1" in text and "| 1.400 [1.260, 1.540]x |" in text
    assert "150,000 examples/s at batch 4,096 | 0.100x |" in text
    assert "200,000 examples/s at batch 64 | 0.080x |" in text
    assert "| file bytes | 79,534 | 288,330 | 0.276x |" in text
    assert "| batch 256 latency, us | 2400.0 [2160.0, 2640.0] | 1100.0 [990.0, 1210.0] | 2.200 [1.980, 2.420]x |" in text
    assert "plain script: total" not in text
    assert [report.met(v) for v in (True, False, None)] == ["yes", "NO", "-"]
    assert "v2 infer" not in text  # a results.json from before the v2 rows: rendered without them
    assert "without the batch dimension" not in text  # nor the one-example row

    d["predict_overhead"].update(one_example_us=st(36.0), one_example_raw_us=st(40.0), one_example_ratio=st(0.9))
    text = "\n".join(report.digits_markdown(d))
    assert ("| Runner.predict, the same example without the batch dimension (8, 8, 1) | 36.0 [32.4, 39.6] us | "
            "40.0 [36.0, 44.0] us (batch 1) | 0.900 [0.810, 0.990]x |") in text

    d["serve_v2"] = {"v2-binary": {**d["serve"], "examples_per_s": st(48_000.0), "vs_bare": 0.24, "vs_predict": 3.0}}
    text = "\n".join(report.digits_markdown(d))
    assert ("| serve, v2 infer of 64 examples with binary data both ways, 400 requests, p50 15.0 ms (3.00x /predict's "
            "examples/s) | 48,000 [43,200, 52,800] examples/s | 200,000 examples/s at batch 64 | 0.240x |") in text


def test_serve_load_reads_predict_lines_and_v2_request_files(tmp_path):
    """The load generator's --body-file: POST /predict bodies one per line, or (.json) any endpoint's
    requests with their headers and bytes, as bench/measure_digits.py writes them for each kind."""
    import numpy as np

    from bench import measure_digits, serve_load

    reqs = {kind: serve_load.read_bodies(str(measure_digits.write_requests(kind, tmp_path / kind)))
            for kind in measure_digits.SERVE_KINDS}
    assert [len(r) for r in reqs.values()] == [4, 4, 4]
    path, headers, body = reqs["predict"][0]
    assert path == "/predict" and np.shape(json.loads(body)["inputs"]) == (64, 8, 8, 1)
    path, headers, body = reqs["v2-json"][1]
    assert path == "/v2/models/digits/infer" and len(json.loads(body)["inputs"][0]["data"]) == 64 * 64
    path, headers, body = reqs["v2-binary"][2]
    n = int(headers["Inference-Header-Content-Length"])
    head = json.loads(body[:n])
    assert head["inputs"][0]["parameters"] == {"binary_data_size": 64 * 64 * 4} == {"binary_data_size": len(body) - n}
    assert head["parameters"] == {"binary_data_output": True}
    x = measure_digits._examples(64 * 4)[128:192]
    assert np.frombuffer(body[n:], "<f4").tobytes() == x.astype("<f4").tobytes()


def test_targets_carry_the_digits_rows_and_the_plain_way_row_in_quick_mode():
    from bench.targets import targets

    r = {"pipeline": {"make_all_from_empty_s": st(9.0), "make_all_noop_s": st(0.01), "noop_stages_run": 0},
         "cli_vs_bare": {"wall_ratio": st(1.05), "rss_ratio": st(1.0)},
         "predict_overhead": {"ratio": st(1.1)}, "stream": {"lines_per_s": st(2e6)},
         "digits": fake_digits(make_all=36.0, plain=18.0, overhead=1.40)}
    rows = targets(r)
    plain = next(t for t in rows if t["target"].startswith("make all (default config) vs the plain tutorial"))
    assert plain == {"target": plain["target"], "goal": "<= 0.35x", "measured": "not measured (--quick)", "met": None}
    digits = [t for t in rows if t["target"].startswith("digits:")]
    assert [(t["goal"], t["met"]) for t in digits] == [("<= 1.0x", False), ("<= 1.15x", False)]
    assert all(isinstance(t["met"], bool) for t in rows if t is not plain)


# --- the device-speed section (issue 28): MobileNetV3Small's config, rendering and verdicts ---

def test_the_mobilenet_config_and_data_are_valid_for_the_pipeline(tmp_path):
    """What bench writes for MobileNetV3Small passes `python -m pipeline config` (no TensorFlow):
    the keys, the data's shape and classes, the builder's file."""
    from bench import mobilenet

    config = mobilenet.write(tmp_path / "mobilenet")
    r = subprocess.run([sys.executable, "-m", "pipeline", "--build", str(tmp_path / "build"), "config",
                        "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=FAILSAFE)
    assert r.returncode == 0, r.stderr
    assert "320 examples of 3072 features (32x32x3)" in r.stdout and "into 4 classes" in r.stdout


def fake_model(ort_vs_litert: float, nodes: tuple[int, int] = (252, 151)) -> dict:
    def engines(b: int) -> dict:
        lite = 100.0 * b
        return {"runner_us": st(lite * ort_vs_litert * 1.05), "onnxruntime_us": st(lite * ort_vs_litert),
                "litert_us": st(lite), "runner_vs_onnxruntime": st(1.05), "runner_vs_litert": st(ort_vs_litert * 1.05),
                "onnxruntime_vs_litert": st(ort_vs_litert)}

    def timed(ratio: float) -> dict:
        return {"variant_us": st(50.0 * ratio), "fp32_us": st(50.0), "ratio": st(ratio)}

    return {"engines": {"1": engines(1), "32": engines(32)},
            "variants": {"onnx-int8-static": {"format": "onnx", "bytes": 1_000, "bytes_vs_fp32": 0.25,
                                              "1": timed(2.0), "32": timed(1.5)}},
            "graph_pass": {"nodes_before": nodes[0], "nodes_after": nodes[1], "rewrites": {}},
            "file_bytes": {"onnx": 4_000, "tflite": 4_100}}


def test_the_device_speed_section_renders_every_model_and_variant():
    from bench import report

    ds = {"blocks": 20, "batches": [1, 32],
          "models": {"digits": fake_model(2.5, (21, 15)), "mobilenet_v3_small": fake_model(1.9)}}
    text = "\n".join(report.device_speed_markdown(ds))
    assert "## Device speed: runner, onnxruntime, LiteRT (1 thread)" in text
    assert ("| mobilenet_v3_small | 252 -> 151 | 32 | 6,384.0 [5,745.6, 7,022.4] | 6,080.0 [5,472.0, 6,688.0] | "
            "3,200.0 [2,880.0, 3,520.0] | 1.050 [0.945, 1.155]x | 1.99 [1.80, 2.19]x | 1.90 [1.71, 2.09]x |") in text
    assert "| digits | 21 -> 15 | 1 |" in text
    assert "| digits | onnx-int8-static | 1,000 | 0.250x | 100.0 | 2.00 [1.80, 2.20]x | 75.0 | 1.50 [1.35, 1.65]x |" in text
    assert "Built here" not in text
    ds["models"]["mobilenet_v3_small"]["make_all_s"] = 191.2
    assert "Built here by `make all` from empty: mobilenet_v3_small 191 s." in "\n".join(report.device_speed_markdown(ds))
    assert "No model measured" in "\n".join(report.device_speed_markdown({**ds, "models": {}}))


def test_the_device_speed_targets_hold_onnxruntime_to_twice_litert_and_show_a_dash_in_quick_mode():
    from bench.targets import device_speed_targets

    def verdicts(ds):
        return [None if ok is None else ok(v) for _, _, v, ok, _ in device_speed_targets(ds)]

    assert verdicts({"models": {"mobilenet_v3_small": fake_model(1.9)}}) == [True, True]
    assert verdicts({"models": {"mobilenet_v3_small": fake_model(2.2)}}) == [False, False]
    quick = device_speed_targets({"models": {"digits": fake_model(2.5)}})
    assert [(goal, v, text) for _, goal, v, _, text in quick] == [("<= 2x", None, "not measured (--quick)")] * 2
    assert "1.90x [1.71, 2.09] (190 vs 100 us)" in device_speed_targets({"models": {"mobilenet_v3_small": fake_model(1.9)}})[0][4]
