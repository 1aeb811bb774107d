"""Bundle: complete, hashed, reproducible, refused when it would not match what was verified."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest

from runtime.manifest import sha256_file
from runtime.signature import Signature
from tests.support.builds import Built, Checkout
from tests.support.core import PRESETS, run_module, sha256_bytes


@pytest.fixture(scope="module")
def members(built) -> dict[str, bytes]:
    with tarfile.open(built.dist / "bundle.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_tarball_holds_the_bundle_and_matches_the_folder(built, members):
    names = {n.removeprefix("bundle/") for n in members}
    assert {"model.onnx", "manifest.json", "manifest.json.sha256", "golden.json", "README.md",
            "requirements.txt", "runtime/__init__.py", "runtime/__main__.py", "runtime/serve.py",
            "systemd/edge-model.socket", "systemd/edge-model.service"} <= names
    for n, data in members.items():
        assert (built.dist / n).read_bytes() == data, n
    assert members["bundle/model.onnx"] == (built.build / "model.onnx").read_bytes()


def test_manifest_describes_and_hashes_everything(members, built):
    m = json.loads(members["bundle/manifest.json"])
    assert members["bundle/manifest.json.sha256"].split()[0].decode() == sha256_bytes(members["bundle/manifest.json"])
    listed = set(m["files"])
    present = {n.removeprefix("bundle/") for n in members} - {"manifest.json", "manifest.json.sha256"}
    assert listed == present
    for name, digest in m["files"].items():
        assert sha256_bytes(members[f"bundle/{name}"]) == digest
    model = m["model"]
    assert model["input"] == {"name": "celsius", "shape": ["batch", 1], "dtype": "float32"}
    assert model["output"] == {"name": "fahrenheit", "shape": ["batch", 1], "dtype": "float32"}
    assert (model["opset"], model["ir_version"], model["min_onnxruntime"]) == (17, 8, "1.12")
    assert m["golden"]["atol"] == 1e-5 and m["golden"]["rtol"] == 1e-6
    # The signature, as runtime.signature writes it: the config's names, the data's feature and
    # target, refused below absolute zero ([runtime] valid_min), observed over the training rows.
    sig = m["signature"]
    assert Signature.of(m).to_dict() == sig
    assert sig["input"] == {"name": "celsius", "dtype": "float32", "shape": [-1, 1], "features": ["celsius"]}
    assert sig["output"] == {"name": "fahrenheit", "dtype": "float32", "shape": [-1, 1], "names": ["fahrenheit"]}
    assert (sig["task"], sig["labels"], sig["output_kind"]) == ("regression", None, "values")
    assert sig["valid"] == {"min": [-273.15], "max": [None]} and sig["observed"] == {"min": [-40.0], "max": [38.0]}
    assert m["valid_input"] == {"min_celsius": -273.15, "max_celsius": None}  # what a runtime before signatures reads
    # The config as verified, its paths cut to names (a checkout elsewhere builds the same bytes),
    # and the data it read, by sha256.
    assert m["config"]["train"]["epochs"] == 2000 and len(m["config_sha256"]) == 64
    assert (m["config"]["data"]["file"], m["config"]["verify"]["oracle"]) == ("celsius.csv", "fahrenheit.py:oracle")
    assert m["data_sha256"] == {"celsius.csv": sha256_file(PRESETS / "celsius.csv")}
    assert {"tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"} <= set(m["tools"])
    # What verify measured, as the report leads with it: ulps, the error at the output's scale
    # and the working-range error, not the full-range absolute error that huge probes inflate
    # (512 degF for TFLite); and the accuracy on the oracle's rows.
    v = m["verify"]
    report = json.loads((built.build / "verify" / "report.json").read_text())
    assert "parity_max_abs_err" not in v and set(v["parity_max_ulp"]) == {"onnx", "tflite"}
    assert m["config"]["verify"]["range"] == [-273.15, 1000.0] and max(v["parity_range_max_abs_err"].values()) < 1e-3
    for key, field in (("parity_range_max_abs_err", "max_abs_err"), ("parity_scale_ulp", "scale_ulp"),
                       ("parity_snr_db", "snr_db")):
        assert v[key] == {f: p["range"][field] for f, p in report["parity"].items()}, key
    assert v["accuracy"] == {n: {k: a[k] for k in ("mae", "max_err", "rows")} for n, a in report["accuracy"].items()}
    assert set(v["accuracy"]) == {"keras", "onnx-fp32", "tflite-fp32"}
    assert all(a["rows"] == 2000 and a["mae"] <= m["config"]["verify"]["max_mae"] for a in v["accuracy"].values())
    reqs = members["bundle/requirements.txt"].decode()
    # Exact pins of the two packages, per Python (markers: no cp310 wheels of the newest)
    pins = [line for line in reqs.splitlines() if "==" in line and not line.startswith("#")]
    assert sorted({line.split("==")[0] for line in pins}) == ["numpy", "onnxruntime"]
    assert all('; python_version ' in line for line in pins) and len(pins) == 4


def test_golden_data_are_keras_outputs_in_the_valid_range(members, built):
    import math

    from pipeline import reference
    from pipeline.probes import EXTREMES

    g = json.loads(members["bundle/golden.json"])
    assert set(g) == {"inputs", "outputs"} and len(g["inputs"]) == len(g["outputs"]) == 64
    assert all(len(row) == 1 for row in g["inputs"] + g["outputs"])  # rows of the one feature, the one value
    x = [row[0] for row in g["inputs"]]
    assert min(x) >= -273.15
    # The valid float extremes (signed zeros, subnormals, huge values: what a device may round
    # or flush differently), the training inputs, the rest evenly over the working range's
    # grid: no random log-magnitude probe.
    extremes = [float(np.float32(e)) for e in EXTREMES if e >= -273.15]
    assert x[: len(extremes)] == extremes
    assert [math.copysign(1, v) for v in x[: len(extremes)]] == [math.copysign(1, e) for e in extremes]  # -0.0 kept
    n = len(extremes) + 7
    assert x[len(extremes) : n] == [-40.0, -10.0, 0.0, 8.0, 15.0, 22.0, 38.0]
    rest = x[n:]
    assert len(rest) == 64 - n and all(-273.15 <= c <= 1000.0 for c in rest) and rest == sorted(rest)
    assert rest[0] == float(np.float32(-273.15)) and rest[-1] == 1000.0
    # Keras's outputs for exactly these rows, as export recorded them
    ref = reference.load(built.build / "reference.npz")
    rows = [int(np.flatnonzero(ref["x"].reshape(-1) == np.float32(v))[0]) for v in x]
    assert np.float32(g["outputs"]).reshape(-1).tolist() == ref["keras_y"].reshape(-1)[rows].tolist()


def test_tarball_files_carry_the_source_date(built, members, tmp_path):
    import subprocess

    from tests.support.core import ROOT

    commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct", "--", "runtime"],
                            capture_output=True, text=True)
    want = int(commit.stdout) if commit.returncode == 0 and commit.stdout.strip() else 1767225600  # no git: the constant
    with tarfile.open(built.dist / "bundle.tar.gz") as tar:
        assert {m.mtime for m in tar.getmembers()} == {want}
    assert json.loads(members["bundle/manifest.json"])["source_date_epoch"] == want

    b = Built(tmp_path, built.config)
    shutil.copytree(built.build, b.build)
    assert b.run("bundle", env={"SOURCE_DATE_EPOCH": "1700000000"}).returncode == 0
    with tarfile.open(b.dist / "bundle.tar.gz") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    r = b.run("bundle", env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        "error: config error: SOURCE_DATE_EPOCH: expected a whole number of seconds since 1970, got 'yesterday'"
    ]


def test_bundle_is_byte_reproducible(built, tmp_path):
    first = (built.dist / "bundle.tar.gz").read_bytes()
    b = Built(tmp_path, built.config)
    shutil.copytree(built.build, b.build)
    assert b.run("bundle").returncode == 0
    assert sha256_bytes((b.dist / "bundle.tar.gz").read_bytes()) == sha256_bytes(first)


def test_bundle_refuses_a_model_changed_after_verify(built, tmp_path):
    b = Built(tmp_path, built.config)
    shutil.copytree(built.build, b.build)
    onnx_path = b.build / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    r = b.run("bundle")
    assert r.returncode == 4
    assert "model.onnx: changed since it was verified" in r.stderr.decode()
    assert not b.dist.exists()


def test_unpacked_tarball_passes_selfcheck(built, tmp_path):
    with tarfile.open(built.dist / "bundle.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    r = run_module("runtime", "selfcheck", cwd=tmp_path / "bundle", env={"PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().splitlines()[-1] == "selfcheck: passed"
    r = run_module("runtime", "predict", "100", cwd=tmp_path / "bundle", env={"PYTHONPATH": ""})
    assert r.returncode == 0 and float(r.stdout) == pytest.approx(211.747, abs=1e-3)


def test_a_commit_that_changes_nothing_in_the_bundle_gives_the_same_release(built, tmp_path):
    """An empty commit and a README-only commit, each followed by a clean bundle, give the same
    sha256 (a release is what it holds); a commit to runtime/ dates the files anew."""
    src = Checkout(tmp_path / "src", date=1_700_000_000)

    def bundle(n: int) -> tuple[str, set[int]]:
        tarball = src.bundle(built, tmp_path / str(n))
        with tarfile.open(tarball) as tar:
            return sha256_file(tarball), {m.mtime for m in tar.getmembers()}

    first, dates = bundle(1)
    assert dates == {1_700_000_000}
    src.commit("doc", 1_700_001_000)
    assert bundle(2) == (first, dates)
    src.commit("README", 1_700_002_000, {"README.md": "Better explained.\n"})
    assert bundle(3) == (first, dates)
    # The control: a commit to a file the bundle copies makes a new release, dated by it.
    src.commit("runtime", 1_700_003_000, {"runtime/requirements.txt": "# a comment\n"})
    changed, dates = bundle(4)
    assert changed != first and dates == {1_700_003_000}
