"""Export of a Keras model with several inputs and several outputs: every format binds each
tensor by its Keras name, never by position (TFLite reorders inputs and outputs, tf2onnx renames
them), in float32 and in every reduced-precision variant, at batch n and row by row.

One small functional model, built and exported once for the module (real TensorFlow, tf2onnx,
onnxruntime and LiteRT). Its names are chosen so that sorting them (the TFLite signature's
order, and tf2onnx's order of a dict's outputs) differs from the Keras order: a runner that
bound by position would feed "alpha" to "zeta" and read "kind" as "level".
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # ~40 s: the model's export and its six variants, and a worker process

INPUTS = ["zeta", "alpha"]  # Keras order; sorted: alpha, zeta
OUTPUTS = ["level", "kind"]  # Keras order; sorted: kind, level


def build_model(keras):
    """An image-like input through a Conv2D and readings of very different scales through an
    adapted Normalization (its mean and variance are captured tensors: tf2onnx's frozen-graph
    path), joined; a regression output and a softmax."""
    keras.utils.set_random_seed(7)
    zeta = keras.Input((4, 4, 1), name="zeta")
    alpha = keras.Input((3,), name="alpha")
    norm = keras.layers.Normalization()
    norm.adapt(readings(np.random.RandomState(1), 256))
    image = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(zeta))
    h = keras.layers.Concatenate()([image, keras.layers.Dense(6, activation="relu")(norm(alpha))])
    h = keras.layers.Dense(8, activation="relu")(h)
    level = keras.layers.Dense(1, name="level")(h)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(h)
    return keras.Model([zeta, alpha], [level, kind])


def readings(rs, n: int) -> np.ndarray:
    return (rs.normal(size=(n, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -50.0]).astype(np.float32)


def rows(seed: int, n: int) -> dict[str, np.ndarray]:
    """n examples, the inputs in the Keras order."""
    rs = np.random.RandomState(seed)
    return {"zeta": rs.rand(n, 4, 4, 1).astype(np.float32), "alpha": readings(rs, n)}


def keras_outputs(model, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [t.name for t in model.inputs]
    y = model([feed[n] for n in names], training=False)
    return {n: np.asarray(t, np.float32) for n, t in zip(model.output_names, y)}


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """The model exported once: ONNX, TFLite and every variant written to files, the Keras outputs
    on the feed, the variants' reasons where one is not built."""
    from export import keras3_savedmodel, onnx_export, tflite_export
    from export import variants as V
    from export.tfenv import tensorflow

    _, keras = tensorflow()
    tmp = tmp_path_factory.mktemp("multi")
    model = build_model(keras)
    ins, outs = keras3_savedmodel.tensor_names(model)
    saved = keras3_savedmodel.write_savedmodel(model, tmp / "savedmodel", ins, outs)
    onnx_model, _ = onnx_export.convert(saved, ins, outs, 17, 8)
    files = {"onnx-fp32": tmp / "model.onnx", "tflite-fp32": tmp / "model.tflite"}
    files["onnx-fp32"].write_bytes(onnx_model.SerializeToString())
    files["tflite-fp32"].write_bytes(tflite_export.convert(saved))
    calibration = {n: x for n, x in rows(2, 64).items()}
    not_built = {}
    for name in V.VARIANTS:
        try:
            if V.fmt(name) == "onnx":
                data = V.build_onnx(name, onnx_model, calibration, ins).SerializeToString()
            else:
                data = V.build_tflite(name, saved, calibration)
        except V.VariantNotBuilt as e:
            not_built[name] = str(e)
            continue
        files[name] = tmp / f"{name}{V.suffix(name)}"
        files[name].write_bytes(data)
    feed = rows(3, 9)
    return SimpleNamespace(model=model, ins=ins, outs=outs, saved=saved, onnx=onnx_model, files=files,
                           not_built=not_built, calibration=calibration, feed=feed, want=keras_outputs(model, feed))


def runner(name: str, path: Path):
    from pipeline.runners import OnnxRunner, TFLiteRunner

    return OnnxRunner(path) if name.startswith("onnx") else TFLiteRunner(path)


def assert_close(got: dict, want: dict, rtol: float, what: str) -> None:
    """Every output by name within ``rtol`` of that output's largest magnitude (at least 1)."""
    assert sorted(got) == sorted(want), what
    for name, w in want.items():
        assert got[name].shape == w.shape, (what, name, got[name].shape, w.shape)
        allowed = rtol * max(1.0, float(np.abs(w).max()))
        err = float(np.abs(got[name] - w).max())
        assert err <= allowed, f"{what}: output {name!r} off by {err:.3g} > {allowed:.3g}"


def test_the_names_are_the_keras_models_and_sorting_them_changes_their_order(multi):
    from export import keras3_savedmodel

    assert keras3_savedmodel.tensor_names(multi.model) == (INPUTS, OUTPUTS)
    assert sorted(INPUTS) != INPUTS and sorted(OUTPUTS) != OUTPUTS  # what makes binding by position fail


