"""The ONNX graph pass (export/onnx_fuse.py) on small graphs built with onnx.helper: each pattern
rewritten when it is exact, left alone when a constant differs, when a tensor it would remove
has another reader or is a graph output; outputs equal before and after within float rounding,
in onnxruntime. No TensorFlow here (the pipeline's own export of a hard-swish model is in
test_export.py, marked slow)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.onnx_fuse import SIXTH, fuse

F = TensorProto.FLOAT


def const(name: str, value, shape=()) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full(shape, value, np.float32), name)


def model(nodes, inits, outputs=("y",), shape=("n", 8, 4, 4), opset=17, shapes=None, types=None
          ) -> onnx.ModelProto:
    """One float input x of ``shape``; every output float, of x's shape, unless ``shapes`` and
    ``types`` say otherwise."""
    shapes, types = shapes or {}, types or {}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, list(shape))],
                          [helper.make_tensor_value_info(o, types.get(o, F), list(shapes.get(o, shape)))
                           for o in outputs], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def hard_sigmoid_nodes(x="x", out="s", add3=3.0, lo=0.0, hi=6.0, scale=SIXTH, div=False, c_shape=(1, 1, 1, 1)):
    """Add(x, 3) -> Clip(0, 6) -> Mul(1/6) (or Div(6)), as tf2onnx writes it for Keras."""
    inits = [const("three", add3, c_shape), const("lo", lo), const("hi", hi),
             const("six" if div else "sixth", scale if not div else 6.0 if scale is SIXTH else scale)]
    nodes = [helper.make_node("Add", [x, "three"], ["a"]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["c"]),
             helper.make_node("Div", ["c", "six"], [out]) if div else helper.make_node("Mul", ["c", "sixth"], [out])]
    return nodes, inits


def hard_swish(**kw) -> onnx.ModelProto:
    nodes, inits = hard_sigmoid_nodes(**kw)
    rank = max(4, len(kw.get("c_shape", ())))  # a constant of higher rank widens y
    return model(nodes + [helper.make_node("Mul", ["x", "s"], ["y"])], inits, shapes={"y": [None] * rank})


def run(m: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})


def inputs(shape=(3, 8, 4, 4)) -> np.ndarray:
    """Random values over the interesting range, with the kinks (-3, 0, 3) and far values in."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-8, 8, shape).astype(np.float32)
    x.flat[:7] = [-3, 3, 0, -1e30, 1e30, -3.0000002, 2.9999998]
    return x


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, x: np.ndarray | None = None) -> None:
    """Equal within float rounding: 2 float32 steps at the scale of the outputs of the inputs in
    -8..8, and 2 steps of each value's own for the far inputs (+-1e30)."""
    x = inputs() if x is None else x
    for yb, ya in zip(run(before, x), run(after, x)):
        scale = np.float32(np.abs(yb[np.abs(yb) < 1e6]).max())
        np.testing.assert_allclose(ya, yb, rtol=2 * np.finfo(np.float32).eps, atol=2 * np.spacing(scale))


