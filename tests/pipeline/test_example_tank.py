"""examples/tank end to end: a model of two inputs (an 8x8 gauge image and three readings) and two
outputs (a state, classified; a level, in metres), every tensor bound by name. `make all` passes
verify with each output judged on its own, and the bundle, in a venv made from its requirements.txt
alone, answers what Keras answered by name: the API, the CLI (an .npz of one array per input),
POST /predict and the Open Inference Protocol v2 (inputs sent in another order than the model's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from tests.support.core import ROOT
from tests.support.server import Server

ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
INPUTS, OUTPUTS = ("gauge", "readings"), ("state", "level")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tank(example_build):
    return example_build("tank")


@pytest.fixture(scope="module")
def device_python():
    from deploy.devicecheck.runtime_check import venv_for

    return str(venv_for(sys._base_executable, sys.version_info[:2], ROOT / ".cache" / "runtime-venv") / "bin" / "python")


def validation(build):
    """The validation rows by input name and Keras's outputs on them by output name."""
    with np.load(build / "reference.npz") as z:
        sel = z["group"] == list(z["group_names"]).index("validation")
        return {i: z[f"x/{i}"][sel] for i in INPUTS}, {o: z[f"keras_y/{o}"][sel] for o in OUTPUTS}


def close_to_keras(got, want) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_each_output_passes_verify_on_its_own_terms(tank):
    build, _ = tank
    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["passed"] and report["failures"] == [] and report["warnings"] == [], report["failures"]
    assert set(report["inputs"]) == set(INPUTS) and set(report["outputs"]) == set(OUTPUTS)  # JSON keys sorted
    state, level = report["outputs"]["state"], report["outputs"]["level"]
    assert (state["task"], level["task"]) == ("classification", "regression")
    for out, metric in ((state, "accuracy"), (level, "mae")):
        keras = out["accuracy"]["keras"]
        for fmt in ("onnx", "tflite"):
            assert out["accuracy"][f"{fmt}-fp32"][metric] == pytest.approx(keras[metric], rel=1e-3)
            r = out["parity"][fmt]["range"]
            assert r["scale_ulp"] < 100 and (r["snr_db"] is None or r["snr_db"] > 100), (fmt, r)
        error = 1 - keras["accuracy"] if metric == "accuracy" else keras["mae"]
        assert out["baseline"]["beaten"] and error <= (1 - out["baseline"]["margin"]) * out["baseline"]["error"]
    assert state["accuracy"]["keras"]["accuracy"] >= 0.9 and level["accuracy"]["keras"]["mae"] <= 0.1
    assert all(p["top1_agreement"] == 1.0 for p in state["parity"].values())
    # A variant is judged on every output; a failing one names the output it fails on.
    for name, v in report["variants"].items():
        if v.get("budget") is not None and not v["passed"]:
            assert all(part.split(":")[0] in OUTPUTS for part in v["reason"].split("; ")), (name, v["reason"])
    md = (build / "verify" / "report.md").read_text()
    assert "## Output `state`: Accuracy" in md and "## Output `level`: Accuracy" in md


def test_the_bundle_answers_what_keras_answered_by_name_on_a_runtime_only_venv(tank, device_python, tmp_path):
    _, dist = tank
    bundle = dist / "bundle"
    x, keras_y = validation(tank[0])
    m = json.loads((bundle / "manifest.json").read_text())
    sig = m["signature"]
    assert [t["name"] for t in sig["inputs"]] == list(INPUTS) and [t["name"] for t in sig["outputs"]] == list(OUTPUTS)
    state_labels = sig["outputs"][0]["labels"]
    labels = [state_labels[i] for i in keras_y["state"].argmax(axis=1)]

    r = subprocess.run([device_python, "-m", "runtime", "selfcheck"], cwd=bundle, capture_output=True, text=True,
                       env=ENV)
    assert r.returncode == 0 and "selfcheck: passed" in r.stdout, r.stdout + r.stderr

    np.savez(tmp_path / "rows.npz", readings=x["readings"], gauge=x["gauge"])  # not the model's order
    r = subprocess.run([device_python, "-m", "runtime", "predict", "--input", str(tmp_path / "rows.npz"), "--json"],
                       cwd=bundle, capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for o in OUTPUTS:
        close_to_keras(doc["outputs"][o], keras_y[o])
    assert doc["labels"]["state"] == labels

    script = ("import sys, json, numpy as np\nfrom runtime import Runner\nz = np.load(sys.argv[1])\n"
              "with Runner.from_bundle('.') as r:\n    y = r.predict({k: z[k] for k in z.files})\n"
              "print(json.dumps({k: v.tolist() for k, v in y.items()}))\n")
    r = subprocess.run([device_python, "-c", script, str(tmp_path / "rows.npz")], cwd=bundle, capture_output=True,
                       text=True, env={**ENV, "PYTHONPATH": str(bundle)})
    assert r.returncode == 0, r.stderr
    api = json.loads(r.stdout)
    for o in OUTPUTS:
        close_to_keras(api[o], keras_y[o])

    # stream: one JSON object a line by input name (not the model's order); each answer
    # "state=<label>,<3 values> level=<value>"
    lines = "".join(json.dumps({k: x[k][i].tolist() for k in reversed(list(x))}) + "\n" for i in range(len(labels)))
    r = subprocess.run([device_python, "-m", "runtime", "stream"], cwd=bundle, input=lines, capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    answers = [dict(cell.split("=", 1) for cell in line.split(" ")) for line in r.stdout.splitlines()]
    assert len(answers) == len(labels) and [a["state"].split(",")[0] for a in answers] == labels
    close_to_keras([[float(v) for v in a["state"].split(",")[1:]] for a in answers], keras_y["state"])
    close_to_keras([[float(a["level"])] for a in answers], keras_y["level"].reshape(len(labels), -1))

    s = Server(bundle, "--port", "0")
    try:
        body = json.dumps({"inputs": {k: v.tolist() for k, v in reversed(x.items())}}).encode()
        with urllib.request.urlopen(urllib.request.Request(s.url + "/predict", data=body), timeout=60) as resp:
            doc = json.loads(resp.read())
        for o in OUTPUTS:
            close_to_keras(doc["outputs"][o], keras_y[o])
        assert doc["labels"]["state"] == labels
        v2 = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.reshape(-1).tolist()}
                         for k, v in reversed(x.items())]}
        req = urllib.request.Request(f"{s.url}/v2/models/{m['model']['name']}/infer", data=json.dumps(v2).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            outs = {t["name"]: t for t in json.loads(resp.read())["outputs"]}
        assert set(outs) == set(OUTPUTS)
        for o in OUTPUTS:
            close_to_keras(np.asarray(outs[o]["data"]).reshape(outs[o]["shape"]), keras_y[o])
    finally:
        assert s.stop() == 0, s.log
