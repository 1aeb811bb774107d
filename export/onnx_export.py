"""Keras SavedModel -> ONNX through tf2onnx, then tidied and checked.

The file that leaves here has: the inputs and outputs named as asked (the config's
``model.input_name`` and ``output_name``, or for a model of several inputs and outputs the Keras
model's own names, in the Keras model's order), float32, each with a named dynamic batch dimension;
every other node and tensor named n0, t0, ... in order of use; only the opset imports its nodes use
(tf2onnx always adds ``ai.onnx.ml``); the opset and IR version asked for; and it passes
``onnx.checker.check_model(..., full_check=True)``. Before it is tidied, the graph pass
(``onnx_fuse.fuse``) rewrites what onnxruntime runs slowly: hard-swish and hard-sigmoid into
single ops, Reshapes that reshape nothing removed.
"""

from __future__ import annotations

from pathlib import Path

BATCH_DIM = "batch"


def convert(savedmodel_dir: Path, input_name: str | list[str], output_name: str | list[str], opset: int,
            ir_version: int, unrolled: Path | None = None, fuse: bool = True):
    """Return the checked ``onnx.ModelProto`` for the SavedModel's serving signature, and the
    graph pass's record (``onnx_fuse.fuse``: nodes before and after, rewrites by kind; None
    with ``fuse=False``, which leaves tf2onnx's graph as it wrote it).

    Every node and inner tensor is named n0, t0, ... (``shorten``) instead of tf2onnx's paths
    (``StatefulPartitionedCall/.../dense_0_1/MatMul``), which fill a third of a small int8
    file (each quantized tensor repeats them); the inputs and outputs keep their names.

    Args:
        input_name, output_name: a str each for a model of one input and one output; lists of the
            Keras model's names for several (``keras3_savedmodel.tensor_names``): the graph's inputs
            and outputs are exactly those, in that order (tf2onnx's own order is the names' sorted one).
        unrolled: the SavedModel of the same model with its recurrent layers unrolled
            (export/recurrent.py), converted instead when the first gives a ``Loop`` (or fails).
            tf2onnx turns a Keras LSTM into ONNX's LSTM op, 4-6x faster in onnxruntime than the
            unrolled graph at batch 1; a GRU or SimpleRNN becomes a Loop, about 2x slower than
            the unrolled graph (docs/your-model.md, "Recurrent layers").
    """
    if unrolled is not None:
        try:
            model = _tf2onnx(savedmodel_dir, input_name, output_name, opset)
        except Exception:
            model = None
        if model is None or any(node.op_type == "Loop" for node in model.graph.node):
            model = _tf2onnx(unrolled, input_name, output_name, opset)
    else:
        model = _tf2onnx(savedmodel_dir, input_name, output_name, opset)
    from .onnx_fuse import fuse as graph_pass

    record = graph_pass(model) if fuse else None
    shorten(model)
    return tidy(model, input_name, output_name, opset, ir_version), record


def _tf2onnx(savedmodel_dir: Path, input_name: str | list[str], output_name: str | list[str], opset: int):
    """tf2onnx's ``onnx.ModelProto`` of the SavedModel's signature, its inputs and outputs named as
    asked, in the order asked."""
    import tf2onnx

    from export.keras3_savedmodel import serving_function

    from .errors import ExportError

    ins, outs = names(input_name), names(output_name)
    fn, spec = serving_function(savedmodel_dir, ins)
    try:
        graph = frozen_graph(fn)
        if graph is None:  # named by tf2onnx: inputs by their specs, outputs by the signature's keys
            model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
        else:
            graph_def, tf_ins, tf_outs = graph
            # One output: whatever the signature calls it (as before); several: each by its key.
            tf_out = list(tf_outs.values()) if len(tf_outs) == 1 else [tf_outs[n] for n in outs]
            model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=tf_ins, output_names=tf_out,
                                                      opset=opset)
            for old, new in list(zip(tf_ins, ins)) + list(zip(tf_out, outs)):
                rename(model, old, new)
        order_io(model, ins, outs)
    except Exception as e:  # tf2onnx raises many types; the first line names the op
        text = " ".join(str(e).split()) or type(e).__name__
        raise ExportError(f"export: ONNX (tf2onnx): {type(e).__name__}: {text[:300]}") from None
    return model


def shorten(model) -> None:
    """Rename the nodes n0, n1, ... and every tensor but the graph's input and output t0, t1, ...
    in the order the nodes first use them, and put the initializers in that order.

    tf2onnx's order of the initializers varies from run to run (it emits small shape constants
    from a set): named in order of use, the same graph gives the same bytes every time."""
    g = model.graph
    keep = {v.name for v in list(g.input) + list(g.output)} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    unused = len(names) + len(g.initializer)  # initializers no node reads sort last, by their old name
    order = sorted(g.initializer, key=lambda t: (int(names[t.name][1:]) if t.name in names else unused, t.name))
    inits = [type(t).FromString(t.SerializeToString()) for t in order]
    for t in inits:
        t.name = short(t.name)
    del g.initializer[:]
    g.initializer.extend(inits)
    for vi in g.value_info:
        vi.name = short(vi.name)
    _rename_outer(g, names)


