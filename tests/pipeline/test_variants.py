"""Reduced-precision variants: built with the real converters, run in their runtimes, held to
their budgets; the bundle's choice of model, and a quantized bundle on a device."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.variants import VARIANTS
from tests.support.builds import Built
from tests.support.core import edited, pipeline, preset_with, ROOT


def config_with(tmp: Path, **edits: str) -> Path:
    """configs/default.toml with whole lines replaced: {"old line": "new line"}."""
    return preset_with(tmp / "config.toml", *edits.items())


def copy_build(built: Built, tmp: Path, config: Path) -> Built:
    """A copy of the session's build (train and export done), to verify and bundle with another config."""
    b = Built(tmp, config)
    shutil.copytree(built.build, b.build)
    return b


def test_every_variant_builds_loads_and_is_measured(built):
    from pipeline import reference

    index = json.loads((built.build / "variants" / "index.json").read_text())
    assert set(index["variants"]) == set(VARIANTS) and all(v["built"] for v in index["variants"].values()), index
    report = json.loads((built.build / "verify" / "report.json").read_text())
    v = report["variants"]
    assert set(v) == set(VARIANTS) | {"onnx-fp32", "tflite-fp32"}
    assert report["probes"]["range"] == [[-273.15], [1000.0]]  # verify.range: where parity is measured
    for name, r in v.items():
        assert r["size_bytes"] > 0 and r["speed"]["p50_batch_1_us"] > 0 and r["speed"]["rows_per_s_large_batch"] > 0
        assert set(r["parity"]["batches"]) == {"batch_1", "batch_65536"}
        assert r["parity"]["range"]["rows"] == report["probes"]["range_rows"] > 0
        assert r["accuracy"]["rows"] == r["accuracy"]["oracle_rows"] == 2000, name  # the oracle's rows
        # Time against the format's float32 model (its own is 1 by definition); never judged.
        rel = r["speed"]["vs_fp32"]
        assert set(rel) == {"batch_1", "batch_32"} and all(x > 0 for x in rel.values()), (name, rel)
        assert name not in ("onnx-fp32", "tflite-fp32") or rel == {"batch_1": 1.0, "batch_32": 1.0}, (name, rel)
    # What the default config must show plainly: fp16 within 0.1 degF over the working range;
    # full integer calibrated on the training inputs clamps everything outside -40..38 degC
    # (about 1730 degF off at 1000), already one value at a time (batch 1: the grid's group).
    assert v["onnx-fp16"]["passed"] and 0 < v["onnx-fp16"]["parity"]["range"]["max_abs_err"] < 0.1
    for name in ("onnx-int8-static", "tflite-int8-full"):
        p = v[name]["parity"]
        assert not v[name]["passed"] and p["range"]["max_abs_err"] > 1000, v[name]
        assert p["range"]["worst_input"] == 1000.0 and p["groups"]["grid"]["max_abs_err"] > 1000
    # Dynamic int8 quantizes each batch with one scale: alone a value is near exact (every
    # group in the working range, batch 1); in the large batch, which holds the +-1e30 probes
    # too, the working range loses all precision: its worst row is a grid row, which at batch 1
    # was near exact, so that error is the large batch's.
    dyn = v["onnx-int8-dynamic"]["parity"]
    assert all(dyn["groups"][g]["max_abs_err"] < 0.01 for g in ("training", "validation", "grid")), dyn["groups"]
    grid = reference.in_group(reference.load(built.build / "reference.npz"), "grid")
    assert dyn["range"]["max_abs_err"] > 100 and grid[dyn["range"]["worst_row"]], dyn["range"]
    md = (built.build / "verify" / "report.md").read_text()
    assert "## Models and reduced-precision variants" in md
    assert "| FAIL: parity 1730 > 1 (at input 1000); MAE 33.61 > 0.5; " in md
    assert "| time vs float32 (batch 1 / 32) |" in md and "Time against float32 (the same format's" in md
    assert report["cpu"]["machine"] and isinstance(report["cpu"]["dot_product"], list)
    for png in ("validation.png", "accuracy-vs-size.png"):
        assert (built.build / "verify" / png).stat().st_size > 1000, png


def markdown_tables(md: str) -> list[list[str]]:
    """The tables of a markdown text, each as its lines (header, delimiter, rows)."""
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_every_report_table_has_as_many_cells_in_each_row_as_in_its_header(built):
    """GitHub's markdown renders a table only when its delimiter row matches the header."""
    md = (built.build / "verify" / "report.md").read_text()
    tables = markdown_tables(md)
    assert len(tables) >= 3  # parity, accuracy, models and variants
    for table in tables:
        cells = [len(re.split(r"(?<!\\)\|", line.strip())) - 2 for line in table]
        assert cells == [cells[0]] * len(table), table[:2]