def test_the_onnx_graph_has_exactly_the_keras_names_in_the_keras_order_each_with_a_batch_dim(multi):
    import onnx

    from export import onnx_export

    onnx.checker.check_model(multi.onnx, full_check=True)
    d = onnx_export.describe(multi.onnx)
    assert [i["name"] for i in d["inputs"]] == INPUTS and [o["name"] for o in d["outputs"]] == OUTPUTS
    assert [i["shape"] for i in d["inputs"]] == [["batch", 4, 4, 1], ["batch", 3]]
    assert [o["shape"] for o in d["outputs"]] == [["batch", 1], ["batch", 3]]
    assert {i["dtype"] for i in d["inputs"] + d["outputs"]} == {"float32"}


def test_the_tflite_signature_keys_are_the_keras_names(multi):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(multi.files["tflite-fp32"]))
    sig = it.get_signature_list()["serving_default"]
    assert sorted(sig["inputs"]) == sorted(INPUTS) and sorted(sig["outputs"]) == sorted(OUTPUTS)
    ops = {op["op_name"] for op in it._get_ops_details()}
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_float32_matches_keras_output_by_output_at_batch_n_and_row_by_row(multi, fmt):
    r = runner(fmt, multi.files[f"{fmt}-fp32"])
    assert sorted(r.inputs) == sorted(INPUTS) and sorted(r.outputs) == sorted(OUTPUTS)
    # float32 rounding alone: the same ops in another order (XNNPACK, onnxruntime's kernels)
    assert_close(r.infer(multi.feed), multi.want, 1e-5, f"{fmt} batch {len(multi.feed['zeta'])}")
    assert_close(r.infer_each(multi.feed), multi.want, 1e-5, f"{fmt} row by row")


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_the_feeds_order_changes_nothing(multi, fmt):
    r = runner(fmt, multi.files[f"{fmt}-fp32"])
    swapped = dict(reversed(list(multi.feed.items())))
    assert list(swapped) != list(multi.feed)
    for infer in ("infer", "infer_each"):
        a, b = getattr(r, infer)(multi.feed), getattr(r, infer)(swapped)
        assert sorted(a) == sorted(b) and all(np.array_equal(a[n], b[n]) for n in a), infer


def test_a_tflite_feed_without_every_input_is_refused(multi):
    r = runner("tflite", multi.files["tflite-fp32"])
    with pytest.raises(ValueError, match=r"inputs \['zeta'\] given, expected \['alpha', 'zeta'\]"):
        r.infer({"zeta": multi.feed["zeta"]})
    with pytest.raises(ValueError, match="different numbers of rows"):
        r.infer_each({"zeta": multi.feed["zeta"], "alpha": multi.feed["alpha"][:2]})


# Loose bounds, relative to each output's largest magnitude (at least 1): fp16 weights round at
# about 1e-3; int8 steps are 1/256 of a calibrated range, a few of them after four layers.
BOUNDS = {"onnx-fp16": 1e-2, "tflite-fp16": 1e-2, "onnx-int8-dynamic": 0.1, "tflite-int8-dynamic": 0.1,
          "onnx-int8-static": 0.15, "tflite-int8-full": 0.15}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_every_variant_builds_and_is_close_to_keras_by_name(multi, name):
    assert name in multi.files, f"{name} not built: {multi.not_built.get(name)}"
    r = runner(name, multi.files[name])
    assert_close(r.infer(multi.feed), multi.want, BOUNDS[name], name)
    assert_close(r.infer_each(multi.feed), multi.want, BOUNDS[name], f"{name} row by row")
    top = np.argmax(r.infer_each(multi.feed)["kind"], axis=1)
    assert np.mean(top == np.argmax(multi.want["kind"], axis=1)) >= 0.75, name


def test_full_integer_tflite_takes_and_gives_int8_on_every_tensor(multi):
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_path=str(multi.files["tflite-int8-full"])).get_signature_runner()
    details = list(sig.get_input_details().values()) + list(sig.get_output_details().values())
    assert len(details) == 4 and all(d["dtype"] == np.int8 for d in details)


def test_the_static_onnx_variant_keeps_each_inputs_standardization_in_float(multi):
    """The readings' Normalization (Sub and Mul on "alpha", scales 1 to 100) is left out of the
    quantization; the image input's Conv is quantized."""
    import onnx

    from export.variants import input_arithmetic

    g = multi.onnx.graph
    kept = input_arithmetic(g)
    ops = {n.name: n for n in g.node}
    assert kept and ops[kept[0]].op_type in ("Sub", "Mul", "Add", "Div") and "alpha" in ops[kept[0]].input
    q = onnx.load(str(multi.files["onnx-int8-static"])).graph
    readers = {n.op_type for n in q.node if "alpha" in n.input}
    assert readers == {ops[kept[0]].op_type}, readers  # float alpha, not a QuantizeLinear
    made_by = {o: n.op_type for n in q.node for o in n.output}
    convs = [n for n in q.node if n.op_type == "Conv"]
    assert convs and all(made_by.get(n.input[0]) == "DequantizeLinear" for n in convs)  # int8 activations


