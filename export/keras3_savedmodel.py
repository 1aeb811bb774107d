"""The Keras 3 workaround, in one place: go through a SavedModel with a named signature.

Why: with Keras 3, ``tf2onnx.convert.from_keras`` fails (KeyError 'keras_tensor_N',
tensorflow-onnx issue #2448), and ``TFLiteConverter.from_concrete_functions`` on a
``tf.function`` that calls a Keras 3 model does not freeze the model's variables (the
.tflite file computes garbage; seen with TF 2.21). Writing a SavedModel with Keras's own
``ExportArchive`` and converting from it works for both, and names the signature's
inputs and outputs the way the device expects: the config's ``model.input_name`` and
``output_name`` for a model of one input and one output, the Keras model's own names
(``tensor_names``) for a model of several, which every format then binds by name.

When it can go: once tf2onnx converts Keras 3 models directly (#2448 closed in a
release), ONNX can use ``from_keras`` again; TFLite is fine from the SavedModel either way.
"""

from __future__ import annotations

from pathlib import Path

SIGNATURE = "serving_default"


def write_savedmodel(model, dest: Path, input_name: str | list[str], output_name: str | list[str]) -> Path:
    """Write ``model`` as a SavedModel whose ``serving_default`` maps ``input_name`` to ``output_name``.

    Args:
        model: a built Keras 3 model with float32 inputs of shape (batch, *shape), traced
            with ``training=False`` (Dropout off, BatchNormalization on its moving statistics).
        dest: folder to create (must not exist).
        input_name, output_name: a str for a model of one input and one output; lists for a
            model of several, the Keras model's own names (``tensor_names``) in its order: the
            signature's keys are those names, each bound to its own tensor by name.
    """
    from export.tfenv import tensorflow

    tf, keras = tensorflow()
    archive = keras.export.ExportArchive()
    archive.track(model)
    input_name, output_name = single(input_name), single(output_name)
    if isinstance(input_name, str) and isinstance(output_name, str):
        shape = input_shape(model)
        archive.add_endpoint(
            name=SIGNATURE,
            fn=lambda x: {output_name: model(x, training=False)},
            input_signature=[tf.TensorSpec([None, *shape], tf.float32, name=input_name)],
        )
    else:
        ins, outs = _names(input_name), _names(output_name)
        shapes = input_shapes(model)
        keras_ins, keras_outs = tensor_names(model)
        if sorted(ins) != sorted(keras_ins) or sorted(outs) != sorted(keras_outs):
            from .errors import ExportError

            raise ExportError(f"export: the names {ins} -> {outs} are not the model's own inputs {keras_ins} "
                              f"and outputs {keras_outs}; expected the Keras model's names (keras.Input(name=...), "
                              "the output layers' names)")

        def fn(*xs):
            given = dict(zip(ins, xs))
            y = model([given[n] for n in keras_ins], training=False)
            y = y if isinstance(y, dict) else dict(zip(keras_outs, y if isinstance(y, (list, tuple)) else [y]))
            return {n: y[n] for n in outs}

        archive.add_endpoint(name=SIGNATURE, fn=fn, input_signature=[
            tf.TensorSpec([None, *shapes[n]], tf.float32, name=n) for n in ins])
    archive.write_out(str(dest), verbose=False)
    return Path(dest)


def _names(name: str | list[str]) -> list[str]:
    return [name] if isinstance(name, str) else list(name)


def single(name: str | list[str]) -> str | list[str]:
    """A list of one name as that name: a model of one input and one output takes today's path
    (the same bytes) whether it is named by a str or a list of one."""
    return name[0] if not isinstance(name, str) and len(name) == 1 else name


def tensor_names(model) -> tuple[list[str], list[str]]:
    """The Keras model's input names (``keras.Input(name=...)``) and output names (its output
    layers' names), each in the model's order: the names every exported format binds by."""
    return [t.name for t in model.inputs], list(model.output_names)


def serving_function(savedmodel_dir: Path, input_name: str | list[str]):
    """Load the SavedModel's signature as a ``tf.function`` of its inputs in the order of
    ``input_name`` (one name, or a list), and its input specs.

    The function returns the signature's dict of outputs, keyed by their names."""
    from export.tfenv import tensorflow

    tf, _ = tensorflow()
    loaded = tf.saved_model.load(str(savedmodel_dir))
    signature = loaded.signatures[SIGNATURE]
    input_name = single(input_name)
    if isinstance(input_name, str):
        given = signature.structured_input_signature[1][input_name]
        spec = (tf.TensorSpec([None, *given.shape[1:]], tf.float32, name=input_name),)

        @tf.function(input_signature=spec)
        def fn(x):
            return signature(**{input_name: x})
    else:
        names = list(input_name)
        given = signature.structured_input_signature[1]
        spec = tuple(tf.TensorSpec([None, *given[n].shape[1:]], tf.float32, name=n) for n in names)

        @tf.function(input_signature=spec)
        def fn(*xs):
            return signature(**dict(zip(names, xs)))

    # Keep the loaded object (and its variables) alive as long as the function.
    fn._loaded = loaded
    return fn, spec


def input_shape(model) -> tuple[int, ...]:
    """The shape of one example of the model's single input (the batch dimension left out).

    Raises ExportError when the model has several inputs or outputs, or a dimension that is
    not fixed: one input and one output tensor of fixed example shape are supported.
    """
    from .errors import ExportError

    ins, outs = model.inputs, model.outputs
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError(f"export: the model has {len(ins)} input(s) and {len(outs)} output(s); "
                          "one input and one output tensor are supported")
    shape = tuple(ins[0].shape[1:])
    if any(d is None for d in shape):
        raise ExportError(f"export: the model's input shape {(None, *shape)} has an unknown dimension "
                          "beyond the batch; expected a fixed example shape")
    return shape


def input_shapes(model) -> dict[str, tuple[int, ...]]:
    """The shape of one example of each of the model's inputs (the batch dimension left out), by name.

    Raises ExportError when two inputs or two outputs share a name, or a dimension is not fixed."""
    from .errors import ExportError

    ins, outs = tensor_names(model)
    for kind, names in (("input", ins), ("output", outs)):
        if len(set(names)) != len(names):
            raise ExportError(f"export: the model's {kind} names {names} repeat a name; expected one name per "
                              f"{kind}, as every format binds tensors by name")
    shapes = {}
    for name, t in zip(ins, model.inputs):
        shape = tuple(t.shape[1:])
        if any(d is None for d in shape):
            raise ExportError(f"export: the model's input {name!r} shape {(None, *shape)} has an unknown dimension "
                              "beyond the batch; expected a fixed example shape")
        shapes[name] = shape
    return shapes