def test_a_variant_past_its_budget_fails_with_a_reason_naming_it(built, tmp_path):
    cfg = config_with(tmp_path, **{"[variants.onnx-fp16]\nmax_mae = 0.12\nmax_err = 0.3\nparity = 0.25":
                                   "[variants.onnx-fp16]\nmax_mae = 0.12\nmax_err = 0.3\nparity = 0.01"})
    b = copy_build(built, tmp_path / "b", cfg)
    r = b.run("verify")
    assert r.returncode == 0, r.stderr.decode()  # not the bundle's model: listed as failing, verify passes
    assert "variants within budget: 2 of 6 (failing: onnx-fp16, " in r.stdout.decode()
    v = json.loads((b.build / "verify" / "report.json").read_text())["variants"]["onnx-fp16"]
    err = v["parity"]["range"]["max_abs_err"]  # ~0.097 degF: fp16's step at 1000 degC
    parity = f"parity {err:.4g} > 0.01 (at input 1000)"
    assert not v["passed"] and v["reason"] == parity and 0.05 < err < 0.25, v["reason"]

    cfg.write_text(edited(cfg.read_text(), ('model = "onnx-fp32"', 'model = "onnx-fp16"')))
    r = b.run("verify")
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    assert lines[0].startswith(f"error: verify: bundle.model onnx-fp16: {parity}"), lines
    assert lines[0].endswith("; choose another model or change its budget ([variants.onnx-fp16])")
    assert len(lines) == 2 and lines[1].startswith("error: verify failed: 1 check(s)") and b"Traceback" not in r.stderr


def test_auto_picks_only_a_model_within_budget(built, tmp_path):
    # Every ONNX variant held to budgets none can meet: auto falls back to onnx-fp32.
    cfg = preset_with(tmp_path / "auto.toml", ('model = "onnx-fp32"', 'model = "auto"'))
    text, n = re.subn(r"(?m)^parity = .*$", "parity = 1e-9", cfg.read_text())
    assert n == len(VARIANTS), n  # one budget table per variant
    cfg.write_text(text)
    b = copy_build(built, tmp_path / "b", cfg)
    assert b.run("verify").returncode == 0
    chosen = json.loads((b.build / "verify" / "report.json").read_text())["bundle"]
    assert chosen["model"] == "onnx-fp32"
    assert chosen["why"].startswith("auto, prefer speed: among the ONNX models within budget (onnx-fp32)")
    # With the default budgets: fp16 and fp32 qualify; the pick is one of them, by the stated rule.
    preset_with(cfg, ('model = "onnx-fp32"', 'model = "auto"'))
    assert b.run("verify").returncode == 0
    report = json.loads((b.build / "verify" / "report.json").read_text())
    ok = {n: v for n, v in report["variants"].items() if n.startswith("onnx-") and v.get("passed", True)}
    assert set(ok) == {"onnx-fp32", "onnx-fp16"}
    rel = {n: v["speed"]["vs_fp32"]["batch_1"] for n, v in ok.items()}
    fast = {n: r for n, r in rel.items() if r <= 1.0}
    ties = [n for n, r in fast.items() if r <= min(fast.values()) * 1.10]
    assert report["bundle"]["model"] == min(ties, key=lambda n: (ok[n]["size_bytes"], n)), rel
    # prefer = "size": the smaller file of the two, whatever the timing.
    preset_with(cfg, ('model = "onnx-fp32"', 'model = "auto"\nprefer = "size"'))
    assert b.run("verify").returncode == 0
    chosen = json.loads((b.build / "verify" / "report.json").read_text())["bundle"]
    assert chosen["model"] == min(ok, key=lambda n: ok[n]["size_bytes"]), chosen
    assert chosen["why"].startswith("auto, prefer size: ")


def measured(size: int, vs_fp32: float | None, passed: bool = True) -> dict:
    """A model's entry in verify's results, as bundle_model.choose reads it."""
    speed = {"p50_batch_1_us": 10.0 * (vs_fp32 or 1.0)}
    if vs_fp32 is not None:
        speed["vs_fp32"] = {"batch_1": vs_fp32, "batch_32": vs_fp32}
    return {"parity": {"passed": True}, "budget": {}, "passed": passed, "size_bytes": size, "speed": speed,
            "accuracy": {}}


