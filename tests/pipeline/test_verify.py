"""Verify: comparisons that can fail, a perturbed model that must fail, and the report's shape."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.numerics import at_scale, compare, ulp_distance
from tests.support.builds import Built
from tests.support.core import preset_with


def test_compare_passes_equal_and_fails_beyond_tolerance():
    ref = np.array([32.0, 50.0, 1.8e30], np.float32)
    assert compare(ref, ref.copy(), 1e-5, 1e-6)
    off = ref + np.float32([0, 1e-3, 0])
    p = compare(ref, off, 1e-5, 1e-6)
    assert not p and p.failures == 1 and p.worst_index == 1
    assert p.max_abs_err == pytest.approx(1e-3, rel=1e-3)
    assert p.min_atol_to_pass == pytest.approx(1e-3 - 50e-6, rel=1e-2)


def test_compare_scales_with_rtol_for_huge_values():
    ref = np.array([1.8e30], np.float32)
    one_ulp = np.nextafter(ref, np.float32(np.inf))
    assert compare(ref, one_ulp, 1e-5, 1e-6)  # 1 ulp ~ 6e-8 relative
    assert not compare(ref, ref * np.float32(1.00001), 1e-5, 1e-6)


def test_compare_never_passes_nan_and_matches_equal_infinities():
    ref = np.array([np.inf, 3.0], np.float32)
    assert compare(ref, ref.copy(), 1e-5, 1e-6)
    p = compare(ref, np.array([np.inf, np.nan], np.float32), 1e-5, 1e-6)
    assert not p and p.worst_index == 1 and p.max_abs_err == np.inf


def test_ulp_distance_counts_float32_steps_at_any_magnitude():
    a = np.array([1.0, 1e30, 0.0, -0.0, -1.0, np.float32(1e-45)], np.float32)
    up = np.nextafter(a, np.float32(np.inf))
    np.testing.assert_array_equal(ulp_distance(a, up), [1, 1, 1, 1, 1, 1])
    assert ulp_distance(np.float32([0.0]), np.float32([-0.0]))[0] == 0
    # across zero: from the smallest negative subnormal to the smallest positive one is 2 steps
    assert ulp_distance(np.float32([-1e-45]), np.float32([1e-45]))[0] == 2
    assert ulp_distance(np.float32([32.0]), np.float32([32.0]) + np.float32(1e-3))[0] == 262


def test_error_at_the_outputs_scale_means_something_near_zero():
    """A softmax whose near-zero probabilities are 1.2e-7 off: millions of ulps elementwise,
    about one ulp at the output's scale (its largest value, ~1), and an SNR that says so."""
    ref = np.array([[0.98, 1e-9, 0.02], [0.01, 0.99, 1e-12]], np.float32)
    got = ref + np.float32([[0, 1.2e-7, 0], [0, 0, 1.2e-7]])
    assert ulp_distance(got, ref).max() > 10_000_000
    s = at_scale(ref, got)
    assert 1 <= s["scale_ulp"] <= 2.1
    assert 100 < s["snr_db"] < 160
    assert at_scale(ref, ref.copy()) == {"scale_ulp": 0.0, "snr_db": None}  # exact: no noise at all
    # a regression's targets each have their own scale: 1e-3 on outputs of ~50 is ~262 ulps there
    two = at_scale(np.float32([[50.0, 1e-3], [10.0, 2e-3]]), np.float32([[50.001, 1e-3], [10.0, 2e-3]]), per_column=True)
    assert two["scale_ulp"] == pytest.approx(1e-3 / np.spacing(np.float32(50.0)), rel=1e-2)
    worse = at_scale(np.float32([[50.0, 1e-3], [10.0, 2e-3]]), np.float32([[50.0, 1.1e-3], [10.0, 2e-3]]),
                     per_column=True)
    assert worse["scale_ulp"] > 1e5 and worse["snr_db"] < 30  # the small target's error at its own scale
    # an error of 1e-3 on outputs of ~50 is 8 thousand ulps at that scale and ~94 dB
    big = at_scale(np.float32([[50.0], [10.0]]), np.float32([[50.001], [10.0]]))
    assert big["scale_ulp"] == pytest.approx(1e-3 / np.spacing(np.float32(50.0)), rel=1e-2)
    assert big["snr_db"] == pytest.approx(10 * np.log10((50**2 + 10**2) / 1e-6), abs=0.1)


