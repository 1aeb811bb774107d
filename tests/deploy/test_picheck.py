"""pi-check's own logic, without QEMU (`make pi-check` is the emulated run itself); and, marked
qemu, pi-check on a non-tutorial bundle: the digits CNN, fp32 and static int8, on the emulated Pi 4 and 5,
the fp32 one signed as `make bundle SIGNING_KEY=...` signs it and verified by the emulated Pi's arm64
ssh-keygen, an altered copy refused."""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deploy.devicecheck import picheck
from tests.support.builds import copied_build
from tests.support.bundles import keypair, sign, trusted_keys
from tests.support.core import ROOT
from tests.support.fleet import tar_bundle


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


# --- a bundle of several named inputs and outputs (issue 27): compared output by output, by name ---

REFUSALS = [{"what": "no array 'readings'", "exit": 2,
             "stderr": "error: --input stdin: no array 'readings'; expected one array per input: 'gauge', 'readings'\n"}]


def named_result(state, level, labels, refusals=REFUSALS):
    """A smoke run's result for a bundle of two outputs: 'state' (a classification) and 'level'."""
    out = {"model": "tank", "outputs": {"state": state, "level": level}, "labels": {"state": labels}}
    return {"selfcheck": {"passed": True, "checks": [], "stderr": ""},
            "predict": {"exit": 0, "output": out, "stderr": ""},
            "refusals": copy.deepcopy(refusals)}


HOST = named_result([[2.0, -1.0, 0.5], [-0.5, 0.25, 3.0]], [[1.25], [0.5]], ["draining", "filling"])


def test_compare_named_gives_each_outputs_max_diff_and_names_the_one_that_differs():
    assert picheck.compare_named(copy.deepcopy(HOST), HOST, 1e-5, 1e-4) == ({"state": 0.0, "level": 0.0}, [])
    guest = named_result([[2.0, -1.0, 0.5], [-0.5, 0.25, 3.0000001]], [[1.25], [0.501]], ["draining", "filling"])
    by_output, problems = picheck.compare_named(guest, HOST, 1e-5, 1e-4)
    assert by_output["state"] == pytest.approx(1e-7, rel=0.01) and by_output["level"] == pytest.approx(1e-3)
    assert problems == ["predict output 'level' differs from x86: 0.501 vs 0.5 (allowed 1e-05 + 0.0001 * |x86|)"]
    # compare takes such a bundle too (it used to fail on the dicts): the largest diff, the same problems
    worst, same = picheck.compare(guest, HOST, 1e-5, 1e-4)
    assert worst == pytest.approx(1e-3) and same == problems


def test_compare_named_holds_each_classifications_labels_and_each_refusal_by_name():
    guest = named_result([[2.0, -1.0, 0.5], [3.5, 0.25, 3.0]], [[1.25], [0.5]], ["draining", "draining"])
    guest["refusals"][0]["stderr"] = "error: --input stdin: not a readable .npz file (File is not a zip file)\n"
    by_output, problems = picheck.compare_named(guest, HOST, 5.0, 0.0)  # values within a loose tolerance
    assert by_output == {"state": 4.0, "level": 0.0}
    assert problems == [
        "predict output 'state' labels differ from x86: 1 of 2, first at input[1]: 'draining' vs 'filling'",
        "bad input (no array 'readings') not refused as x86 refused it: exit 2, 'error: --input stdin: not a "
        "readable .npz file (File is not a zip file)' vs exit 2, \"error: --input stdin: no array 'readings'; "
        "expected one array per input: 'gauge', 'readings'\""]
    accepted = named_result(HOST["predict"]["output"]["outputs"]["state"], [[1.25], [0.5]], ["draining", "filling"],
                            [REFUSALS[0], {"what": "no array 'readings'", "exit": 0, "stderr": ""}])
    assert picheck.compare_named(accepted, HOST, 1e-5, 1e-4)[1] == [
        "bad input (no array 'readings') not refused as x86 refused it: exit 0, '(no error line)' vs exit 2, "
        "\"error: --input stdin: no array 'readings'; expected one array per input: 'gauge', 'readings'\""]


