"""`python -m runtime` end to end on a real bundle: every command, every refusal."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, runtime_cli


def formula(c: float) -> float:
    return 1.8 * c + 32


def one_error_line(r) -> str:
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert b"Traceback" not in r.stderr
    return lines[0]


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
        (["--", "-inf"], "error: argument 1 = '-inf': expected a finite number"),
        (["--", "-300"], "error: argument 1 = '-300': outside the valid range [-273.15, inf] degC (below absolute zero)"),
        (["1e39"], "error: argument 1 = '1e39': outside float32 range (|x| <= 3.4e38)"),
        ([""], "error: argument 1 = '': expected a number in degrees Celsius"),
    ],
)
def test_predict_refuses_bad_input_with_one_line_and_exit_2(bundle, args, message):
    r = runtime_cli(bundle, "predict", *args)
    assert r.returncode == 2 and r.stdout == b""
    assert one_error_line(r) == message


def test_predict_needs_a_value(bundle):
    r = runtime_cli(bundle, "predict")
    assert r.returncode == 2 and b"CELSIUS" in r.stderr


def test_threads_must_be_positive(bundle):
    r = runtime_cli(bundle, "predict", "1", "--threads", "0")
    assert r.returncode == 2 and b"--threads: expected an integer >= 1, got '0'" in r.stderr


def test_selfcheck_passes_on_a_good_bundle(bundle):
    r = runtime_cli(bundle, "selfcheck")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert [ln.split()[1] for ln in lines[:-1]] == ["manifest", "hashes", "onnxruntime", "load", "golden"]
    assert all(ln.startswith("ok") for ln in lines[:-1]) and lines[-1] == "selfcheck: passed"
    doc = json.loads(runtime_cli(bundle, "selfcheck", "--json").stdout)
    assert doc["passed"] is True and len(doc["checks"]) == 5


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