def _rename_outer(graph, names: dict[str, str]) -> None:
    """In the subgraphs of ``graph``'s nodes (a Loop's or an If's body), rename what they read
    from the outer scope as ``names`` says; their own tensors keep their names."""
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                for inner in sub.node:
                    inner.input[:] = [names.get(x, x) for x in inner.input]
                _rename_outer(sub, names)


def names(name: str | list[str]) -> list[str]:
    """A name or a list of names, as a list."""
    return [name] if isinstance(name, str) else list(name)


def order_io(model, input_names: list[str], output_names: list[str]) -> None:
    """Put the graph's inputs and outputs in the order of the names given, when they are those
    names (tf2onnx lists a dict's outputs in sorted order); else leave them for ``tidy`` to refuse."""
    g = model.graph
    for field, want in ((g.input, input_names), (g.output, output_names)):
        have = {v.name: v for v in field}
        if sorted(have) == sorted(want) and list(have) != want:
            ordered = [type(have[n]).FromString(have[n].SerializeToString()) for n in want]
            del field[:]
            field.extend(ordered)


def frozen_graph(fn):
    """The GraphDef of ``fn`` with every captured tensor folded into a constant, with its input
    tensor names (in ``fn``'s order) and its output tensor names by the output's key; None when
    ``fn`` captures variables only.

    tf2onnx freezes captured variables (Dense kernels) but leaves captured tensors, such as
    the mean and variance a Keras 3 Normalization layer computes after ``adapt``, as extra
    graph inputs; TensorFlow's own converter folds both.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from export.tfenv import tensorflow

    tf, _ = tensorflow()
    concrete = fn.get_concrete_function()
    if all(t.dtype == tf.resource for t in concrete.captured_inputs):
        return None  # variables only (the tutorial's Dense): tf2onnx's own path, same bytes as before
    # As tf2onnx's own from_function freezes: control flow kept as functional While ops (which
    # it turns into a Loop, or a fused LSTM), not lowered to TF1's Enter/Exit frames, in which a
    # recurrent layer's TensorList ops reach the ONNX graph as they are. Same bytes as the
    # defaults for a model without control flow (the examples).
    const = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    # The outputs come in the order tf.nest flattens the function's dict of outputs (its keys sorted).
    keys = tf.nest.flatten({k: k for k in concrete.structured_outputs})
    tf_ins = [t.name for t in const.inputs if t.dtype != tf.resource]
    return const.graph.as_graph_def(add_shapes=True), tf_ins, dict(zip(keys, [t.name for t in const.outputs]))


def rename(model, old: str, new: str) -> None:
    """Rename the tensor ``old`` to ``new`` everywhere in the graph."""
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name == old:
            vi.name = new
    for node in g.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def tidy(model, input_name: str | list[str], output_name: str | list[str], opset: int, ir_version: int):
    """Check the graph's inputs and outputs are exactly the names asked for, in that order; drop
    unused opset imports, name the batch dimension of each, set the IR version, clear the
    process-dependent doc string, and check."""
    import onnx

    graph = model.graph
    names_in = [i.name for i in graph.input]
    names_out = [o.name for o in graph.output]
    if names_in != names(input_name) or names_out != names(output_name):
        from .errors import ExportError

        raise ExportError(
            f"export: tf2onnx produced inputs {names_in} and outputs {names_out}, "
            f"expected {names(input_name)!r} and {names(output_name)!r}"
        )
    used = {node.domain or "" for node in graph.node}
    keep = [o for o in model.opset_import if (o.domain or "") in used or (o.domain or "") == ""]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    for vi in list(graph.input) + list(graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    model.ir_version = ir_version
    # tf2onnx writes "converted from b'__inference_fn_NNN'", NNN counting the functions
    # traced so far in the process: the same model would not give the same bytes.
    graph.doc_string = ""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # e.g. a TensorFlow op tf2onnx passed through as is
        from .errors import ExportError

        text = " ".join(str(e).split())
        raise ExportError(f"export: ONNX (tf2onnx) produced an invalid graph: {text[:300]}") from None
    return model


def describe(model) -> dict:
    """Input/output names, shapes and dtypes, opset imports and IR version of an ONNX model."""
    import onnx

    def io(vi):
        t = vi.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": vi.name, "shape": shape,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return {
        "inputs": [io(v) for v in model.graph.input],
        "outputs": [io(v) for v in model.graph.output],
        "opset_imports": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "ir_version": model.ir_version,
    }
