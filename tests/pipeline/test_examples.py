"""The shipped examples (examples/*/edge.toml), end to end: `make all CONFIG=...` passing verify on
held-out rows, then the bundle in a venv made from its requirements.txt alone (the device's
situation) answering what Keras answered, through the API, the CLI, stream and the HTTP service;
a rebuild giving the same bundle, byte for byte (one example); and the committed data being what
examples/make_data.py writes. (Models the pipeline refuses: tests/pipeline/test_your_model.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.support.builds import make_all
from tests.support.core import ROOT, sha256_file
from tests.support.server import Server

# The examples of one input and one output; examples/tank (two of each, bound by name) has its own
# tests: tests/pipeline/test_example_tank.py.
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/edge.toml") if p.parent.name != "tank")
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=EXAMPLES)
def example(request, example_build):
    """One example built from empty (once per session): its name, build and dist folders."""
    return (request.param, *example_build(request.param))


@pytest.fixture(scope="module")
def device_python():
    from deploy.devicecheck.runtime_check import venv_for

    return str(venv_for(sys._base_executable, sys.version_info[:2], ROOT / ".cache" / "runtime-venv") / "bin" / "python")


def reference_rows(build: Path) -> tuple[np.ndarray, np.ndarray]:
    """The validation rows and Keras's outputs on them (what export recorded)."""
    with np.load(build / "reference.npz") as z:
        sel = z["group"] == list(z["group_names"]).index("validation")
        return z["x"][sel], z["keras_y"][sel]


def close_to_keras(got, want) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_the_example_passes_verify_on_held_out_rows(example):
    name, build, dist = example
    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["passed"] and report["failures"] == [], report["failures"]
    assert set(report["accuracy"]) == {"keras", "onnx-fp32", "tflite-fp32"}
    keras = report["accuracy"]["keras"]
    assert keras["rows"] == len(reference_rows(build)[0]) > 0
    metric = "accuracy" if report["task"] == "classification" else "mae"
    for fmt, model in (("onnx", "onnx-fp32"), ("tflite", "tflite-fp32")):
        acc, parity = report["accuracy"][model], report["parity"][fmt]
        assert acc["rows"] == keras["rows"] and acc[metric] == pytest.approx(keras[metric], rel=1e-3), (model, acc)
        if report["task"] == "classification":
            assert parity["top1_agreement"] == 1.0, fmt
        # Float32 against float32 Keras: rounding only, a few ulp at the output's scale (>= 130 dB
        # measured; None: no difference at all); the fp16 variants measure ~70 dB, so 100 dB tells
        # the two apart.
        r = parity["range"]
        assert r["scale_ulp"] < 100 and (r["snr_db"] is None or r["snr_db"] > 100), (fmt, r)
    # Each example learned something: it removes at least the margin's share of the trivial baseline's error.
    base = report["baseline"]
    assert base["beaten"] and base["check"] == "fail" and report["warnings"] == [], base
    error = 1 - keras["accuracy"] if metric == "accuracy" else keras["mae"]
    assert error <= (1 - base["margin"]) * base["error"], (error, base)
    for png in ("validation.png", "accuracy-vs-size.png"):
        assert (build / "verify" / png).stat().st_size > 1000
    assert (build / "train" / "loss.png").stat().st_size > 1000
    # No control flow in the ONNX graph: a recurrent example (sensor_gru) comes out unrolled, the
    # graph onnxruntime runs fastest, never a Loop (test_your_model.py proves the other recurrent layers).
    import onnx

    ops = {n.op_type for n in onnx.load(str(build / "model.onnx")).graph.node}
    assert not ops & {"Loop", "Scan", "If"}, ops
    m = json.loads((dist / "bundle" / "manifest.json").read_text())
    assert m["model"]["name"] == name
    assert m["signature"]["input"]["shape"][0] == -1 and len(m["signature"]["input"]["features"]) == int(
        np.prod(m["signature"]["input"]["shape"][1:]))


def test_the_bundle_answers_what_keras_answered_on_a_runtime_only_venv(example, device_python, tmp_path):
    name, build, dist = example
    bundle = dist / "bundle"
    x, keras_y = reference_rows(build)
    m = json.loads((bundle / "manifest.json").read_text())
    classification = m["signature"]["task"] == "classification"
    labels = [m["signature"]["labels"][i] for i in keras_y.argmax(axis=1)] if classification else None

    r = subprocess.run([device_python, "-m", "runtime", "selfcheck"], cwd=bundle, capture_output=True, text=True,
                       env=ENV)
    assert r.returncode == 0 and "selfcheck: passed" in r.stdout, r.stdout + r.stderr

    np.save(tmp_path / "rows.npy", x)
    r = subprocess.run([device_python, "-m", "runtime", "predict", "--input", str(tmp_path / "rows.npy"), "--json"],
                       cwd=bundle, capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    close_to_keras(doc["outputs"], keras_y)
    if classification:
        assert doc["labels"] == labels

    lines = "".join(json.dumps(row.tolist()) + "\n" for row in x)
    r = subprocess.run([device_python, "-m", "runtime", "stream"], cwd=bundle, input=lines,
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    answers = [line.split(",") for line in r.stdout.splitlines()]  # classification: label first, then outputs
    assert len(answers) == len(x)
    if classification:
        assert [a[0] for a in answers] == labels
        answers = [a[1:] for a in answers]
    close_to_keras([[float(v) for v in a] for a in answers], keras_y.reshape(len(x), -1))

    s = Server(bundle, "--port", "0")
    try:
        body = json.dumps({"inputs": x.tolist()}).encode()
        with urllib.request.urlopen(urllib.request.Request(s.url + "/predict", data=body), timeout=60) as resp:
            doc = json.loads(resp.read())
        close_to_keras(doc["outputs"], keras_y)
        if classification:
            assert doc["labels"] == labels
        v2 = {"inputs": [{"name": m["signature"]["input"]["name"], "shape": list(x.shape), "datatype": "FP32",
                          "data": x.reshape(-1).tolist()}]}
        req = urllib.request.Request(f"{s.url}/v2/models/{name}/infer", data=json.dumps(v2).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            out = json.loads(resp.read())["outputs"][0]
        close_to_keras(np.asarray(out["data"]).reshape(out["shape"]), keras_y)
    finally:
        assert s.stop() == 0, s.log


def test_a_second_build_of_an_example_gives_the_same_bundle(example_build, tmp_path):
    """The test run's one rebuild from scratch (retrained, exported, verified and bundled again),
    made on the example with the most to it (a CNN on images, its fp16 and int8 variants): the
    pipeline's code is the same for every config. The same bundle, byte for byte, and the same
    bytes for every variant. (tests/pipeline/test_bundle.py rebundles the default build.)"""
    build, dist = example_build("digits")
    r = make_all(ROOT / "examples" / "digits" / "edge.toml", tmp_path / "build", tmp_path / "dist")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sha256_file(tmp_path / "dist" / "bundle.tar.gz") == sha256_file(dist / "bundle.tar.gz")
    first = json.loads((build / "variants" / "index.json").read_text())["variants"]
    again = json.loads((tmp_path / "build" / "variants" / "index.json").read_text())["variants"]
    assert {n: v["sha256"] for n, v in again.items()} == {n: v["sha256"] for n, v in first.items()}
    assert len(first) == 6


def test_the_committed_example_data_is_what_make_data_writes_from_scikit_learn():
    r = subprocess.run([sys.executable, "examples/make_data.py", "--check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
