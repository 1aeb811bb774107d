"""The Keras 3 workaround, in one place: go through a SavedModel with a named signature.

Why: with Keras 3, ``tf2onnx.convert.from_keras`` fails (KeyError 'keras_tensor_N',
tensorflow-onnx issue #2448), and ``TFLiteConverter.from_concrete_functions`` on a
``tf.function`` that calls a Keras 3 model does not freeze the model's variables (the
.tflite file computes garbage; seen with TF 2.21). Writing a SavedModel with Keras's own
``ExportArchive`` and converting from it works for both, and names the signature's
input and output the way the device expects (the config's ``model.input_name`` and
``output_name``).

When it can go: once tf2onnx converts Keras 3 models directly (#2448 closed in a
release), ONNX can use ``from_keras`` again; TFLite is fine from the SavedModel either way.
"""

from __future__ import annotations

from pathlib import Path

SIGNATURE = "serving_default"


def write_savedmodel(model, dest: Path, input_name: str, output_name: str) -> Path:
    """Write ``model`` as a SavedModel whose ``serving_default`` maps ``input_name`` to ``output_name``.

    Args:
        model: a built Keras 3 model with one float32 input of shape (batch, *shape), traced
            with ``training=False`` (Dropout off, BatchNormalization on its moving statistics).
        dest: folder to create (must not exist).
    """
    from export.tfenv import tensorflow

    tf, keras = tensorflow()
    shape = input_shape(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda x: {output_name: model(x, training=False)},
        input_signature=[tf.TensorSpec([None, *shape], tf.float32, name=input_name)],
    )
    archive.write_out(str(dest), verbose=False)
    return Path(dest)


def serving_function(savedmodel_dir: Path, input_name: str):
    """Load the SavedModel's signature as a ``tf.function`` of one keyword input, and its input spec."""
    from export.tfenv import tensorflow

    tf, _ = tensorflow()
    loaded = tf.saved_model.load(str(savedmodel_dir))
    signature = loaded.signatures[SIGNATURE]
    given = signature.structured_input_signature[1][input_name]
    spec = (tf.TensorSpec([None, *given.shape[1:]], tf.float32, name=input_name),)

    @tf.function(input_signature=spec)
    def fn(x):
        return signature(**{input_name: x})

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