def test_compare_named_when_the_guest_gives_too_little_names_the_output():
    short = named_result([[2.0, -1.0, 0.5]], [[1.25], [0.5]], ["draining"])
    by_output, problems = picheck.compare_named(short, HOST, 1e-5, 1e-4)
    assert by_output == {"state": float("inf"), "level": 0.0}
    assert problems == ["predict output 'state' gave 3 values, x86 6",
                        "predict output 'state' labels differ from x86: 0 of 2, first at input[1]: None vs 'filling'"]
    missing = copy.deepcopy(HOST)
    del missing["predict"]["output"]["outputs"]["level"]
    assert picheck.compare_named(missing, HOST, 1e-5, 1e-4) == (
        {"state": float("inf"), "level": float("inf")}, ["predict gave outputs ['state'], x86 ['level', 'state']"])
    failed = copy.deepcopy(HOST)
    failed["predict"] = {"exit": 2, "output": None, "stderr": "error: --input stdin: no array 'gauge'\n"}
    assert picheck.compare_named(failed, HOST, 1e-5, 1e-4) == (
        {"state": float("inf"), "level": float("inf")}, ["predict exited 2: error: --input stdin: no array 'gauge'"])


def report_row(**extra):
    return {"device": "Raspberry Pi 4", "qemu_cpu": "cortex-a72", "cpu_part": "0xd08", "onnxruntime": "1.32.0",
            "selfcheck": True, "max_diff": 0.000123456, "problems": [], "wall_s": 1.0,
            "timings": {"start_to_imported_s": 1.0, "selfcheck_s": 0.1, "predict_batch1_us": 100.0, "batch_1k_ms": 7.0},
            **extra}


def test_the_report_names_each_output_of_a_named_bundle():
    row = report_row(max_diff_by_output={"state": 0.000123456, "level": 0.0})
    assert "| state 0.000123, level 0 | 1.00 |" in picheck.table([row])
    text = picheck.named_report(HOST, 1e-5, 1e-4)
    assert text == ("Outputs compared by name, each value within atol 1e-05 + rtol 0.0001 * |x86| and each "
                    "classification's labels equal to x86's: state (6 values, 2 labels), level (2 values). Bad inputs "
                    "refused with x86's error line, word for word: no array 'readings' (exit 2).\n\n")


def test_a_single_output_bundles_comparison_and_report_are_unchanged():
    """One output: compare's figures and lines as before, the max diff one number, no named part."""
    host = examples_result([[1.5, -2.25], [0.5, 3.0]], ["0", "1"])
    assert not picheck.named(host)
    guest = examples_result([[1.5, -2.25], [0.5, 3.001]], ["0", "1"])
    worst, problems = picheck.compare(guest, host, 1e-5, 1e-4)
    assert worst == pytest.approx(1e-3) and problems == [
        "predict differs from x86: 3.001 vs 3.0 (allowed 1e-05 + 0.0001 * |x86|)"]
    assert picheck.named_report(host, 1e-5, 1e-4) == ""
    assert picheck.max_diff_cell(report_row()) == "0.000123"
    assert "| 0.000123 | 1.00 |" in picheck.table([report_row()])


def test_flatten_reads_one_outputs_nested_lists_in_order():
    assert picheck.flatten([[[1.0], [2.0]], [[3.0], [4.5]]]) == [1.0, 2.0, 3.0, 4.5]
    assert picheck.flatten(7.0) == [7.0] and picheck.flatten(None) == []


