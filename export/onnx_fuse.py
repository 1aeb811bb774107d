"""A graph pass over tf2onnx's output: the rewrites onnxruntime's own optimizer does not do.

What tf2onnx writes for a Keras model and what the pass makes of it (each counted in the
record ``fuse`` returns; export puts it in ``variants/index.json`` and verify in the report):

- **hard-sigmoid**: Keras's ``relu6(x + 3) / 6`` (and MobileNetV3's ``relu6(x + 3) * (1/6)``)
  comes out as ``Add(x, 3) -> Clip(0, 6) -> Mul(1/6)`` (or ``Div(6)``): three element-wise
  passes over the tensor, each broken out of onnxruntime's blocked (NCHWc) convolution
  layout by a scalar operand. Rewritten into one ``HardSigmoid(alpha=1/6, beta=0.5)``,
  which computes ``clip(x/6 + 0.5, 0, 1)``: the same function, rounded once less.
- **hard-swish**: the same followed by ``Mul(x, .)`` on the same ``x``: one ``HardSwish``
  (opset 14 and later; before, a HardSigmoid and the Mul).
- **identity Reshape**: tf2onnx turns Keras's transposes of ``(n, 1, 1, c)`` tensors (the
  squeeze-and-excite blocks' pooled vectors, a 1x1 feature map) into Reshapes to
  ``[-1, c, 1, 1]`` of a tensor that already has that shape. They compute nothing, and each
  one makes onnxruntime reorder its blocked layout out and back in. Removed when shape
  inference proves the input already has the target shape.
- **Reshape targets computed at run time**: Keras's Flatten after a convolution comes out as a
  Reshape to ``[Shape(x)[0], k]``, computed by six small nodes (Shape, Gather, Cast, Slice,
  Concat, Cast) on every call. When shape inference (with data propagation) proves every
  output dimension either fixed or the input's own at that position, the target becomes a
  constant (``[0, k]``: 0 copies the input's dimension) and the computation goes.

Inference runs from the graph's input alone (the converter's value_info set aside). A pattern
is rewritten only when every constant is exactly the one the arithmetic needs
(float32 3, 0, 6, 1/6 or 6; a scalar or a tensor of ones' shape that broadcasting cannot
widen), and every tensor it removes has no reader outside the pattern and is not a graph
output. The rewrites change results by float rounding only; verify's parity check proves it
on every build. Plain onnx and numpy: no TensorFlow, no onnxruntime.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

SIXTH = np.float32(1.0 / 6.0)  # what Keras's ``* (1.0 / 6.0)`` becomes in float32
HARD_SWISH_OPSET = 14  # the first opset with HardSwish


class _Index:
    """Producers, readers, constants and ranks of a graph's tensors (rebuilt after each change)."""

    def __init__(self, model, shapes: dict[str, list] | None):
        from onnx import numpy_helper

        g = model.graph
        self.graph = g
        self.outputs = {o.name for o in g.output}
        self.readers: dict[str, list] = {}
        for node in g.node:
            for name in node.input:
                if name:
                    self.readers.setdefault(name, []).append(node)
        self.consts = {t.name: t for t in g.initializer}
        self._const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and len(n.output) == 1}
        self._np = numpy_helper
        self.shapes = shapes or {}

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (an initializer or a Constant node's ``value``), else None."""
        if name in self.consts:
            return self._np.to_array(self.consts[name])
        node = self._const_nodes.get(name)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        return None

    def only_reader(self, name: str):
        """The one node that reads ``name`` if exactly one does and it is not a graph output."""
        readers = self.readers.get(name, [])
        if len(readers) != 1 or name in self.outputs:
            return None
        return readers[0]


def _scalar(index: _Index, name: str, value: np.float32, x: str) -> bool:
    """``name`` is a float32 constant equal to ``value`` everywhere, of a shape that broadcasting
    against ``x`` cannot widen (a scalar, or ones up to ``x``'s rank when that is known)."""
    c = index.const(name)
    if c is None or c.dtype != np.float32 or c.size != 1 or c.reshape(()) != value:
        return False
    rank = len(index.shapes[x]) if x in index.shapes else None
    return c.ndim == 0 or (rank is not None and c.ndim <= rank)


def _other(node, name: str) -> str | None:
    """The other input of a binary node one of whose inputs is ``name``."""
    if len(node.input) != 2 or name not in node.input:
        return None
    a, b = node.input
    return b if a == name else a


def _clip_0_6(index: _Index, clip, x: str) -> bool:
    if clip.op_type != "Clip" or len(clip.attribute):  # min and max as attributes: before opset 11
        return False
    return (len(clip.input) == 3 and all(clip.input[1:]) and _scalar(index, clip.input[1], np.float32(0), x)
            and _scalar(index, clip.input[2], np.float32(6), x))


def _hard_sigmoid(index: _Index, add):
    """(x, [Add, Clip, Mul|Div]) when ``add`` starts the pattern of hard-sigmoid, else None."""
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    for x, three in (add.input, add.input[::-1]):
        if index.const(x) is None and _scalar(index, three, np.float32(3), x):
            break
    else:
        return None
    clip = index.only_reader(add.output[0])
    if clip is None or not _clip_0_6(index, clip, x) or clip.input[0] != add.output[0]:
        return None
    scale = index.only_reader(clip.output[0])
    if scale is None:
        return None
    if scale.op_type == "Mul":
        c = _other(scale, clip.output[0])
        if c is None or not _scalar(index, c, SIXTH, x):
            return None
    elif scale.op_type == "Div":
        if list(scale.input[:1]) != [clip.output[0]] or not _scalar(index, scale.input[1], np.float32(6), x):
            return None
    else:
        return None
    return x, [add, clip, scale]


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if (o.domain or "") in ("", "ai.onnx")), 0)


