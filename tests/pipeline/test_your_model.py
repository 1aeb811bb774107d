"""Issue 17, "your own model": a model that came trained (plain `model.fit`, saved as .keras) goes
through `make all` untouched; models the device cannot run are refused in one line; a perturbed ONNX
weight and a variant over its budget fail verify; bad inputs over HTTP get a 400 and the server
keeps answering. Real TensorFlow, tf2onnx and onnxruntime throughout, small data.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.support.builds import copied_build, make_all
from tests.support.core import pipeline, ROOT
from tests.support.server import Server

WINE = ROOT / "examples" / "wine" / "data.csv"
EXIT_CODES = (ROOT / "docs" / "exit-codes.md").read_text()

pytestmark = pytest.mark.slow


def documented(code: int, words: str) -> None:
    """``code`` is a row of docs/exit-codes.md's table and its pipeline column says ``words``."""
    row = next((ln for ln in EXIT_CODES.splitlines() if ln.startswith(f"| {code} |")), None)
    assert row is not None, f"exit code {code} is not in docs/exit-codes.md"
    assert words in row.split("|")[2], (code, words, row)


def wine_arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(WINE, newline="") as f:
        rows = list(csv.DictReader(f))
    features = [c for c in rows[0] if c != "cultivar"]
    labels = sorted({r["cultivar"] for r in rows})
    x = np.array([[float(r[c]) for c in features] for r in rows], np.float32)
    y = np.array([labels.index(r["cultivar"]) for r in rows], np.int64)
    return x, y, labels


# --- 1. a model that came trained ---