@pytest.mark.parametrize("prefer, int8_vs_fp32, fp16_vs_fp32, want", [
    ("speed", 1.30, 1.02, "onnx-fp32"),        # both slower than float32: never shipped for speed
    ("speed", 0.60, 1.02, "onnx-int8-static"),  # int8 faster: the fastest
    ("speed", 0.95, 0.97, "onnx-int8-static"),  # within 10 % of each other and of fp32: the smallest file
    ("speed", 1.01, 0.50, "onnx-fp16"),
    ("size", 1.30, 1.02, "onnx-int8-static"),   # the smallest, slower or not
])
def test_auto_chooses_by_the_stated_priority_never_slower_than_float32_for_speed(
        tmp_path, prefer, int8_vs_fp32, fp16_vs_fp32, want):
    from pipeline import bundle_model
    from pipeline.layout import Layout

    results = {"onnx-fp32": {**measured(4000, 1.0), "budget": None},
               "onnx-fp16": measured(2000, fp16_vs_fp32), "onnx-int8-static": measured(1000, int8_vs_fp32),
               "onnx-int8-dynamic": measured(900, 0.1, passed=False),  # over budget: never
               "tflite-int8-full": measured(800, 0.1)}  # not ONNX: never
    cfg = {"bundle": {"model": "auto", "prefer": prefer}}
    chosen, problem = bundle_model.choose(cfg, results, Layout(tmp_path))
    assert problem == "" and chosen["model"] == want, chosen["why"]
    if prefer == "speed":
        slower = [n for n, r in (("onnx-fp16", fp16_vs_fp32), ("onnx-int8-static", int8_vs_fp32)) if r > 1]
        assert (f"leaving out those measured slower than onnx-fp32 at batch 1 ({', '.join(slower)})"
                in chosen["why"]) == bool(slower), chosen["why"]


@pytest.fixture(scope="module")
def int8_bundle(built, tmp_path_factory) -> Built:
    """The session's build verified and bundled with bundle.model onnx-int8-static, under a budget
    loose enough for its clamping (shared: the tests only read it)."""
    tmp = tmp_path_factory.mktemp("int8")
    cfg = config_with(tmp, **{
        'model = "onnx-fp32"': 'model = "onnx-int8-static"',
        "[variants.onnx-int8-static]\nmax_mae = 0.5\nmax_err = 1.0\nparity = 1.0":
        "[variants.onnx-int8-static]\nmax_mae = 50\nmax_err = 200\nparity = 2000"})
    b = copy_build(built, tmp / "b", cfg)
    for stage in ("verify", "bundle"):
        r = b.run(stage)
        assert r.returncode == 0, r.stderr.decode()
    return b


def test_a_quantized_bundles_golden_rows_lie_where_its_budget_holds(int8_bundle):
    """A variant is held to its parity budget over the working range only: its golden rows stay
    there (no float extremes, which int8 clamps), so its own selfcheck passes."""
    from runtime import selfcheck

    bundle = int8_bundle.dist / "bundle"
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["model"]["variant"] == "onnx-int8-static" and m["model"]["budget"]["parity"] == 2000
    assert m["golden"]["atol"] == 2000 and m["golden"]["rtol"] == 0
    x = np.float32(json.loads((bundle / "golden.json").read_text())["inputs"]).reshape(-1)
    assert len(x) == 64 and x.min() >= np.float32(-273.15) and x.max() <= 1000.0, x
    checks = selfcheck(bundle)
    assert all(c["ok"] for c in checks), checks


