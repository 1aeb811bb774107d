"""Export: the ONNX and TFLite files are what a device expects."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from runtime import compat
from tests.support.core import ROOT


@pytest.fixture(scope="module")
def model(built):
    return onnx.load(str(built.build / "model.onnx"))


def test_onnx_passes_the_full_checker(model):
    onnx.checker.check_model(model, full_check=True)


def test_onnx_io_names_dtypes_and_dynamic_batch(model):
    (i,) = model.graph.input
    (o,) = model.graph.output
    assert (i.name, o.name) == ("celsius", "fahrenheit")
    for vi in (i, o):
        t = vi.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        dims = [(d.dim_param, d.dim_value) for d in t.shape.dim]
        assert dims == [("batch", 0), ("", 1)]


def test_onnx_has_no_stray_opset_imports_and_the_configured_versions(model):
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ir_version == 8
    assert {n.domain for n in model.graph.node} <= {""}


def test_docs_state_an_oldest_onnxruntime_that_can_load_the_file(model):
    doc = (ROOT / "docs" / "bundle.md").read_text()  # its "ONNX versions" section
    m = re.search(r"oldest onnxruntime (?:it supports|supported)[^0-9]*(\d+\.\d+)", doc, re.I)
    assert m, "docs/bundle.md must state the oldest onnxruntime it supports"
    oldest = m.group(1)
    opset, ir = model.opset_import[0].version, model.ir_version
    assert compat.supports(oldest, opset, ir)
    assert compat.oldest_onnxruntime(opset, ir) == oldest
    # and releases of the last two years (1.20 shipped in November 2024) load it
    assert compat.supports("1.20.0", opset, ir)


def test_compat_table_refuses_what_older_releases_cannot_load():
    assert compat.oldest_onnxruntime(17, 8) == "1.12"
    assert compat.oldest_onnxruntime(18, 8) == "1.14"
    assert compat.oldest_onnxruntime(17, 10) == "1.18"
    assert not compat.supports("1.11.1", 17, 8)
    assert not compat.supports("1.17.3", 17, 10)  # IR 10 needs 1.18
    assert compat.supports("1.18.0", 17, 10)
    assert not compat.supports("0.5.0", 13, 7)
    with pytest.raises(ValueError, match="newer than any release"):
        compat.oldest_onnxruntime(30, 8)


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_onnx_runs_at_several_batch_sizes(built, batch):
    s = ort.InferenceSession(str(built.build / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.linspace(-40, 100, batch, dtype=np.float32).reshape(-1, 1)
    (y,) = s.run(None, {"celsius": x})
    assert y.shape == (batch, 1)
    np.testing.assert_allclose(y, 1.8 * x + 32, atol=0.3)


def test_tflite_uses_builtin_ops_only_and_runs_at_two_batch_sizes(built):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(built.build / "model.tflite"))
    ops = {op["op_name"] for op in it._get_ops_details()}
    assert ops and not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    runner = it.get_signature_runner()
    for batch in (1, 5):
        x = np.linspace(0, 100, batch, dtype=np.float32).reshape(-1, 1)
        y = runner(celsius=x)["fahrenheit"]
        assert y.shape == (batch, 1)
        np.testing.assert_allclose(y, 1.8 * x + 32, atol=0.3)


HARD_ACTIVATIONS = '''
def build(input_shape, num_outputs):
    import keras

    i = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Activation("hard_swish")(keras.layers.Dense(16)(i))
    gate = keras.layers.Dense(16, activation="hard_sigmoid")(h)  # squeeze-and-excite's gate
    h = keras.layers.Multiply()([h, gate])
    return keras.Model(i, keras.layers.Dense(num_outputs)(h))
'''


@pytest.mark.slow
def test_a_keras_hard_swish_and_hard_sigmoid_come_out_fused_and_pass_verify(tmp_path):
    """The graph pass (export/onnx_fuse.py) on what tf2onnx really writes for Keras's activations."""
    import json
    import shutil

    from tests.support.core import pipeline

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "examples" / "wine" / "data.csv", project / "data.csv")
    (project / "model.py").write_text(HARD_ACTIVATIONS)
    (project / "edge.toml").write_text(
        '[data]\nfile = "data.csv"\ntarget = "cultivar"\n\n[task]\nkind = "classification"\n\n'
        '[model]\nbuilder = "model.py:build"\n\n[train]\nepochs = 30\nbatch_size = 16\nlearning_rate = 0.003\n\n'
        '[variants]\nonnx-fp16 = {}\n')
    build = tmp_path / "build"
    r = pipeline("all", "--config", str(project / "edge.toml"), "--build", str(build), "--dist", str(tmp_path / "dist"))
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    index = json.loads((build / "variants" / "index.json").read_text())
    assert index["graph_pass"]["rewrites"] == {"HardSwish": 1, "HardSigmoid": 1}
    export_line = next(ln for ln in out.splitlines() if ln.startswith("export: "))
    gp = index["graph_pass"]
    assert f"graph pass {gp['nodes_before']} -> {gp['nodes_after']} nodes" in export_line
    for name in ("model.onnx", "variants/onnx-fp16.onnx"):
        ops = [n.op_type for n in onnx.load(str(build / name)).graph.node]
        assert ops.count("HardSwish") == 1 and ops.count("HardSigmoid") == 1 and "Clip" not in ops, (name, ops)
    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["passed"] and report["parity"]["onnx"]["passed"] and report["graph_pass"] == gp
    assert report["variants"]["onnx-fp16"]["passed"]
    assert "## The ONNX graph pass" in (build / "verify" / "report.md").read_text()