def _replace(graph, old: list, new) -> None:
    """Put ``new`` where the first of ``old`` stood (its input is produced before it) and drop ``old``."""
    nodes = list(graph.node)
    at = min(i for i, n in enumerate(nodes) if any(n is o for o in old))
    kept = [new if i == at else n for i, n in enumerate(nodes) if i == at or all(n is not o for o in old)]
    del graph.node[:]
    graph.node.extend(kept)


def _fuse_activations(model, shapes) -> Counter:
    from onnx import helper

    done: Counter = Counter()
    swish_ok = _opset(model) >= HARD_SWISH_OPSET
    changed = True
    while changed:
        changed = False
        index = _Index(model, shapes)
        for add in list(model.graph.node):
            match = _hard_sigmoid(index, add)
            if match is None:
                continue
            x, nodes = match
            out = nodes[-1].output[0]
            mul = index.only_reader(out) if swish_ok else None
            if mul is not None and mul.op_type == "Mul" and _other(mul, out) == x:
                fused = helper.make_node("HardSwish", [x], [mul.output[0]], name=mul.name)
                nodes.append(mul)
            else:
                fused = helper.make_node("HardSigmoid", [x], [out], name=nodes[-1].name,
                                         alpha=float(SIXTH), beta=0.5)
            _replace(model.graph, nodes, fused)
            done[fused.op_type] += 1
            changed = True
            break  # the index is stale: rebuild it
    return done


def _identity_reshape(index: _Index, node) -> bool:
    """``node`` is a Reshape whose input already has the target shape (proven by shape inference)."""
    if node.op_type != "Reshape" or len(node.input) != 2 or node.output[0] in index.outputs:
        return False
    target, shape = index.const(node.input[1]), index.shapes.get(node.input[0])
    if target is None or shape is None or target.ndim != 1 or len(target) != len(shape):
        return False
    allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
    open_dims = 0
    for want, have in zip(target.tolist(), shape):
        if want == 0 and not allowzero:
            continue  # copies the input's dimension
        if want == -1:
            open_dims += 1  # the one inferred dimension: equal when every other one is
            continue
        if not isinstance(have, int) or have != want:
            return False
    return open_dims <= 1


def _drop_identity_reshapes(model, shapes) -> int:
    index = _Index(model, shapes)
    drop = [n for n in model.graph.node if _identity_reshape(index, n)]
    for node in drop:
        src, dst = node.input[0], node.output[0]
        for reader in index.readers.get(dst, []):
            reader.input[:] = [src if i == dst else i for i in reader.input]
    keep = [n for n in model.graph.node if all(n is not d for d in drop)]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(drop)


