"""The plain way for the digits example, for comparison with its `make all`: fit, TFLite, tf2onnx.

What a user would write for examples/digits without this pipeline, and nothing else: load
data.npz, hold out 20 % (seeded), a Normalization layer adapted on the training rows ahead of
the same Conv2D model (examples/digits/model.py), `model.fit` with the example's epochs and
batch size (15, 32; Adam 0.001, sparse cross-entropy on logits), then the TFLite conversion
(Keras 3: through a SavedModel, `model.export`) and tf2onnx on the frozen traced call (Keras 3:
`from_keras` fails, tensorflow-onnx #2448, and `from_function` would leave the Normalization's
mean and variance as graph inputs). No verification, no variants, no bundle.
Usage: `python bench/plain_digits.py OUT_DIR`; prints the seconds of each part as JSON.
"""

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
T0 = time.perf_counter()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
parts = {"import": time.perf_counter() - T0}

t = time.perf_counter()
data = np.load(EXAMPLE / "data.npz")
x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
keras.utils.set_random_seed(0)
order = np.random.default_rng(0).permutation(len(x))
train = order[: len(x) - int(round(0.2 * len(x)))]
spec = importlib.util.spec_from_file_location("digits_model", EXAMPLE / "model.py")
user = importlib.util.module_from_spec(spec)
spec.loader.exec_module(user)
inputs = keras.Input(shape=x.shape[1:], name="inputs")
norm = keras.layers.Normalization(axis=-1)
norm.adapt(x[train])
model = keras.Model(inputs, user.build(x.shape[1:], 10)(norm(inputs)))
model.compile(optimizer=keras.optimizers.Adam(0.001),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(x[train], y[train], epochs=15, batch_size=32, shuffle=True, verbose=0)
parts["fit"] = time.perf_counter() - t

t = time.perf_counter()
model.export(str(out / "savedmodel"), verbose=False)
(out / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(out / "savedmodel")).convert())
parts["tflite"] = time.perf_counter() - t

t = time.perf_counter()
import tf2onnx  # noqa: E402
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402

fn = tf.function(lambda v: model(v, training=False))
frozen = convert_variables_to_constants_v2(
    fn.get_concrete_function(tf.TensorSpec([None, *x.shape[1:]], tf.float32, name="inputs")))
onnx_model, _ = tf2onnx.convert.from_graph_def(
    frozen.graph.as_graph_def(), input_names=[frozen.inputs[0].name], output_names=[frozen.outputs[0].name],
    opset=17)
(out / "model.onnx").write_bytes(onnx_model.SerializeToString())
parts["onnx"] = time.perf_counter() - t
parts["total"] = time.perf_counter() - T0
print(json.dumps({"parts": parts}))
