"""Keras SavedModel -> ONNX through tf2onnx, then tidied and checked.

The file that leaves here has: the input and output named as asked (the config's
``model.input_name`` and ``output_name``), float32, with a named dynamic batch dimension;
every other node and tensor named n0, t0, ... in order of use; only the opset imports its nodes use
(tf2onnx always adds ``ai.onnx.ml``); the opset and IR version asked for; and it passes
``onnx.checker.check_model(..., full_check=True)``. Before it is tidied, the graph pass
(``onnx_fuse.fuse``) rewrites what onnxruntime runs slowly: hard-swish and hard-sigmoid into
single ops, Reshapes that reshape nothing removed.
"""

from __future__ import annotations

from pathlib import Path

BATCH_DIM = "batch"


def convert(savedmodel_dir: Path, input_name: str, output_name: str, opset: int, ir_version: int,
            unrolled: Path | None = None, fuse: bool = True):
    """Return the checked ``onnx.ModelProto`` for the SavedModel's serving signature, and the
    graph pass's record (``onnx_fuse.fuse``: nodes before and after, rewrites by kind; None
    with ``fuse=False``, which leaves tf2onnx's graph as it wrote it).

    Every node and inner tensor is named n0, t0, ... (``shorten``) instead of tf2onnx's paths
    (``StatefulPartitionedCall/.../dense_0_1/MatMul``), which fill a third of a small int8
    file (each quantized tensor repeats them); the input and output keep their names.

    Args:
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


def _tf2onnx(savedmodel_dir: Path, input_name: str, output_name: str, opset: int):
    """tf2onnx's ``onnx.ModelProto`` of the SavedModel's signature, its input and output named as asked."""
    import tf2onnx

    from export.keras3_savedmodel import serving_function

    from .errors import ExportError

    fn, spec = serving_function(savedmodel_dir, input_name)
    try:
        graph = frozen_graph(fn)
        if graph is None:
            model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
        else:
            graph_def, tf_in, tf_out = graph
            model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[tf_in], output_names=[tf_out],
                                                      opset=opset)
            rename(model, tf_in, input_name)
            rename(model, tf_out, output_name)
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


def frozen_graph(fn):
    """The GraphDef of ``fn`` with every captured tensor folded into a constant, with its input
    and output tensor names; None when ``fn`` captures variables only.

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
    return const.graph.as_graph_def(add_shapes=True), const.inputs[0].name, const.outputs[0].name


def rename(model, old: str, new: str) -> None:
    """Rename the tensor ``old`` to ``new`` everywhere in the graph."""
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name == old:
            vi.name = new
    for node in g.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def tidy(model, input_name: str, output_name: str, opset: int, ir_version: int):
    """Drop unused opset imports, name the batch dimension, set the IR version, clear the
    process-dependent doc string, and check."""
    import onnx

    graph = model.graph
    names_in = [i.name for i in graph.input]
    names_out = [o.name for o in graph.output]
    if names_in != [input_name] or names_out != [output_name]:
        from .errors import ExportError

        raise ExportError(
            f"export: tf2onnx produced inputs {names_in} and outputs {names_out}, "
            f"expected [{input_name!r}] and [{output_name!r}]"
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