def test_a_model_trained_with_plain_fit_ships_as_it_is(tmp_path):
    from export.tfenv import tensorflow

    _, keras = tensorflow()
    x, y, labels = wine_arrays()
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x)
    model = keras.Sequential([keras.Input(shape=(x.shape[1],)), norm, keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(len(labels))])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="adam")
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    project = tmp_path / "project"
    project.mkdir()
    model.save(project / "model.keras")
    shutil.copy(WINE, project / "wine.csv")
    (project / "edge.toml").write_text('[data]\nfile = "wine.csv"\ntarget = "cultivar"\n\n'
                                       '[task]\nkind = "classification"\n\n[model]\nfile = "model.keras"\n')
    build, dist = tmp_path / "build", tmp_path / "dist"

    r = make_all(project / "edge.toml", build, dist)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "came trained" in r.stdout and not re.search(r"^train: \d+ epochs", r.stdout, re.M), r.stdout
    history = json.loads((build / "train" / "history.json").read_text())
    assert history["came_trained"] is True and history["epochs"] == 0, history
    assert "The model came trained" in (build / "verify" / "report.md").read_text()
    assert (build / "model.keras").read_bytes() == (project / "model.keras").read_bytes()
    assert (dist / "bundle.tar.gz").is_file()

    with np.load(build / "reference.npz") as z:
        x_val = z["x"][z["group"] == list(z["group_names"]).index("validation")]
    assert len(x_val) == 36 and x_val.shape[1:] == (13,)
    import onnxruntime as ort

    saved = keras.models.load_model(project / "model.keras")
    want = np.asarray(saved(x_val, training=False), np.float64)
    sess = ort.InferenceSession(str(build / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x_val.astype(np.float32)})[0]
    assert got.shape == want.shape == (36, 3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    m = json.loads((dist / "bundle" / "manifest.json").read_text())
    assert m["signature"]["labels"] == labels and m["model"]["variant"] == "onnx-fp32"


# --- 2. models the device cannot run ---

BUILDERS = '''\
import keras


def two_inputs(input_shape, num_outputs):
    a, b = keras.Input(shape=tuple(input_shape)), keras.Input(shape=tuple(input_shape))
    h = keras.layers.Concatenate()([a, b])
    return keras.Model([a, b], keras.layers.Dense(num_outputs)(h))


def returns_none(input_shape, num_outputs):
    return None


class Scan(keras.layers.Layer):
    """A recurrence of the model's own (keras.ops.scan): a loop TFLite keeps as Select TF ops."""

    def call(self, x):
        def step(state, x_t):
            state = 0.5 * state + x_t
            return state, state

        last, _ = keras.ops.scan(step, keras.ops.zeros_like(x[:, 0]), keras.ops.transpose(x, (1, 0, 2)))
        return last


def own_loop(input_shape, num_outputs):
    i = keras.Input(shape=tuple(input_shape))
    return keras.Model(i, keras.layers.Dense(num_outputs)(Scan(name="scan")(i)))


def unknown_length(input_shape, num_outputs):
    i = keras.Input(shape=(None, input_shape[-1]))
    return keras.Model(i, keras.layers.Dense(num_outputs)(keras.layers.GRU(8, name="gru")(i)))


def _recurrent(layer):
    def build(input_shape, num_outputs):
        i = keras.Input(shape=tuple(input_shape))
        return keras.Model(i, keras.layers.Dense(num_outputs)(layer()(i)))
    return build


lstm = _recurrent(lambda: keras.layers.LSTM(8, name="lstm"))
simple_rnn = _recurrent(lambda: keras.layers.SimpleRNN(8, name="simple_rnn"))
bidirectional_lstm = _recurrent(lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), name="bidirectional"))
'''


def sequences(rows: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 20 steps of 3 features; the class: whether the first feature's mean is above 0."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20, 3)).astype(np.float32)
    return x, (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)


def refused(tmp_path: Path, builder: str, data: str = "wine") -> tuple[int, str, Path, Path, str]:
    """Run `pipeline all` on a config naming ``model.py:<builder>``; (exit code, the one
    stderr line, build, dist, stdout). Fails unless stderr is exactly one `error:` line."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.py").write_text(BUILDERS)
    if data == "wine":
        shutil.copy(WINE, project / "data.csv")
        head = '[data]\nfile = "data.csv"\ntarget = "cultivar"\n'
    else:
        x, y = sequences()
        np.savez(project / "data.npz", x=x, y=y)
        head = '[data]\nfile = "data.npz"\n'
    (project / "edge.toml").write_text(head + f'\n[task]\nkind = "classification"\n\n[model]\nbuilder = '
                                       f'"model.py:{builder}"\n\n[train]\nepochs = 1\n')
    build, dist = tmp_path / "build", tmp_path / "dist"
    r = pipeline("all", "--config", str(project / "edge.toml"), "--build", str(build), "--dist", str(dist))
    err = r.stderr.decode()
    lines = [ln for ln in err.splitlines() if not ln.startswith("WARNING:tf2onnx")]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert r.returncode != 0
    assert not (dist / "bundle.tar.gz").exists() and not (dist / "bundle").exists()
    return r.returncode, lines[0], build, dist, r.stdout.decode()


def test_a_two_input_model_is_refused_in_one_line(tmp_path):
    code, line, build, _, out = refused(tmp_path, "two_inputs")
    assert code == 2, line
    documented(2, "config")
    assert "one input and one output tensor are supported" in line, line
    assert "train:" not in out and not (build / "model.keras").exists()


def test_a_loop_of_the_models_own_that_needs_select_tf_ops_is_refused_naming_the_op_and_layer(tmp_path):
    code, line, build, _, _ = refused(tmp_path, "own_loop", data="npz")
    assert code == 1, line
    documented(1, "bad export")
    assert line.startswith("error: export: TFLite needs Select TF ops for tf.TensorList"), line
    assert "in layer 'scan'" in line and "builtin ops only" in line, line
    assert not (build / "model.onnx").exists() and not (build / "model.tflite").exists()


def test_a_recurrent_layer_over_sequences_of_unknown_length_is_refused_before_training(tmp_path):
    code, line, build, _, out = refused(tmp_path, "unknown_length", data="npz")
    assert code == 2, line
    assert line == ("error: config error: model.builder: layer 'gru' (GRU) runs over a sequence of unknown length "
                    "(input shape (None, None, 3)); expected a fixed length (the data's examples are (20, 3): "
                    "keras.Input(shape=(20, 3)) in the builder): the TFLite export unrolls it over its time steps, "
                    "builtin ops only"), line
    assert "train:" not in out and not (build / "model.keras").exists(), out


# --- 2b. recurrent layers: unrolled for TFLite, and verified ---

# A GRU is proven by examples/sensor_gru (test_examples.py: built, verified, no Loop in its ONNX,
# answered on a runtime-only venv).
@pytest.mark.parametrize("builder,onnx_op", [("lstm", "LSTM"), ("simple_rnn", None),
                                             ("bidirectional_lstm", "LSTM")])
def test_a_recurrent_model_exports_with_builtin_ops_and_passes_verify(tmp_path, builder, onnx_op):
    """Each recurrent layer of a fixed sequence length trains, exports (TFLite and its variants
    from the unrolled copy, builtin ops only; ONNX from the fused LSTM op or the unrolled graph,
    never a Loop) and passes verify's parity with Keras on every probe row."""
    import onnx

    project = tmp_path / "project"
    project.mkdir()
    (project / "model.py").write_text(BUILDERS)
    x, y = sequences(160)
    np.savez(project / "data.npz", x=x, y=y)
    (project / "edge.toml").write_text(
        '[data]\nfile = "data.npz"\n\n[task]\nkind = "classification"\n\n'
        f'[model]\nbuilder = "model.py:{builder}"\n\n[train]\nepochs = 12\nlearning_rate = 0.02\n')
    build, dist = tmp_path / "build", tmp_path / "dist"
    r = pipeline("all", "--config", str(project / "edge.toml"), "--build", str(build), "--dist", str(dist))
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, out[-3000:] + err[-3000:]
    assert "verify: passed" in out, out
    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["passed"] and report["baseline"]["beaten"], report["failures"]
    for fmt in ("onnx", "tflite"):
        parity = report["parity"][fmt]
        assert parity["top1_agreement"] == 1.0, (fmt, parity)
        # Float32 rounding alone (the examples measure a few ulp, >= 130 dB): an unrolled copy
        # that computed anything else would be far off.
        assert parity["range"]["scale_ulp"] < 100 and parity["range"]["snr_db"] > 100, (fmt, parity["range"])
    ops = {n.op_type for n in onnx.load(str(build / "model.onnx")).graph.node}
    assert "Loop" not in ops and (onnx_op is None or onnx_op in ops), ops
    index = json.loads((build / "variants" / "index.json").read_text())["variants"]
    assert all(v["built"] for v in index.values()), index  # the TFLite ones from the unrolled copy
    assert report["variants"]["tflite-fp16"]["passed"], report["variants"]["tflite-fp16"]


@pytest.mark.parametrize("builder,why", [
    ("nope", "model.py: model.builder: no function 'nope'"),
    ("returns_none", "returned NoneType, expected a keras.Model"),
])
def test_a_builder_that_is_missing_or_returns_none_exits_2_before_training(tmp_path, builder, why):
    code, line, build, _, out = refused(tmp_path, builder)
    assert code == 2, line
    documented(2, "model builder")
    assert line.startswith("error: config error: ") and why in line, line
    assert "train:" not in out and not (build / "model.keras").exists(), out


# --- 3. a perturbed weight, a variant over its budget (the digits example, built once) ---

@pytest.fixture(scope="module")
def digits(example_build) -> tuple[Path, Path]:
    return example_build("digits")


def stage(build: Path, dist: Path, name: str) -> subprocess.CompletedProcess:
    return pipeline("--config", str(build / "config.toml"), "--build", str(build), "--dist", str(dist), name)


def test_one_onnx_weight_off_by_1e_3_fails_verify_naming_onnx(digits, tmp_path):
    import onnx
    from onnx import numpy_helper

    build, dist = copied_build(digits, tmp_path)
    assert (dist / "bundle.tar.gz").is_file()
    model = onnx.load(str(build / "model.onnx"))
    # The logits' bias (the one float initializer of shape (10,)): it reaches every output row.
    init, = (t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and list(t.dims) == [10])
    a = numpy_helper.to_array(init).copy()
    a.flat[0] += np.float32(1e-3)
    init.CopyFrom(numpy_helper.from_array(a, init.name))
    onnx.checker.check_model(model)
    onnx.save(model, str(build / "model.onnx"))

    r = stage(build, dist, "verify")
    assert r.returncode == 1, r.stderr.decode()
    documented(1, "verify breach")
    lines = r.stderr.decode().splitlines()
    assert any(ln.startswith("error: verify: onnx parity") for ln in lines), lines
    assert not any("tflite" in ln for ln in lines if ln.startswith("error: verify: ")), lines
    assert lines[-1].startswith("error: verify failed: "), lines
    assert not (dist / "bundle.tar.gz").exists() and not (dist / "bundle").exists()
    assert json.loads((build / "verify" / "report.json").read_text())["passed"] is False


BUDGET = "[variants.onnx-int8-static]\nmin_agreement = 1.0\n\n[bundle]\nmodel = \"{}\"\n"


def test_a_variant_over_its_budget_chosen_for_the_bundle_fails_verify(digits, tmp_path):
    build, dist = copied_build(digits, tmp_path, BUDGET.format("onnx-int8-static"))
    r = stage(build, dist, "verify")
    assert r.returncode == 1, r.stderr.decode()
    lines = r.stderr.decode().splitlines()
    assert lines[0].startswith("error: verify: bundle.model onnx-int8-static: top-1 agreement"), lines
    assert "[variants.onnx-int8-static]" in lines[0], lines
    assert not (dist / "bundle.tar.gz").exists() and not (dist / "bundle").exists()
    r = stage(build, dist, "bundle")
    assert r.returncode != 0 and not (dist / "bundle.tar.gz").exists(), r.stderr.decode()


def test_a_variant_over_its_budget_is_reported_and_not_shipped(digits, tmp_path):
    build, dist = copied_build(digits, tmp_path, BUDGET.format("onnx-fp32"))
    shutil.rmtree(dist)
    r = stage(build, dist, "verify")
    assert r.returncode == 0, r.stderr.decode()
    assert "(failing: onnx-int8-static)" in r.stdout.decode(), r.stdout.decode()
    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["passed"] and report["variants"]["onnx-int8-static"]["passed"] is False
    row = next(ln for ln in (build / "verify" / "report.md").read_text().splitlines()
               if ln.startswith("| onnx-int8-static |"))
    assert re.search(r"\| FAIL: top-1 agreement", row), row
    r = stage(build, dist, "bundle")
    assert r.returncode == 0, r.stderr.decode()
    m = json.loads((dist / "bundle" / "manifest.json").read_text())
    assert m["model"]["variant"] == "onnx-fp32", m["model"]


# --- 4. bad inputs for the digits bundle over HTTP ---

def post(url: str, doc) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/predict", data=json.dumps(doc).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def image(value: float = 0.0) -> list:
    return [[[value] for _ in range(8)] for _ in range(8)]


@pytest.mark.parametrize("name,doc,says", [
    ("wrong shape (8, 8)", {"inputs": [[[0.0] * 8 for _ in range(8)]]}, "expected (8, 8, 1)"),
    ("out of the valid range", {"inputs": [image(), image(17.0)]},
     "input[1]: feature 'x[0,0,0]' = 17: outside the valid range [0, 16]"),
    ("non-numeric", {"inputs": [[[["abc"]] * 8] * 8]}, "expected numbers"),
    ("too many values", {"inputs": [[[[0.0, 0.0]] * 8] * 8]}, "expected (n, 8, 8, 1)"),
    ("too many values, flat", {"inputs": [[0.0] * 65]}, "expected (8, 8, 1)"),
])
def test_a_bad_input_over_http_gets_a_400_and_the_server_keeps_answering(digits, tmp_path, name, doc, says):
    bundle = tmp_path / "bundle"
    shutil.copytree(digits[1] / "bundle", bundle)
    s = Server(bundle, "--port", "0")
    try:
        status, body = post(s.url, doc)
        assert status == 400, (name, status, body)
        assert says in body["error"] and "\n" not in body["error"], (name, body)
        status, good = post(s.url, {"inputs": [image(), image(16.0)]})
        assert status == 200, good
        assert np.asarray(good["outputs"]).shape == (2, 10) and len(good["labels"]) == 2
        assert s.proc.poll() is None
    finally:
        assert s.stop() == 0, s.log
    assert not any("Traceback" in ln for ln in s.log), s.log