def test_the_tflite_worker_builds_from_dict_calibration_what_one_process_builds(multi, tmp_path):
    from export.variants import build_tflite
    from pipeline.tflite_worker import Worker

    w = Worker()
    try:
        w.submit(multi.saved, multi.calibration, ["tflite-int8-full"], tmp_path / "worker")
        done = w.result()
    finally:
        w.close()
    assert done is not None and isinstance(done["tflite-int8-full"], bytes), done
    assert done["tflite-int8-full"] == build_tflite("tflite-int8-full", multi.saved, multi.calibration)


def test_names_that_are_not_the_models_are_refused(multi, tmp_path):
    from export import keras3_savedmodel
    from export.errors import ExportError

    with pytest.raises(ExportError, match=r"not the model's own inputs \['zeta', 'alpha'\]"):
        keras3_savedmodel.write_savedmodel(multi.model, tmp_path / "sm", ["zeta", "beta"], OUTPUTS)


def test_a_recurrent_model_of_several_inputs_is_unrolled_for_tflite_and_bound_by_name(tmp_path):
    """The unrolled clone (export/recurrent.py) keeps the Keras names: ONNX (from the clone
    where tf2onnx would make a Loop) and TFLite give Keras's outputs by name."""
    from export import keras3_savedmodel, onnx_export, recurrent, tflite_export
    from export.tfenv import tensorflow
    from pipeline.runners import OnnxRunner, TFLiteRunner

    _, keras = tensorflow()
    keras.utils.set_random_seed(3)
    seq, extra = keras.Input((5, 2), name="zseq"), keras.Input((3,), name="aextra")
    h = keras.layers.Concatenate()([keras.layers.GRU(4)(seq), extra])
    model = keras.Model([seq, extra], [keras.layers.Dense(2, name="yb")(h), keras.layers.Dense(1, name="xa")(h)])
    ins, outs = keras3_savedmodel.tensor_names(model)
    rs = np.random.RandomState(0)
    feed = {"zseq": rs.rand(6, 5, 2).astype(np.float32), "aextra": rs.rand(6, 3).astype(np.float32)}
    clone = recurrent.unrolled(model)
    assert keras3_savedmodel.tensor_names(clone) == (ins, outs)
    assert recurrent.check_same(model, clone, feed, keras_outputs) <= 1e-5
    saved = keras3_savedmodel.write_savedmodel(model, tmp_path / "saved", ins, outs)
    unrolled = keras3_savedmodel.write_savedmodel(clone, tmp_path / "unrolled", ins, outs)
    onnx_model, _ = onnx_export.convert(saved, ins, outs, 17, 8, unrolled=unrolled)
    assert "Loop" not in {n.op_type for n in onnx_model.graph.node}
    # Variables only (no Normalization): tf2onnx's own path, which lists a dict's outputs sorted (xa, yb).
    g = onnx_model.graph
    assert ([i.name for i in g.input], [o.name for o in g.output]) == (["zseq", "aextra"], ["yb", "xa"])
    (tmp_path / "m.onnx").write_bytes(onnx_model.SerializeToString())
    (tmp_path / "m.tflite").write_bytes(tflite_export.convert(unrolled))
    want = keras_outputs(model, feed)
    for r in (OnnxRunner(tmp_path / "m.onnx"), TFLiteRunner(tmp_path / "m.tflite")):
        assert_close(r.infer_each(feed), want, 1e-5, type(r).__name__)


def test_tflite_outputs_of_one_shape_in_another_order_in_the_flatbuffer_are_bound_by_name(tmp_path):
    """Two inputs and two outputs of the same shape, so that binding by position would run and
    answer wrongly rather than fail: the flatbuffer lists the outputs in the signature's sorted
    order, not the Keras order, and the runner still gives each output its own values."""
    from ai_edge_litert.interpreter import Interpreter

    from export import keras3_savedmodel, tflite_export
    from export.tfenv import tensorflow
    from pipeline.runners import TFLiteRunner

    _, keras = tensorflow()
    keras.utils.set_random_seed(5)
    zeta, alpha = keras.Input((3,), name="zeta"), keras.Input((3,), name="alpha")
    d = keras.layers.Subtract()([zeta, alpha])
    model = keras.Model([zeta, alpha], [keras.layers.Dense(3, name="yb")(d),
                                        keras.layers.Dense(3, name="xa")(keras.layers.Multiply()([d, alpha]))])
    ins, outs = keras3_savedmodel.tensor_names(model)
    saved = keras3_savedmodel.write_savedmodel(model, tmp_path / "saved", ins, outs)
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite_export.convert(saved))

    it = Interpreter(model_path=str(path))
    by_index = {d["index"]: k for k, d in it.get_signature_runner().get_output_details().items()}
    flatbuffer_order = [by_index[d["index"]] for d in it.get_output_details()]
    assert flatbuffer_order != outs, "this model no longer shows the reordering it is here to test"
    rs = np.random.RandomState(0)
    feed = {"zeta": rs.rand(4, 3).astype(np.float32), "alpha": rs.rand(4, 3).astype(np.float32)}
    want = keras_outputs(model, feed)
    r = TFLiteRunner(path)
    assert_close(r.infer(feed), want, 1e-5, "batch 4")
    assert_close(r.infer_each(feed), want, 1e-5, "row by row")