def test_relative_speed_is_the_median_of_each_blocks_ratio_to_the_base(monkeypatch):
    """On a clock only the calls move: the base costs 2 units a call; the other 3 for the first
    four blocks, then 1 (ratios 1.5 and 0.5 by block: the median 1.5, where a mean would say
    about 1.07); each block stops once SPEED_BLOCK_S has passed, so the whole is bounded."""
    from pipeline import engine

    assert engine.SPEED_BLOCKS == 7  # the counts below
    now, calls = [0.0], {"base": 0}
    monkeypatch.setattr(engine.time, "perf_counter", lambda: now[0])

    def call(name):
        calls[name] = calls.get(name, 0) + 1
        # The base's blocks take 2 calls (4 units >= SPEED_BLOCK_S): 4 blocks are 8 calls, +1 warm-up.
        now[0] += engine.SPEED_BLOCK_S / 2 * (1 if name == "base" else 1.5 if calls["base"] <= 9 else 0.5)
    ratios = engine.relative_speed({"base": lambda: call("base"), "other": lambda: call("other")}, "base")
    assert ratios == {"base": 1.0, "other": pytest.approx(1.5)}
    assert now[0] < 2 * engine.SPEED_BLOCKS * engine.SPEED_BLOCK_S * 1.6


def test_the_cpu_record_names_the_dot_product_flags_found(tmp_path):
    from pipeline.report import cpu

    (tmp_path / "x86").write_text("flags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    (tmp_path / "a72").write_text("Features\t: fp asimd evtstrm crc32 cpuid\n")
    (tmp_path / "a76").write_text("Features\t: fp asimd atomics asimdrdm lrcpc dcpop asimddp\n")
    assert cpu(str(tmp_path / "x86"))["dot_product"] == ["avx512_vnni"]
    assert cpu(str(tmp_path / "a72"))["dot_product"] == []
    assert cpu(str(tmp_path / "a76"))["dot_product"] == ["asimddp"]
    assert cpu(str(tmp_path / "missing"))["dot_product"] == []


def test_report_has_the_promised_keys_and_passes(built):
    r = json.loads((built.build / "verify" / "report.json").read_text())
    assert r["passed"] is True and r["failures"] == [] and r["task"] == "regression"
    assert r["probes"]["range"] == [[-273.15], [1000.0]]
    assert set(r["probes"]["groups"]) == {"training", "validation", "grid", "extremes", "random"}
    assert r["probes"]["groups"]["validation"] == 2000 and r["probes"]["groups"]["training"] == 7
    for fmt in ("onnx", "tflite"):
        p = r["parity"][fmt]
        assert p["max_abs_err"] >= 0 and p["atol"] > 0 and p["rtol"] > 0
        # The headline: the error at the output's scale (its largest value over the working range,
        # 1832 degF) and the SNR. The elementwise ulp count stays in the report: next to the zero
        # crossing (-17.8 degC) an output of 0.2 degF has ulps of 1.5e-8, so an error of 1e-6 degF
        # that atol accepts is already ~70 ulps there, and where it lands depends on the CPU.
        assert isinstance(p["max_ulp"], int) and p["max_ulp"] == max(g["max_ulp"] for g in p["groups"].values())
        assert p["range"]["max_abs_err"] < 1e-3 and p["range"]["scale_ulp"] <= 2
        assert p["range"]["snr_db"] is None or p["range"]["snr_db"] > 120
        assert set(p["batches"]) == {"batch_1", "batch_65536"}
    for name in ("keras", "onnx-fp32", "tflite-fp32"):
        a = r["accuracy"][name]
        assert a["mae"] <= 0.11 and a["rows"] == 2000 and a["oracle_rows"] == 2000
    md = (built.build / "verify" / "report.md").read_text()
    assert "**Result: PASSED**" in md and "least-squares line" in md and "labelled by the oracle" in md
    table = md.split("## Parity with Keras", 1)[1]
    assert table.index("| format | ulp at scale | SNR | max abs err (range) |") < table.index("## Accuracy")


def copy_build(built: Built, dest) -> Built:
    b = Built(dest, built.config)
    shutil.copytree(built.build, b.build)
    shutil.copytree(built.dist, b.dist)
    return b


def bias_initializer(model: onnx.ModelProto) -> onnx.TensorProto:
    adds = {i for n in model.graph.node if n.op_type == "Add" for i in n.input}
    (bias,) = [t for t in model.graph.initializer if t.name in adds and list(t.dims) == [1]]
    return bias


def test_a_perturbed_onnx_bias_fails_verify_and_leaves_no_bundle(built, tmp_path):
    b = copy_build(built, tmp_path)
    path = b.build / "model.onnx"
    model = onnx.load(str(path))
    bias = bias_initializer(model)
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1e-3), bias.name))
    onnx.save(model, str(path))

    r = b.run("verify")
    assert r.returncode == 1
    check, summary = r.stderr.decode().splitlines()  # one short line per failing check, then the verdict
    m = re.fullmatch(r"error: verify: onnx parity: ([\d,]+) of ([\d,]+) values beyond atol 1e-05 \+ rtol 1e-06 "
                     r"\* \|Keras\|; worst at row \d+ \(input (\S+)\), batch \d+: (\S+) vs Keras (\S+) "
                     r"\(off by 0\.00(?:1|0999); ([\d,]+) ulp\)", check)
    assert m, check
    for number in m.groups()[2:5]:  # rounded to what matters: at most 6 significant digits
        assert len(number.lstrip("-").replace(".", "").lstrip("0")) <= 6 or "e" in number, check
    assert len(check) < 200
    assert summary.startswith("error: verify failed: 1 check(s); report ") and "removed stale" in summary
    assert not (b.dist / "bundle.tar.gz").exists() and not (b.dist / "bundle").exists()
    report = json.loads((b.build / "verify" / "report.json").read_text())
    assert report["passed"] is False and report["parity"]["tflite"]["passed"] is True
    assert report["parity"]["onnx"]["min_atol_to_pass"] > 9e-4

    r = b.run("bundle")  # make's next step on a re-run: refuses, same exit code
    assert r.returncode == 1
    assert b"verification failed, refusing to bundle" in r.stderr
    assert not (b.dist / "bundle.tar.gz").exists()


def test_an_inaccurate_model_fails_on_accuracy(built, tmp_path):
    b = copy_build(built, tmp_path)
    b.config = preset_with(tmp_path / "strict.toml", ("max_mae = 0.11", "max_mae = 0.01"))
    r = b.run("verify")
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    # w = 1.797949, b = 31.95248: at 99.95 degC, 211.6575 against the oracle's 211.91
    assert lines[:3] == [
        f"error: verify: {name} accuracy: MAE 0.108 on 2000 validation rows (allowed 0.01); worst 0.2525 at "
        "validation row 1999 (input 99.95)" for name in ("keras", "onnx-fp32", "tflite-fp32")
    ], lines
    assert lines[3].startswith("error: verify failed: 3 check(s)")


def test_missing_inputs_name_the_file_and_the_fix(tmp_path, built):
    b = Built(tmp_path, built.config)
    r = b.run("verify")
    assert r.returncode == 3
    assert r.stderr.decode().strip() == (
        f"error: {b.build / 'reference.npz'}: not found "
        "(run `make export` or `python -m pipeline export` first)"
    )