def fused(m: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    after = onnx.ModelProto.FromString(m.SerializeToString())
    record = fuse(after)
    onnx.checker.check_model(after, full_check=True)
    return after, record


def ops(m: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in m.graph.node)


def test_hard_swish_becomes_one_node_and_computes_the_same():
    before = hard_swish()
    after, record = fused(before)
    assert [n.op_type for n in after.graph.node] == ["HardSwish"]
    assert list(after.graph.node[0].input) == ["x"] and list(after.graph.node[0].output) == ["y"]
    assert not after.graph.initializer  # the pattern's constants went with it
    assert record["rewrites"] == {"HardSwish": 1}
    assert (record["nodes_before"], record["nodes_after"]) == (4, 1)
    assert record["ops_before"] == {"Add": 1, "Clip": 1, "Mul": 2} and record["ops_after"] == {"HardSwish": 1}
    assert_same_outputs(before, after)


def test_hard_swish_with_the_operands_swapped_and_div_by_6():
    nodes, inits = hard_sigmoid_nodes(div=True, c_shape=())
    nodes[0].input[:] = ["three", "x"]
    before = model(nodes + [helper.make_node("Mul", ["s", "x"], ["y"])], inits)
    after, record = fused(before)
    assert ops(after) == {"HardSwish": 1} and record["rewrites"] == {"HardSwish": 1}
    assert_same_outputs(before, after)


def test_hard_sigmoid_scaling_another_tensor_becomes_hard_sigmoid():
    """Squeeze-and-excite: the gate multiplies the block's input, not its own: HardSigmoid, then the Mul."""
    nodes, inits = hard_sigmoid_nodes(x="g", c_shape=())
    before = model([helper.make_node("GlobalAveragePool", ["x"], ["g"])] + nodes
                   + [helper.make_node("Mul", ["x", "s"], ["y"])], inits)
    after, record = fused(before)
    assert ops(after) == {"GlobalAveragePool": 1, "HardSigmoid": 1, "Mul": 1}
    hs = next(n for n in after.graph.node if n.op_type == "HardSigmoid")
    attrs = {a.name: a.f for a in hs.attribute}
    assert attrs == {"alpha": float(SIXTH), "beta": 0.5}
    assert record["rewrites"] == {"HardSigmoid": 1}
    assert_same_outputs(before, after)


def test_before_opset_14_hard_swish_is_a_hard_sigmoid_and_the_mul():
    nodes, inits = hard_sigmoid_nodes()
    before = model(nodes + [helper.make_node("Mul", ["x", "s"], ["y"])], inits, opset=13)
    after, _ = fused(before)
    assert ops(after) == {"HardSigmoid": 1, "Mul": 1}
    assert_same_outputs(before, after)


@pytest.mark.parametrize("change", [
    {"add3": 3.0001}, {"add3": np.nextafter(np.float32(3), np.float32(4))}, {"lo": -1e-7}, {"hi": 6.5},
    {"scale": np.nextafter(SIXTH, np.float32(1))}, {"scale": 0.1666}, {"div": True, "scale": 6.000001},
    {"c_shape": (1, 1, 1, 1, 1)},  # rank 5 against a rank-4 x: broadcasting would widen the output
    {"c_shape": (8, 1, 1)},  # one value per channel, all 3 here, but not a scalar: left alone
])
def test_not_fused_when_a_constant_differs(change):
    before = hard_swish(**change)
    after, record = fused(before)
    assert ops(after) == ops(before) and record["rewrites"] == {}
    assert after.SerializeToString() == before.SerializeToString()


@pytest.mark.parametrize("other", ["a", "c"])
def test_not_fused_when_an_intermediate_has_another_reader(other):
    nodes, inits = hard_sigmoid_nodes()
    before = model(nodes + [helper.make_node("Mul", ["x", "s"], ["y"]), helper.make_node("Relu", [other], ["z"])],
                   inits, outputs=("y", "z"))
    after, record = fused(before)
    assert record["rewrites"] == {} and ops(after) == ops(before)


@pytest.mark.parametrize("out", ["a", "c"])
def test_not_fused_when_an_intermediate_is_a_graph_output(out):
    nodes, inits = hard_sigmoid_nodes()
    before = model(nodes + [helper.make_node("Mul", ["x", "s"], ["y"])], inits, outputs=("y", out))
    after, record = fused(before)
    assert record["rewrites"] == {} and ops(after) == ops(before)


def test_a_gate_that_is_also_a_graph_output_stays_a_hard_sigmoid_and_its_mul():
    nodes, inits = hard_sigmoid_nodes()
    before = model(nodes + [helper.make_node("Mul", ["x", "s"], ["y"])], inits, outputs=("y", "s"))
    after, record = fused(before)
    assert ops(after) == {"HardSigmoid": 1, "Mul": 1} and record["rewrites"] == {"HardSigmoid": 1}
    assert_same_outputs(before, after)


def test_a_mul_by_another_tensor_is_not_hard_swish():
    nodes, inits = hard_sigmoid_nodes()
    before = model([helper.make_node("Relu", ["x"], ["r"])] + nodes + [helper.make_node("Mul", ["r", "s"], ["y"])],
                   inits)
    after, _ = fused(before)
    assert ops(after) == {"Relu": 1, "HardSigmoid": 1, "Mul": 1}
    assert_same_outputs(before, after)


def test_constant_nodes_count_as_constants_and_shared_ones_stay():
    """tf2onnx shares one constant between patterns; a Constant node works like an initializer."""
    nodes, inits = hard_sigmoid_nodes()
    three = helper.make_node("Constant", [], ["three"], value=const("v", 3.0, (1, 1, 1, 1)))
    inits = [t for t in inits if t.name != "three"]
    before = model([three] + nodes + [helper.make_node("Mul", ["x", "s"], ["y"]),
                                      helper.make_node("Add", ["x", "hi"], ["z"])], inits, outputs=("y", "z"))
    after, record = fused(before)
    assert ops(after) == {"HardSwish": 1, "Add": 1} and record["rewrites"] == {"HardSwish": 1}
    assert [t.name for t in after.graph.initializer] == ["hi"]  # still read by the other Add
    assert_same_outputs(before, after)


def squeeze_excite_reshapes(target, outputs=("y",), shape=("n", 8, 4, 4)) -> onnx.ModelProto:
    """GlobalAveragePool (n, 8, 1, 1) -> Reshape(target) -> Relu: tf2onnx's pooled vector."""
    inits = [numpy_helper.from_array(np.array(target, np.int64), "shape")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Reshape", ["p", "shape"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    return model(nodes, inits, outputs=outputs, shape=shape, shapes={o: [None] * len(target) for o in outputs})


@pytest.mark.parametrize("target", [[-1, 8, 1, 1], [0, 8, 1, 1], [0, 8, 1, -1]])
def test_a_reshape_to_the_shape_it_has_is_removed(target):
    before = squeeze_excite_reshapes(target)
    after, record = fused(before)
    assert ops(after) == {"GlobalAveragePool": 1, "Relu": 1}
    assert record["rewrites"] == {"identity Reshape removed": 1} and not after.graph.initializer
    assert_same_outputs(before, after)


@pytest.mark.parametrize("target,kw", [
    ([-1, 8, 1], {}),  # another rank
    ([-1, 1, 1, 8], {}),  # another order of the same sizes
    ([0, 1, 1, 8], {}),  # the batch copied, the rest reordered
    ([-1, 8, 1, 1], {"outputs": ("y", "r")}),  # its output is a graph output
    ([-1, 8, 1, 1], {"shape": ("n", "c", 4, 4)}),  # the channels unknown: nothing proves it
])
def test_a_reshape_that_may_change_the_shape_stays(target, kw):
    before = squeeze_excite_reshapes(target, **kw)
    after, record = fused(before)
    assert "Reshape" in ops(after) and record["rewrites"] == {}


def test_a_graph_with_nothing_to_rewrite_comes_out_byte_for_byte():
    """The tutorial's Dense model: MatMul and Add; an initializer no node reads is not the pass's to drop."""
    inits = [const("w", 1.8, (1, 1)), const("b", 32.0, (1,)), const("unused", 1.0)]
    before = model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
                   inits, shape=("n", 1))
    after, record = fused(before)
    assert after.SerializeToString() == before.SerializeToString()
    assert record == {"nodes_before": 2, "nodes_after": 2, "rewrites": {}, "ops_before": {"Add": 1, "MatMul": 1},
                      "ops_after": {"Add": 1, "MatMul": 1}}


def flatten_by_shape(scale_batch: bool = False, shape_output: bool = False) -> onnx.ModelProto:
    """tf2onnx's Flatten of an NCHW feature map back in NHWC: Transpose, then Reshape to a target
    computed at run time, [Shape(x)[0], 128] (``scale_batch``: [2 * Shape(x)[0], 64])."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    inits = [i64("zero", [0]), i64("one", [1]), i64("rest", [64 if scale_batch else 128])]
    inits += [i64("two", [2])] if scale_batch else []
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Slice", ["sh", "zero", "one"], ["b"])]
    if scale_batch:
        nodes.append(helper.make_node("Mul", ["b", "two"], ["b2"]))
    nodes += [helper.make_node("Concat", ["b2" if scale_batch else "b", "rest"], ["target"], axis=0),
              helper.make_node("Reshape", ["t", "target"], ["y"])]
    outputs = ("y", "sh") if shape_output else ("y",)
    shapes = {"y": [None, 64 if scale_batch else 128], "sh": [4]}
    return model(nodes, inits, outputs=outputs, shapes=shapes, types={"sh": TensorProto.INT64})


def test_a_reshape_target_computed_from_shape_becomes_a_constant_and_the_computation_goes():
    before = flatten_by_shape()
    after, record = fused(before)
    assert [n.op_type for n in after.graph.node] == ["Transpose", "Reshape"]
    (target,) = after.graph.initializer
    assert numpy_helper.to_array(target).tolist() == [0, 128]  # 0: the input's own batch
    assert record["rewrites"] == {"Reshape target made constant": 1}
    for batch in (1, 5):  # the batch dimension stays free
        assert_same_outputs(before, after, inputs((batch, 8, 4, 4)))


def test_a_shape_computation_still_read_elsewhere_stays():
    before = flatten_by_shape(shape_output=True)
    after, record = fused(before)
    assert record["rewrites"] == {"Reshape target made constant": 1}
    assert [n.op_type for n in after.graph.node] == ["Transpose", "Shape", "Reshape"]
    assert_same_outputs(before, after, inputs((3, 8, 4, 4)))


def test_a_target_that_is_not_the_inputs_own_batch_stays_computed():
    before = flatten_by_shape(scale_batch=True)
    after, record = fused(before)
    assert record["rewrites"] == {} and after.SerializeToString() == before.SerializeToString()


def test_a_graph_with_control_flow_is_left_as_it_is():
    """A subgraph (If, Loop) reads outer tensors by name, unseen by the pass's readers: here the
    If's branches read the hard-swish's intermediate 'c', which fusing would remove."""
    nodes, inits = hard_sigmoid_nodes()
    branch = helper.make_graph([helper.make_node("Identity", ["c"], ["z"])], "b", [],
                               [helper.make_tensor_value_info("z", F, None)])
    nodes += [helper.make_node("Mul", ["x", "s"], ["y"]),
              helper.make_node("If", ["cond"], ["w"], then_branch=branch, else_branch=branch)]
    inits.append(numpy_helper.from_array(np.array(True), "cond"))
    m = model(nodes, inits, outputs=("y", "w"), shapes={"w": [None] * 4})
    before = m.SerializeToString()
    record = fuse(m)
    assert m.SerializeToString() == before and record["rewrites"] == {} and "control flow" in record["skipped"]
    x = np.random.default_rng(0).normal(0, 4, (2, 8, 4, 4)).astype(np.float32)
    y, w = run(m, x)
    np.testing.assert_array_equal(w, np.clip(x + 3, 0, 6))  # the branch still finds "c"