def _shapes(model) -> dict[str, list]:
    """Every tensor's shape as ONNX shape inference finds it from the graph's inputs alone (the
    converter's own value_info set aside), with data propagation (a shape computed from ``Shape``
    at run time): per dimension an int when known, the symbol's name (a str) when it is the same
    unknown as another tensor's, else None."""
    import onnx

    bare = onnx.ModelProto.FromString(model.SerializeToString())
    del bare.graph.value_info[:]
    try:
        g = onnx.shape_inference.infer_shapes(bare, data_prop=True).graph
    except Exception:  # a graph inference cannot follow: no shapes, so no rewrite that needs one
        return {}
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def _prune(model, orphans: set[str]) -> None:
    """Drop what the rewrites left unread: the nodes (a Constant, or a shape computation) whose
    outputs were read before and are read no more, then what only they read, and so on; the
    initializers among those; value_info of tensors no longer there. Nothing else: what
    tf2onnx itself left unread stays."""
    g = model.graph
    dead: set[str] = set()
    while True:
        read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        unread = orphans - read
        drop = [n for n in g.node if any(o in unread for o in n.output) and not any(o in read for o in n.output)]
        dead |= unread
        if not drop:
            break
        orphans = {i for n in drop for i in n.input if i}
        keep = [n for n in g.node if all(n is not d for d in drop)]
        del g.node[:]
        g.node.extend(keep)
    inits = [t for t in g.initializer if t.name not in dead]
    del g.initializer[:]
    g.initializer.extend(inits)
    present = read | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    vis = [v for v in g.value_info if v.name in present]
    del g.value_info[:]
    g.value_info.extend(vis)


def _static_target(index: _Index, node) -> list[int] | None:
    """For a Reshape whose target shape is computed at run time (from ``Shape``): the same target
    as a constant, when shape inference proves every output dimension either a fixed size or the
    input's own dimension at that position (written 0: copy it); else None."""
    if node.op_type != "Reshape" or len(node.input) != 2 or index.const(node.input[1]) is not None:
        return None
    if any(a.name == "allowzero" and a.i for a in node.attribute):
        return None  # 0 would mean an empty dimension, not a copy
    out, shape = index.shapes.get(node.output[0]), index.shapes.get(node.input[0])
    if out is None or shape is None:
        return None
    target = []
    for i, d in enumerate(out):
        if isinstance(d, int) and d > 0:
            target.append(d)
        elif isinstance(d, str) and i < len(shape) and shape[i] == d:
            target.append(0)
        else:
            return None
    return target


def _constant_targets(model, shapes) -> int:
    from onnx import numpy_helper

    index = _Index(model, shapes)
    done = 0
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        target = _static_target(index, node)
        if target is None:
            continue
        name = f"{node.output[0]}_static_shape"
        while name in taken:
            name += "_"
        taken.add(name)
        model.graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
        node.input[1] = name
        done += 1
    return done


def fuse(model) -> dict[str, Any]:
    """Rewrite ``model`` (an onnx.ModelProto, changed in place); return what was done:
    ``{"nodes_before", "nodes_after", "rewrites": {what: count}, "ops_before", "ops_after"}``
    (``ops_*``: nodes per op type)."""
    before = Counter(n.op_type for n in model.graph.node)
    if any(a.g.node or a.graphs for n in model.graph.node for a in n.attribute):
        # Control flow (Loop, If, Scan): its subgraphs read outer tensors by name, which the
        # readers counted here do not see; such a graph is left as tf2onnx wrote it.
        return {"nodes_before": sum(before.values()), "nodes_after": sum(before.values()), "rewrites": {},
                "ops_before": dict(sorted(before.items())), "ops_after": dict(sorted(before.items())),
                "skipped": "the graph has control flow (subgraphs)"}
    orphans = {i for n in model.graph.node for i in n.input}
    shapes = _shapes(model)
    rewrites = dict(_fuse_activations(model, shapes))
    dropped = _drop_identity_reshapes(model, shapes)
    if dropped:
        rewrites["identity Reshape removed"] = dropped
    static = _constant_targets(model, shapes)
    if static:
        rewrites["Reshape target made constant"] = static
    orphans -= {i for n in model.graph.node for i in n.input}
    _prune(model, orphans)
    after = Counter(n.op_type for n in model.graph.node)
    return {"nodes_before": sum(before.values()), "nodes_after": sum(after.values()),
            "rewrites": rewrites, "ops_before": dict(sorted(before.items())),
            "ops_after": dict(sorted(after.items()))}
