"""Keras SavedModel -> ONNX through tf2onnx, then tidied and checked.

The file that leaves here has: input ``celsius`` and output ``fahrenheit``, float32, shape
(batch, 1) with a named dynamic batch dimension; only the opset imports its nodes use
(tf2onnx always adds ``ai.onnx.ml``); the opset and IR version asked for; and it passes
``onnx.checker.check_model(..., full_check=True)``.
"""

from __future__ import annotations

from pathlib import Path

BATCH_DIM = "batch"


def convert(savedmodel_dir: Path, input_name: str, output_name: str, opset: int, ir_version: int):
    """Return the checked ``onnx.ModelProto`` for the SavedModel's serving signature."""
    import tf2onnx

    from export.keras3_savedmodel import serving_function

    fn, spec = serving_function(savedmodel_dir, input_name)
    model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    return tidy(model, input_name, output_name, opset, ir_version)


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
    onnx.checker.check_model(model, full_check=True)
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