def test_the_smoke_run_feeds_a_named_bundle_its_golden_inputs_by_name(tmp_path):
    """pi_smoke natively (no QEMU) on the hand-built two-input, two-output bundle: predict gets the
    golden inputs as an .npz by name and answers every output as golden.json does; the bad inputs
    are refused in one line each; and the result compares with itself as pi-check compares it."""
    import numpy as np

    from tests.support.bundles import multi_bundle

    bundle = multi_bundle(tmp_path / "bundle")
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_TRUSTED_KEYS", "EDGE_SSH_KEYGEN")}
    r = subprocess.run([sys.executable, str(picheck.SMOKE), str(bundle)], cwd=bundle, capture_output=True, text=True,
                       env={**env, "PYTHONPATH": ""}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["selfcheck"]["passed"] and result["predict"]["exit"] == 0, result["predict"]["stderr"]
    golden = json.loads((bundle / "golden.json").read_text())
    answer = result["predict"]["output"]
    assert sorted(answer["outputs"]) == ["kind", "level"]
    for name, want in golden["outputs"].items():
        np.testing.assert_allclose(answer["outputs"][name], want, atol=1e-4, rtol=1e-4)
    assert answer["labels"]["kind"] == [["a", "b", "c"][i] for i in np.argmax(golden["outputs"]["kind"], axis=1)]
    assert [b["what"] for b in result["refusals"]] == [
        "no array 'readings'", "input 'image' beyond float32", "input 'image' outside its valid range"]
    assert all(b["exit"] == 2 and len(b["stderr"].splitlines()) == 1 for b in result["refusals"]), result["refusals"]
    assert result["refusals"][2]["stderr"] == (
        "error: --input stdin: input 'image'[0]: feature 'image[0,0,0]' = -1: outside the valid range [0, 1]\n")
    assert "batch_1k_ms" in result["timings"]
    # The stream: golden examples as JSON objects by name, answered in place; three bad lines.
    lines = result["stream"]["lines"]
    assert result["stream"]["exit"] == 2 and len(lines) == 7, result["stream"]
    assert [ln.startswith("error: ") for ln in lines] == [False, False, True, True, False, True, False], lines
    kind, level = lines[0].split(" ")
    assert kind.split(",")[0] == "kind=" + answer["labels"]["kind"][0]
    assert float(level.removeprefix("level=")) == pytest.approx(golden["outputs"]["level"][0][0], abs=1e-4)
    assert picheck.compare_named(result, copy.deepcopy(result), 1e-5, 1e-4) == ({"kind": 0.0, "level": 0.0}, [])
    assert picheck.named_report(result, 1e-5, 1e-4).endswith(
        " A stream of 7 lines (JSON objects by input name, 3 of them bad) answered as x86 answered it, line by line.\n\n")
    # A stream answer off by more than the tolerance, on one output, is found.
    guest = copy.deepcopy(result)
    kind, level = guest["stream"]["lines"][4].split(" ")
    guest["stream"]["lines"][4] = f"{kind} level={float(level.removeprefix('level=')) + 0.01:.9g}"
    assert picheck.compare_named(guest, result, 1e-5, 1e-4)[1] == [
        f"stream differs from x86: {guest['stream']['lines'][4]} vs {result['stream']['lines'][4]}"]


@pytest.mark.qemu
@pytest.mark.parametrize("variant", [None, "onnx-int8-static"])
def test_pi_check_proves_the_digits_cnn_on_the_emulated_pi_4_and_5(variant, tmp_path, example_build):
    """A non-tutorial bundle (8x8x1 images in, 10 logits out): pi-check predicts its golden
    inputs under QEMU and holds every output value within the manifest's tolerance of x86's,
    and every label equal; the fp32 bundle and the static int8 one (aarch64's int8 kernels).
    The fp32 one is signed as `make bundle SIGNING_KEY=...` signs it, its key trusted: the
    emulated Pis verify it with their arm64 ssh-keygen (signed_checks, below)."""
    build, dist = example_build("digits")
    if variant:  # the same build, verify and bundle again with the variant chosen
        build, dist = copied_build((build, dist), tmp_path, f'[bundle]\nmodel = "{variant}"\n')
        for stage in ("verify", "bundle"):
            r = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(build / "config.toml"), "--build",
                                str(build), "--dist", str(dist), stage], cwd=ROOT, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
        tarball = dist / "bundle.tar.gz"
        assert json.loads((dist / "bundle" / "manifest.json").read_text())["model"]["variant"] == variant
        extra = ["--load-pairs", "0"]  # load times: make pi-check's, and the signed run's below
    else:
        key = keypair(tmp_path / "keys", "release", "release key")
        with tarfile.open(dist / "bundle.tar.gz") as tar:
            tar.extractall(tmp_path / "signed", filter="data")
        sign(tmp_path / "signed" / "bundle", key)
        tarball = tar_bundle(tmp_path / "signed" / "bundle", tmp_path / "signed.tar.gz")
        keys = trusted_keys(tmp_path / "trusted_keys", key)
        extra = ["--trusted-keys", str(keys), "--load-pairs", "1"]
    out = tmp_path / "pi-check"
    r = subprocess.run([sys.executable, "-m", "deploy.devicecheck.picheck", "--tarball", str(tarball),
                        "--cache", str(ROOT / ".cache" / "pi"), "--out", str(out), *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows, host = results["rows"], results["host"]
    assert [row["device"] for row in rows] == ["Raspberry Pi 4", "Raspberry Pi 5"]
    assert all(row["selfcheck"] and not row["problems"] for row in rows), rows
    if variant is None:
        assert all(row["max_diff"] < 1e-3 for row in rows), [row["max_diff"] for row in rows]  # measured: <= 4e-6
    else:  # aarch64's int8 kernels round apart from x86's by at most one step of the quantized output
        step = output_step(dist / "bundle" / "model.onnx")
        assert all(row["max_diff"] <= step * (1 + 1e-5) for row in rows), ([row["max_diff"] for row in rows], step)
    predicted = host["predict"]["output"]
    assert len(predicted["outputs"]) == len(predicted["labels"]) == 64 and len(predicted["outputs"][0]) == 10
    assert "| batch 1k (ms, emulated) |" in (out / "results.md").read_text()
    if variant is None:
        signed_checks(results, key, keys, out)


def output_step(model_path) -> float:
    """The quantization step of a QDQ model's output: the scale of the DequantizeLinear that gives it."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model_path))
    made_by = {o: n for n in m.graph.node for o in n.output}
    node = made_by[m.graph.output[0].name]
    while node.op_type != "DequantizeLinear":
        node = made_by[node.input[0]]
    (scale,) = [t for t in m.graph.initializer if t.name == node.input[1]]
    return float(numpy_helper.to_array(scale))


# --- signed bundles: the device's ssh-keygen, arm64 under emulation ------------------------------

def test_an_arm64_userland_made_before_openssh_client_is_made_again(tmp_path, monkeypatch):
    """The cache's userland must hold every package's file: one from before openssh-client was
    added (python3.11 and libstdc++ only) is made again, a complete one is reused."""
    root = tmp_path / "root"
    for pkg in ("python3.11", "libstdc++6"):
        (root / picheck.PROVIDES[pkg]).parent.mkdir(parents=True, exist_ok=True)
        (root / picheck.PROVIDES[pkg]).touch()
    assert picheck.missing_from(root) == ["openssh-client"]
    assert picheck.PROVIDES["openssh-client"] == "usr/bin/ssh-keygen"
    made = []

    def make_root(cache, r):
        made.append(r)
        (r / "usr" / "bin" / "ssh-keygen").touch()
        return r

    monkeypatch.setattr(picheck, "make_root", make_root)
    assert picheck.ensure_root(tmp_path) == root and made == [root]
    assert picheck.ensure_root(tmp_path) == root and made == [root]  # complete now: reused


def test_only_the_debs_apt_selects_are_unpacked():
    """apt-get -s's Inst lines name the versions to unpack (the archives may hold older ones)."""
    simulated = ("NOTE: This is only a simulation!\n"
                 "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64]) []\n"
                 "Inst zlib1g (1:1.2.13.dfsg-1+deb12u1 Debian:12.15/oldstable [arm64])\n"
                 "Inst media-types (10.0.0 Debian:12.15/oldstable [all])\n"
                 "Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64])\n")
    assert picheck.apt_selected(simulated) == ["libc6_2.36-9+deb12u14_arm64.deb",
                                               "zlib1g_1%3a1.2.13.dfsg-1+deb12u1_arm64.deb",
                                               "media-types_10.0.0_all.deb"]


def test_elf_machine_reads_the_header(tmp_path):
    here = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine())
    if here:
        assert picheck.elf_machine(Path(os.path.realpath(sys.executable))) == here
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert picheck.elf_machine(tmp_path / "script") == "not an ELF file"


def test_the_altered_copy_matches_every_hash_but_not_its_signature(tabular_bundle, tmp_path):
    """pi-check's throwaway key signs the bundle; the copy with one model byte changed and every
    hash recomputed passes the hash checks (the attack works on a device that trusts no key) and
    is refused as changed after signing (exit 8) by one that trusts the key; through the
    ssh-keygen wrapper (here the host's ssh-keygen), whose log records each call's exit."""
    work = tmp_path / "work"
    work.mkdir()
    signed = picheck.signing(tabular_bundle, work, None)
    assert signed["how"] == "unsigned tarball, signed here with a throwaway key"
    assert (tabular_bundle / "manifest.json.sig").is_file() and Path(signed["trusted_keys"]).is_file()
    altered = picheck.altered_copy(tabular_bundle, tmp_path / "altered")
    assert (altered / "model.onnx").read_bytes() != (tabular_bundle / "model.onnx").read_bytes()
    run = [sys.executable, "-m", "runtime", "selfcheck", "--json"]
    env = {**os.environ, "PYTHONPATH": ""}
    env.pop("EDGE_TRUSTED_KEYS", None)
    r = subprocess.run(run, cwd=altered, capture_output=True, text=True, env=env)
    checks = {c["name"]: c["ok"] for c in json.loads(r.stdout)["checks"]}
    assert checks["manifest"] and checks["hashes"], r.stdout  # every hash agrees: only the signature knows

    fake_root = tmp_path / "root"
    (fake_root / "usr" / "bin").mkdir(parents=True)
    (fake_root / "usr" / "bin" / "ssh-keygen").symlink_to(subprocess.run(
        ["sh", "-c", "command -v ssh-keygen"], capture_output=True, text=True).stdout.strip())
    log = tmp_path / "calls.log"
    wrapper = picheck.ssh_keygen_wrapper(tmp_path / "bin" / "ssh-keygen", "/usr/bin/env", fake_root, log)
    env.update(EDGE_TRUSTED_KEYS=signed["trusted_keys"], EDGE_SSH_KEYGEN=str(wrapper))
    good = subprocess.run(run, cwd=tabular_bundle, capture_output=True, text=True, env=env)
    [check] = [c for c in json.loads(good.stdout)["checks"] if c["name"] == "signature"]
    assert good.returncode == 0 and check["ok"] and signed["fingerprint"] in check["detail"], good.stdout
    bad = subprocess.run(run[:-1], cwd=altered, capture_output=True, text=True, env=env)
    assert bad.returncode == 8 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "manifest.json | does not match its signature" in bad.stderr
    calls = picheck.verify_calls(log)
    assert [c["exit"] for c in calls] == [0, 255] and all(c["args"].startswith("-Y verify ") for c in calls)
    assert {c["program"] for c in calls} == {str(fake_root / "usr" / "bin" / "ssh-keygen")}
    # the host's ssh-keygen is not the arm64 one: the check says so
    if platform.machine() == "x86_64":
        assert picheck.arm64_problems(calls, fake_root) == [
            f"{fake_root / 'usr' / 'bin' / 'ssh-keygen'} is x86-64, not AArch64"]
    assert picheck.arm64_problems([], fake_root)[0].startswith("no ssh-keygen -Y verify ran through the arm64 wrapper")


def test_signature_problems_name_what_is_missing():
    ok = {"selfcheck": {"checks": [{"name": "signature", "ok": True, "detail": "signed by SHA256:k"}]},
          "signature": {"origin": {"verified": True, "fingerprint": "SHA256:k"},
                        "refused": {"exit": 8, "stderr": "error: selfcheck signature: manifest.json | does not "
                                                         "match its signature by SHA256:k\n"}}}
    assert picheck.signature_problems(ok, "SHA256:k") == []
    old = copy.deepcopy(ok)
    old["selfcheck"]["checks"] = [{"name": "manifest", "ok": True, "detail": ""}]
    old["signature"] = {"origin": None, "refused": {"exit": 0, "stderr": ""}}
    assert picheck.signature_problems(old, "SHA256:k") == [
        "the bundle's selfcheck has no signature check (its runtime predates signed bundles)",
        "the altered copy was not refused as changed after signing: exit 0, (no error line)"]
    unverified = copy.deepcopy(ok)
    unverified["signature"]["origin"]["verified"] = False
    assert picheck.signature_problems(unverified, "SHA256:k")[0].startswith("the bundle loaded unverified")


def test_load_cost_is_medians_and_the_pairwise_ratio():
    cost = picheck.load_cost({"signed_ms": [12.0, 30.0, 14.0], "unsigned_ms": [2.0, 3.0, 1.0],
                              "check_ms": [10.0, 11.0, 12.0], "baseline_verified": False})
    assert cost == {"pairs": 3, "signed_ms": 14.0, "unsigned_ms": 2.0, "ratio": 10.0, "ratio_min": 6.0,
                    "ratio_max": 14.0, "extra_ms": 13.0, "check_ms": 11.0, "baseline_verified": False}
    assert picheck.load_cost(None) is None
    assert "| x86 | 2.0 | 14.0 | 10.00x [6.00, 14.00] | +13.0 | 11.0 |" == picheck.load_row("x86", cost)


def signed_checks(results: dict, key: Path, keys: Path, out: Path) -> None:
    """pi-check's results for a bundle signed with ``key``, ``keys`` trusted: on the emulated
    Pi 4 and 5 the selfcheck verifies the signature with the userland's arm64 ssh-keygen (its
    wrapper's log: the AArch64 program, exit 0) and refuses the copy with one model byte changed
    and every hash recomputed, in one line with exit 8, as x86 does."""
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True,
                                 text=True).stdout.split()[1]
    assert results["signing"] == {"trusted_keys": str(keys), "fingerprint": fingerprint,
                                  "how": f"the tarball's signature, {keys} trusted"}
    host_refusal = results["host"]["signature"]["refused"]
    assert host_refusal["exit"] == 8
    program = str(ROOT / ".cache" / "pi" / "root" / "usr" / "bin" / "ssh-keygen")
    for row in results["rows"]:
        sig = row["signature"]
        assert sig["checked"]["ok"] and f"signed by {fingerprint} (release key), trusted" in sig["checked"]["detail"]
        assert sig["ssh_keygen"]["program"] == program and sig["ssh_keygen"]["elf_machine"] == "AArch64"
        calls = sig["ssh_keygen"]["calls"]
        assert {c["program"] for c in calls} == {program} and all(c["args"].startswith("-Y verify") for c in calls)
        assert sorted(c["exit"] for c in calls)[-2:] == [0, 255] and sum(c["exit"] != 0 for c in calls) == 1
        assert sig["refused"]["exit"] == 8 and len(sig["refused"]["stderr"].splitlines()) == 1
        assert sig["refused"]["stderr"] == host_refusal["stderr"]  # the same line as x86's, word for word
        assert "manifest.json | does not match its signature" in sig["refused"]["stderr"]
        assert not row["problems"], row["problems"]
    assert results["rows"][0]["load"]["pairs"] == results["host_load"]["pairs"] == 1
    assert "Cost of verification at load" in (out / "results.md").read_text()
