"""`python -m runtime` end to end on a real bundle: every command, every refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from runtime.manifest import sha256_bytes
from tests.support.bundles import resign
from tests.support.core import one_error_line, ROOT, run_module, runtime_cli


def formula(c: float) -> float:
    return 1.8 * c + 32


def test_predict_prints_one_line_per_value_in_order(bundle):
    r = runtime_cli(bundle, "predict", "100", "37.5", "-40")
    assert r.returncode == 0, r.stderr
    out = [float(v) for v in r.stdout.decode().splitlines()]
    assert len(out) == 3
    for c, f in zip([100, 37.5, -40], out):
        assert f == pytest.approx(formula(c), abs=0.3)
    assert out[0] > out[1] > out[2]


def test_predict_json(bundle):
    r = runtime_cli(bundle, "predict", "0", "100", "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["celsius"] == [0.0, 100.0] and len(doc["fahrenheit"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["abc"], "error: argument 1 = 'abc': expected a number in degrees Celsius"),
        (["1", "nan"], "error: argument 2 = 'nan': expected a number, got NaN"),
        (["inf"], "error: argument 1 = 'inf': expected a finite number"),
        (["-inf"], "error: argument 1 = '-inf': expected a finite number"),
        (["--", "-inf"], "error: argument 1 = '-inf': expected a finite number"),
        (["-nan"], "error: argument 1 = '-nan': expected a number, got NaN"),
        (["-300"], "error: argument 1 = '-300': outside the valid range [-273.15, inf] degC (below absolute zero)"),
        (["--", "-300"], "error: argument 1 = '-300': outside the valid range [-273.15, inf] degC (below absolute zero)"),
        (["5", "-1e3"], "error: argument 2 = '-1e3': outside the valid range [-273.15, inf] degC (below absolute zero)"),
        (["1e39"], "error: argument 1 = '1e39': outside float32 range (|x| <= 3.4e38)"),
        ([""], "error: argument 1 = '': expected a number in degrees Celsius"),
        (["1_000"], "error: argument 1 = '1_000': expected a number in degrees Celsius (no digit separators)"),
        (["5", "-1_0.5"], "error: argument 2 = '-1_0.5': expected a number in degrees Celsius (no digit separators)"),
        (["a_b"], "error: argument 1 = 'a_b': expected a number in degrees Celsius"),
    ],
)
def test_predict_refuses_bad_input_with_one_line_and_exit_2(bundle, args, message):
    r = runtime_cli(bundle, "predict", *args)
    assert r.returncode == 2 and r.stdout == b""
    assert one_error_line(r) == message


def test_predict_needs_a_value(bundle):
    r = runtime_cli(bundle, "predict")
    assert r.returncode == 2 and b"CELSIUS" in r.stderr
    r = runtime_cli(bundle, "predict", "--threads", "2", "--json")
    assert r.returncode == 2 and b"CELSIUS" in r.stderr


@pytest.mark.parametrize(
    "args, celsius",
    [
        (["-1e-3"], [-1e-3]),
        (["-.5", "-1e-3", "-40", "-2.5E1"], [-0.5, -1e-3, -40, -25]),
        (["5", "--threads", "2", "-40"], [5, -40]),  # 2 is the threads' value, not a temperature
        (["--threads", "2", "-1e-3", "7"], [-1e-3, 7]),
        (["-1e-3", "--threads=3", "7"], [-1e-3, 7]),
        (["-1e-3", "--thr", "2"], [-1e-3]),  # argparse's abbreviations still work
        (["-1e-3", "--bundle", ".", "5"], [-1e-3, 5]),
        (["--", "-1e-3", "5"], [-1e-3, 5]),
        (["1", "--", "-1e-3"], [1, -1e-3]),
    ],
)
def test_every_argument_that_reads_as_a_number_is_a_value_in_order(bundle, args, celsius):
    r = runtime_cli(bundle, "predict", "--json", *args)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["celsius"] == celsius
    r = runtime_cli(bundle, "predict", *args)  # and as lines
    assert r.returncode == 0, r.stderr
    assert [float(v) for v in r.stdout.split()] == pytest.approx([formula(c) for c in celsius], abs=0.3)


def test_an_option_value_that_reads_as_a_number_stays_with_its_option(bundle):
    r = runtime_cli(bundle, "predict", "5", "--threads", "-1e3")
    assert r.returncode == 2 and b"--threads: expected an integer >= 1, got '-1e3'" in r.stderr
    assert b"Traceback" not in r.stderr
    r = runtime_cli(bundle, "predict", "5", "--threads")
    assert r.returncode == 2 and b"--threads: expected one argument" in r.stderr


def test_threads_must_be_positive(bundle):
    r = runtime_cli(bundle, "predict", "1", "--threads", "0")
    assert r.returncode == 2 and b"--threads: expected an integer >= 1, got '0'" in r.stderr


def test_selfcheck_passes_on_a_good_bundle(bundle):
    r = runtime_cli(bundle, "selfcheck")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert [ln.split()[1] for ln in lines[:-1]] == ["python", "signature", "manifest", "hashes", "onnxruntime", "load", "golden"]
    assert all(ln.startswith("ok") for ln in lines[:-1]) and lines[-1] == "selfcheck: passed"
    import numpy
    import onnxruntime

    assert lines[0].split(None, 2)[2] == (f"Python {sys.version.split()[0]} ({sys.executable}), "
                                          f"numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}")
    doc = json.loads(runtime_cli(bundle, "selfcheck", "--json").stdout)
    assert doc["passed"] is True and len(doc["checks"]) == 7


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.onnx", "manifest.json", "golden.json", "runtime/runner.py"])
def test_a_flipped_byte_is_refused_naming_the_file_and_both_hashes(bundle, name):
    flip_byte(bundle / name, 100)
    for cmd in (["selfcheck"], ["predict", "1"]):
        r = runtime_cli(bundle, *cmd)
        if name == "runtime/runner.py" and cmd == ["predict", "1"]:
            continue  # predict checks what it loads: the manifest and the model
        if name == "golden.json" and cmd == ["predict", "1"]:
            continue
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        line = one_error_line(r)
        assert f"{name} | sha256 mismatch: expected " in line and ", got " in line, line


def test_truncated_and_missing_model_are_refused_before_onnxruntime(bundle):
    model = bundle / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    r = runtime_cli(bundle, "predict", "1")
    assert r.returncode == 1 and "model.onnx | sha256 mismatch" in one_error_line(r)
    model.unlink()
    r = runtime_cli(bundle, "predict", "1")
    assert r.returncode == 1 and one_error_line(r).startswith("error: model.onnx | missing from bundle")


def test_no_bundle_here_says_so(tmp_path):
    r = runtime_cli(ROOT, "predict", "1", "--bundle", str(tmp_path))
    assert r.returncode == 1
    assert f"{tmp_path} | no manifest.json: expected an unpacked bundle" in one_error_line(r)


def test_info_reports_manifest_io_and_threads(bundle):
    r = runtime_cli(bundle, "info", "--threads", "2")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model_inputs"][0]["name"] == "celsius" and doc["model_outputs"][0]["name"] == "fahrenheit"
    assert doc["threads"] == {"intra_op": 2, "inter_op": 1, "spinning": False}
    assert "CPUExecutionProvider" in doc["providers"] and doc["manifest"]["model"]["opset"] == 17
    assert doc["bundle"] == str(bundle.resolve()) and doc["loaded"] is True and doc["problem"] is None
    assert doc["model_needs"] == {"opset": 17, "ir_version": 8, "min_onnxruntime": "1.12"}


def resign_manifest(bundle, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    raw = (json.dumps(m, indent=2, sort_keys=True) + "\n").encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.json.sha256").write_text(f"{sha256_bytes(raw)}  manifest.json\n")


def test_info_prints_what_it_can_when_this_onnxruntime_cannot_load_the_model(bundle):
    """A model (and manifest, re-signed) claiming IR version 99: newer than any onnxruntime."""
    import onnxruntime

    model = bytearray((bundle / "model.onnx").read_bytes())
    assert model[:2] == b"\x08\x08"  # field 1, ir_version = 8, comes first in an ONNX file
    model[1] = 99
    resign(bundle, "model.onnx", bytes(model))
    resign_manifest(bundle, lambda m: m["model"].update(opset=99, ir_version=99, min_onnxruntime="99.0"))
    r = runtime_cli(bundle, "info")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["onnxruntime"] == onnxruntime.__version__ and doc["python"]["executable"] == sys.executable
    assert doc["model_needs"] == {"opset": 99, "ir_version": 99, "min_onnxruntime": "99.0"}
    assert doc["loaded"] is False and doc["model_inputs"] is None and doc["bundle"] == str(bundle.resolve())
    assert doc["problem"].startswith("model.onnx | ") and "IR version: 99" in doc["problem"]
    assert one_error_line(r) == "error: " + doc["problem"]


def test_info_prints_what_it_can_when_the_manifest_is_damaged(bundle):
    flip_byte(bundle / "manifest.json", 100)
    r = runtime_cli(bundle, "info")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["bundle"] == str(bundle.resolve()) and doc["manifest"] is None and doc["model_needs"] is None
    assert doc["numpy"] and doc["onnxruntime"] and doc["loaded"] is False
    assert doc["problem"].startswith("manifest.json | sha256 mismatch: expected ")
    assert one_error_line(r) == "error: " + doc["problem"]


def test_from_a_checkout_the_runner_finds_dist_bundle(bundle, tmp_path):
    checkout = tmp_path / "checkout"  # after `make all`: runtime/ beside dist/bundle
    shutil.copytree(bundle / "runtime", checkout / "runtime")
    shutil.copytree(bundle, checkout / "dist" / "bundle")
    r = run_module("runtime", "predict", "100", cwd=checkout, env={"PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == pytest.approx(formula(100), abs=0.3)
    doc = json.loads(run_module("runtime", "info", cwd=checkout, env={"PYTHONPATH": ""}).stdout)
    assert doc["bundle"] == str((checkout / "dist" / "bundle").resolve())
    shutil.rmtree(checkout / "dist")
    r = run_module("runtime", "predict", "100", cwd=checkout, env={"PYTHONPATH": ""})
    assert r.returncode == 1
    home = checkout.resolve()
    assert one_error_line(r) == (f"error: {home} | no manifest.json here nor in {home / 'dist' / 'bundle'}: "
                                 "expected an unpacked bundle (or pass --bundle DIR)")


def test_the_runtime_folder_runs_as_a_script_from_any_directory(bundle):
    """`python3 /abs/bundle/runtime ...`, as a service or cron job starts it: cwd /, no PYTHONPATH."""
    def run(*args, stdin=None):
        return subprocess.run([sys.executable, str(bundle / "runtime"), *args], cwd="/", input=stdin,
                              capture_output=True, env={**os.environ, "PYTHONPATH": ""}, timeout=120)

    r = run("selfcheck")
    assert r.returncode == 0 and r.stdout.decode().splitlines()[-1] == "selfcheck: passed", r.stderr
    r = run("predict", "100", "-40")
    assert r.returncode == 0 and [round(float(v)) for v in r.stdout.split()] == [212, -40], r.stderr
    r = run("stream", stdin=b"0\n100\n")
    assert r.returncode == 0 and [round(float(v)) for v in r.stdout.split()] == [32, 212], r.stderr
    r = run("info")
    assert r.returncode == 0 and json.loads(r.stdout)["bundle"] == str(bundle.resolve()), r.stderr


def test_stream_keeps_every_line_in_order_with_bad_lines_in_the_middle(bundle):
    lines = ["1", "abc", "", "100", "nan", "-300", "37.5", "inf", " 2 ", "1e39", "-40"]
    r = runtime_cli(bundle, "stream", stdin=("\n".join(lines) + "\n").encode())
    assert r.returncode == 2
    out = r.stdout.decode().splitlines()
    assert len(out) == len(lines)
    bad = {2, 3, 5, 6, 8, 10}
    for n, (given, got) in enumerate(zip(lines, out), start=1):
        if n in bad:
            assert got.startswith(f"error: line {n}: "), (n, got)
        else:
            assert float(got) == pytest.approx(formula(float(given)), abs=0.3), (n, got)
    assert one_error_line(r) == "error: stream: 6 bad line(s); each got an 'error:' line in its place"


def test_stream_of_good_lines_exits_0_and_handles_crlf_and_a_last_line_without_newline(bundle):
    r = runtime_cli(bundle, "stream", "--batch", "2", stdin=b"0\r\n10\n20\r\n30")
    assert r.returncode == 0, r.stderr
    assert [round(float(v)) for v in r.stdout.decode().splitlines()] == [32, 50, 68, 86]


def test_stream_refuses_digit_separators_like_predict(bundle):
    r = runtime_cli(bundle, "stream", stdin=b"1\n1_000\n2\na_b\n")
    out = r.stdout.decode().splitlines()
    assert r.returncode == 2 and len(out) == 4
    assert out[1] == "error: line 2: '1_000': expected a number in degrees Celsius (no digit separators)"
    assert out[3] == "error: line 4: 'a_b': expected a number in degrees Celsius"
    assert [float(out[0]), float(out[2])] == pytest.approx([formula(1), formula(2)], abs=0.3)


def test_stream_refuses_an_overlong_line_once_and_goes_on(bundle):
    r = runtime_cli(bundle, "stream", stdin=b"1\n" + b"9" * 100_000 + b"\n2\n")
    out = r.stdout.decode().splitlines()
    assert r.returncode == 2 and len(out) == 3
    assert out[1] == "error: line 2: line longer than 256 bytes, expected one number"
    assert float(out[2]) == pytest.approx(formula(2), abs=0.3)


def test_bench_reports_the_promised_metrics(bundle):
    r = runtime_cli(bundle, "bench", "--calls", "300", "--large-batch", "10000", "--cold-runs", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"p50_us", "p90_us", "p99_us"} <= set(doc["batch1_latency"])
    assert doc["batch1_latency"]["p50_us"] <= doc["batch1_latency"]["p99_us"]
    assert doc["large_batch"]["values_per_s"] > 0 and doc["peak_rss_mb"] > 0
    assert doc["cold_start"]["runs"] == 1 and doc["first_inference_s"] > 0
    # the tutorial's scalar path: fed numbers, its JSON as it always was
    assert "fed" not in doc and set(doc["large_batch"]) == {"batch", "best_s", "values_per_s"}
    assert doc["large_batch"]["batch"] == 10000


BENCH_ARGS = ("bench", "--calls", "300", "--large-batch", "10000", "--cold-runs", "1")


@pytest.mark.parametrize("kind, shape", [("tabular", [13]), ("image", [8, 8, 1]), ("regression", [4]),
                                         ("scalar", [1])])
def test_bench_times_a_model_of_one_input_on_its_golden_inputs(tmp_path, kind, shape):
    """A model of one input of several values (wine, digits), or of one value whose valid range
    refuses the tutorial's numbers (volts from 0 up): batch 1 cycles through its golden
    examples, the large batch is --large-batch input values in whole examples, the cold start
    answers the first example from an .npz."""
    pytest.importorskip("onnx", reason="builds its bundle with the onnx package, which a device's venv lacks "
                                       "(make runtime-check)")
    from tests.support.bundles import signature_bundle

    b = signature_bundle(tmp_path / kind, kind)
    r = runtime_cli(b, *BENCH_ARGS)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["fed"] == {"from": "golden.json", "golden_examples": 16, "inputs": {"inputs": shape}}
    per_example = 1
    for d in shape:
        per_example *= d
    assert doc["large_batch"]["batch"] == 10000 // per_example
    assert doc["large_batch"]["values"] == 10000 // per_example * per_example
    assert doc["large_batch"]["examples_per_s"] > 0 and doc["first_inference_s"] > 0
    assert doc["batch1_latency"]["calls"] == 300
    assert 0 < doc["batch1_latency"]["p50_us"] <= doc["batch1_latency"]["p99_us"]
    assert doc["cold_start"]["runs"] == 1 and doc["peak_rss_mb"] > 0


def test_bench_feeds_numbers_to_a_one_value_model_that_takes_them_and_refuses_bad_golden_inputs(tmp_path):
    """A one-value model whose valid range holds the tutorial's numbers is fed them (the scalar
    path, no golden inputs); golden inputs that are not a batch, or that the model refuses, are
    one line and exit 1, before anything is timed."""
    pytest.importorskip("onnx", reason="builds its bundle with the onnx package, which a device's venv lacks "
                                       "(make runtime-check)")
    from tests.support.bundles import signature_bundle

    b = signature_bundle(tmp_path / "unbounded", "scalar", valid={"min": [None], "max": [None]})
    r = runtime_cli(b, *BENCH_ARGS)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "fed" not in doc and doc["large_batch"]["batch"] == 10000

    bad = signature_bundle(tmp_path / "by-name", "tabular", golden={"inputs": {"inputs": [[1.0] * 13]}, "outputs": []})
    r = runtime_cli(bad, *BENCH_ARGS)
    assert r.returncode == 1 and r.stdout == b""
    assert one_error_line(r) == "error: golden.json | bench: expected golden inputs as a batch (n, 13): got dict"
    nan = signature_bundle(tmp_path / "nan", "image", golden={"inputs": [[[[float("nan")]] * 8] * 8], "outputs": []})
    r = runtime_cli(nan, *BENCH_ARGS)
    assert r.returncode == 1 and r.stdout == b""
    assert one_error_line(r).startswith("error: golden.json | bench: golden inputs: input[0]: feature 'x[0,0,0]' is NaN")


def test_bench_times_a_model_of_several_inputs_on_its_golden_inputs_by_name(tmp_path):
    """A model of two inputs and two outputs: batch 1 cycles through its golden examples by name,
    the large batch is --large-batch input values in whole examples, the cold start answers one
    from an .npz. Golden data not by name is refused in one line, before anything is timed."""
    pytest.importorskip("onnx", reason="builds its bundle with the onnx package, which a device's venv lacks "
                                       "(make runtime-check)")
    from tests.support.bundles import multi_bundle

    b = multi_bundle(tmp_path / "multi")
    r = runtime_cli(b, "bench", "--calls", "300", "--large-batch", "10000", "--cold-runs", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["fed"] == {"from": "golden.json", "golden_examples": 12, "inputs": {"image": [4, 4, 1], "readings": [3]}}
    assert doc["batch1_latency"]["calls"] == 300
    assert 0 < doc["batch1_latency"]["p50_us"] <= doc["batch1_latency"]["p99_us"]
    per_example = 16 + 3
    assert doc["large_batch"]["batch"] == 10000 // per_example
    assert doc["large_batch"]["values"] == 10000 // per_example * per_example
    assert doc["large_batch"]["examples_per_s"] > 0 and doc["first_inference_s"] > 0
    assert doc["cold_start"]["runs"] == 1 and doc["peak_rss_mb"] > 0

    bad = multi_bundle(tmp_path / "single-form", golden={"inputs": [[1.0]], "outputs": [[2.0]]})
    r = runtime_cli(bad, "bench", "--calls", "300", "--large-batch", "10000", "--cold-runs", "1")
    assert r.returncode == 1 and r.stdout == b""
    assert one_error_line(r) == ("error: golden.json | bench: expected golden inputs by input name "
                                 "('image', 'readings'): got list")


def test_onnxruntime_writes_no_telemetry_under_home(bundle, tmp_path):
    """onnxruntime 1.32 keeps a telemetry database under ~/.cache/Microsoft unless told not to."""
    r = run_module("runtime", "predict", "1", cwd=bundle, env={"PYTHONPATH": "", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / ".cache" / "Microsoft").exists()
