"""pi-check's own logic, without QEMU (`make pi-check` is the emulated run itself)."""

from __future__ import annotations

import copy

import pytest

from deploy.devicecheck import picheck


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
