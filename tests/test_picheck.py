"""pi-check's own logic, without QEMU (`make pi-check` is the emulated run itself); and, marked
qemu, pi-check on a non-tutorial bundle: the digits CNN, fp32 and static int8, on the emulated Pi 4 and 5."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copied_build

from deploy.devicecheck import picheck

ROOT = Path(__file__).resolve().parent.parent


def test_cpuinfo_describes_the_pi_cores_onnxruntime_looks_for():
    text = picheck.cpuinfo(picheck.DEVICES["Raspberry Pi 4"], 4)
    assert text.count("processor\t:") == 4
    assert text.count("CPU part\t: 0xd08") == 4 and "CPU implementer\t: 0x41" in text
    pi5 = picheck.cpuinfo(picheck.DEVICES["Raspberry Pi 5"], 2)
    assert "CPU part\t: 0xd0b" in pi5 and "asimddp" in pi5 and "Raspberry Pi 5" in pi5


def smoke_result(values, stream=("-40", "error: line 2: 'x': expected a number in degrees Celsius")):
    return {
        "selfcheck": {"passed": True, "checks": [], "stderr": ""},
        "predict": {"exit": 0, "output": {"fahrenheit": list(values)}, "stderr": ""},
        "stream": {"exit": 2, "lines": list(stream), "stderr": ""},
    }


def test_compare_accepts_equal_answers_and_names_a_difference():
    host = smoke_result([32.0, 211.7474])
    worst, problems = picheck.compare(copy.deepcopy(host), host, 1e-5, 1e-6)
    assert worst == 0 and problems == []
    guest = smoke_result([32.0, 211.7484])
    worst, problems = picheck.compare(guest, host, 1e-5, 1e-6)
    assert worst == pytest.approx(1e-3) and problems[0].startswith("predict differs from x86: 211.7484 vs 211.7474")


def test_compare_reports_a_failed_selfcheck_and_a_short_stream():
    host = smoke_result([32.0])
    guest = smoke_result([32.0], stream=("-40",))
    guest["selfcheck"] = {"passed": False, "checks": [{"name": "golden", "ok": False, "detail": "3 differ"}], "stderr": ""}
    _, problems = picheck.compare(guest, host, 1e-5, 1e-6)
    assert problems == ["selfcheck failed: 3 differ", "stream gave 1 lines (exit 2), x86 2 (exit 2)"]


def test_mirrors_come_from_the_hosts_apt_sources():
    main, security = picheck.debian_mirrors()
    assert main.startswith("http") and "security" in security


def examples_result(outputs, labels=None, stream=("7,1.5,-2.25", "error: line 3: expected 64 features, got 1")):
    out = {"model": "digits", "outputs": outputs}
    if labels is not None:
        out["labels"] = labels
    return {
        "selfcheck": {"passed": True, "checks": [], "stderr": ""},
        "predict": {"exit": 0, "output": out, "stderr": ""},
        "stream": {"exit": 2, "lines": list(stream), "stderr": ""},
    }


def test_compare_of_any_signature_flattens_the_outputs_and_holds_the_labels():
    host = examples_result([[1.5, -2.25], [0.5, 3.0]], ["0", "1"])
    assert picheck.compare(copy.deepcopy(host), host, 1e-5, 1e-4) == (0.0, [])
    guest = examples_result([[1.5, -2.25], [0.5, 3.001]], ["0", "1"])
    worst, problems = picheck.compare(guest, host, 1e-5, 1e-4)
    assert worst == pytest.approx(1e-3) and problems == [
        "predict differs from x86: 3.001 vs 3.0 (allowed 1e-05 + 0.0001 * |x86|)"]
    # within a loose tolerance (an int8 bundle's) the values pass, but a changed label does not
    guest = examples_result([[1.5, -2.25], [3.5, 3.0]], ["0", "0"], stream=("0,1.5,-2.25", host["stream"]["lines"][1]))
    _, problems = picheck.compare(guest, host, 5.0, 0.0)
    assert problems == ["predict labels differ from x86: 1 of 2, first at input[1]: '0' vs '1'",
                        "stream differs from x86: 0,1.5,-2.25 vs 7,1.5,-2.25"]
    guest = examples_result([[1.5, -2.25]], ["0"])
    assert picheck.compare(guest, host, 1e-5, 1e-4) == (float("inf"), ["predict gave 2 values, x86 4"])


def test_the_table_names_the_big_batch_it_timed():
    row = {"device": "Raspberry Pi 4", "qemu_cpu": "cortex-a72", "cpu_part": "0xd08", "onnxruntime": "1.32.0",
           "selfcheck": True, "max_diff": 0.0, "problems": [], "wall_s": 1.0,
           "timings": {"start_to_imported_s": 1.0, "selfcheck_s": 0.1, "predict_batch1_us": 100.0, "batch_100k_ms": 5.0}}
    assert "| batch 100k (ms, emulated) |" in picheck.table([row])
    row["timings"] = {**row["timings"], "batch_1k_ms": 7.0}
    del row["timings"]["batch_100k_ms"]
    assert "| batch 1k (ms, emulated) |" in picheck.table([row]) and "| 7.0 |" in picheck.table([row])


@pytest.mark.qemu
@pytest.mark.parametrize("variant", [None, "onnx-int8-static"])
def test_pi_check_proves_the_digits_cnn_on_the_emulated_pi_4_and_5(variant, tmp_path, example_build):
    """A non-tutorial bundle (8x8x1 images in, 10 logits out): pi-check predicts its golden
    inputs under QEMU and holds every output value within the manifest's tolerance of x86's,
    and every label equal; the fp32 bundle and the static int8 one (aarch64's int8 kernels)."""
    build, dist = example_build("digits")
    tarball = dist / "bundle.tar.gz"
    if variant:  # the same build, verify and bundle again with the variant chosen
        build, dist = copied_build((build, dist), tmp_path, f'[bundle]\nmodel = "{variant}"\n')
        for stage in ("verify", "bundle"):
            r = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(build / "config.toml"), "--build",
                                str(build), "--dist", str(dist), stage], cwd=ROOT, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
        tarball = dist / "bundle.tar.gz"
        assert json.loads((dist / "bundle" / "manifest.json").read_text())["model"]["variant"] == variant
    out = tmp_path / "pi-check"
    r = subprocess.run([sys.executable, "-m", "deploy.devicecheck.picheck", "--tarball", str(tarball),
                        "--cache", str(ROOT / ".cache" / "pi"), "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows, host = results["rows"], results["host"]
    assert [row["device"] for row in rows] == ["Raspberry Pi 4", "Raspberry Pi 5"]
    assert all(row["selfcheck"] and not row["problems"] for row in rows), rows
    assert all(row["max_diff"] < 1e-3 for row in rows), [row["max_diff"] for row in rows]  # measured: <= 4e-6
    predicted = host["predict"]["output"]
    assert len(predicted["outputs"]) == len(predicted["labels"]) == 64 and len(predicted["outputs"][0]) == 10
    assert "| batch 1k (ms, emulated) |" in (out / "results.md").read_text()