@pytest.mark.slow  # the runtime-only venv (make runtime-check's) may have to be made first
def test_a_quantized_bundle_passes_selfcheck_in_a_runtime_only_venv(int8_bundle):
    """int8 (QDQ) with a budget loose enough for its clamping: bundled, it passes the device's
    selfcheck in a runtime-only process and answers as x86's Runner does. (aarch64's int8
    kernels, another code path than x86's, are proven under QEMU on the digits CNN's int8
    bundle, whose QDQ MatMuls are this model's and whose Convs are not: tests/deploy/test_picheck.py.)"""
    b = int8_bundle
    bundle = b.dist / "bundle"
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["model"]["variant"] == "onnx-int8-static" and m["model"]["budget"]["parity"] == 2000
    assert m["golden"]["atol"] == 2000 and m["golden"]["rtol"] == 0
    variant = (b.build / "variants" / "onnx-int8-static.onnx").read_bytes()
    assert (bundle / "model.onnx").read_bytes() == variant
    from deploy.devicecheck.runtime_check import venv_for

    # The device's situation: a venv made from the bundle's requirements.txt alone (make
    # runtime-check's, for this Python).
    python = str(venv_for(sys._base_executable, sys.version_info[:2], ROOT / ".cache" / "runtime-venv") / "bin" / "python")
    r = subprocess.run([python, "-m", "runtime", "selfcheck"], cwd=bundle, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    assert r.returncode == 0 and "selfcheck: passed" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([python, "-m", "runtime", "predict", "100", "1000"], cwd=bundle, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    # Clamped (100 and 1000 degC give the same answer), as verified; and the answers are x86's.
    from runtime import Runner

    with Runner.from_bundle(bundle) as here:
        want = here.predict(np.float32([100.0, 1000.0]))
    got = [float(v) for v in r.stdout.split()]
    assert r.returncode == 0 and len(got) == 2 and got[0] == got[1], r.stdout
    assert np.float32(got).tolist() == want.tolist(), (got, want)


def test_a_variant_the_converter_refuses_is_not_built_with_its_reason(built):
    import numpy as np
    import onnx

    from export.variants import VariantNotBuilt, build_onnx

    model = onnx.load(built.build / "model.onnx")
    with pytest.raises(VariantNotBuilt, match=r"^\w+(Error|Exception)?: ") as e:
        build_onnx("onnx-int8-static", model, np.float32([]), model.graph.input[0].name)  # nothing to calibrate on
    assert "\n" not in str(e.value)


def test_config_refuses_a_bundle_model_that_is_not_built(tmp_path):
    cfg = config_with(tmp_path, **{'model = "onnx-fp32"': 'model = "onnx-int8-dynamic"',
                                   "[variants.onnx-int8-dynamic]\n": "[variants.onnx-int8-dynamic-off]\n"})
    r = pipeline("config", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.decode().startswith(f"error: config error: {cfg}: variants.onnx-int8-dynamic-off: unknown key")
    cfg = config_with(tmp_path, **{'model = "onnx-fp32"': 'model = "tflite-fp16"'})
    r = pipeline("config", "--config", str(cfg))
    assert r.returncode == 2 and "bundle.model: expected one of 'onnx-fp32', 'auto', 'onnx-fp16'" in r.stderr.decode()


def linear_onnx(w: float = 1.8, b: float = 32.0, batch: str | int = "batch"):
    """A one-Dense-layer float32 model (celsius [batch, 1] -> fahrenheit), made by hand: no export
    needed. ``batch``: the first dimension, symbolic (a name) or fixed (a number)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["celsius", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["fahrenheit"])],
        "linear",
        [helper.make_tensor_value_info("celsius", TensorProto.FLOAT, [batch, 1])],
        [helper.make_tensor_value_info("fahrenheit", TensorProto.FLOAT, [batch, 1])],
        [numpy_helper.from_array(np.float32([[w]]), "w"), numpy_helper.from_array(np.float32([b]), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_static_int8_calibrates_in_batches_where_the_model_takes_them_with_the_same_result(monkeypatch):
    """MinMax calibration keeps each tensor's extremes over every run: 130 examples in runs of 64
    give the model that runs of one give. A model of a fixed batch of 1 is calibrated an example
    at a time (in runs of 64 onnxruntime would refuse its input's shape)."""
    import numpy as np

    from export import variants

    rows = np.linspace(-40.0, 100.0, 130, dtype=np.float32)
    built = {}
    for step in (1, 64):
        monkeypatch.setattr(variants, "CALIBRATION_BATCH", step)
        built[step] = variants.build_onnx("onnx-int8-static", linear_onnx(), rows, "celsius").SerializeToString()
    assert built[1] == built[64]
    fixed = linear_onnx(batch=1)
    assert variants.batch_is_free(linear_onnx().graph) and not variants.batch_is_free(fixed.graph)
    import onnx

    def weights(model: bytes) -> dict:  # the scales, zero points and quantized weights
        return {t.name: t.SerializeToString() for t in onnx.load_model_from_string(model).graph.initializer}

    assert weights(variants.build_onnx("onnx-int8-static", fixed, rows, "celsius").SerializeToString()) == weights(built[1])


def test_building_a_variant_leaves_the_root_logger_as_it_was(caplog):
    """The ORT quantizers warn through the root logger ("consider pre-processing"): the
    builder keeps those lines out without changing the caller's logging (level or handlers)."""
    import logging

    import numpy as np

    from export.variants import build_onnx

    root = logging.getLogger()
    caplog.set_level(logging.INFO)  # the caller's choice, which a variant build must not change
    before = root.level, list(root.handlers), list(root.filters)
    for name in ("onnx-fp16", "onnx-int8-dynamic", "onnx-int8-static"):
        build_onnx(name, linear_onnx(), np.float32([-40.0, 0.0, 38.0]), "celsius")
        assert (root.level, root.handlers, root.filters) == before, name
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    logging.getLogger().warning("the caller's own warning")
    assert [r.getMessage() for r in caplog.records] == ["the caller's own warning"]
