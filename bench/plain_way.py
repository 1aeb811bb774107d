"""The plain way, for comparison: one script doing what the tutorial does, then converting.

`model.fit(..., epochs=500)` (Keras's per-epoch loop), TFLiteConverter, tf2onnx, and a
comparison of the three on a few inputs. With Keras 3, tf2onnx's `from_keras` fails
(tensorflow-onnx #2448), so this uses `from_function` on a traced call, as a user would
after searching the error; TFLite uses `from_keras_model`. Prints the seconds each part took.
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
T0 = time.perf_counter()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

celsius_q = np.array([-40, -10, 0, 8, 15, 22, 38], dtype=float)
fahrenheit_a = np.array([-40, 14, 32, 46, 59, 72, 100], dtype=float)
parts = {"import": time.perf_counter() - T0}

t = time.perf_counter()
tf.keras.utils.set_random_seed(0)
l0 = tf.keras.layers.Dense(units=1)
model = tf.keras.Sequential([tf.keras.Input(shape=(1,)), l0])
model.compile(loss="mean_squared_error", optimizer=tf.keras.optimizers.Adam(0.1))
model.fit(celsius_q, fahrenheit_a, epochs=500, verbose=False)
parts["fit"] = time.perf_counter() - t

t = time.perf_counter()
tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
parts["tflite"] = time.perf_counter() - t

t = time.perf_counter()
import tf2onnx  # noqa: E402

spec = (tf.TensorSpec([None, 1], tf.float32, name="celsius"),)
onnx_model, _ = tf2onnx.convert.from_function(
    tf.function(lambda x: model(x)), input_signature=spec, opset=17
)
parts["onnx"] = time.perf_counter() - t

t = time.perf_counter()
import onnxruntime as ort  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

x = np.array([[-40.0], [0.0], [37.5], [100.0]], np.float32)
keras_y = model.predict(x, verbose=0)
sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
onnx_y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
    f.write(tflite)
    f.flush()
    it = Interpreter(model_path=f.name)
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    it.resize_tensor_input(i, [len(x), 1])
    it.allocate_tensors()
    it.set_tensor(i, x)
    it.invoke()
    tflite_y = it.get_tensor(o)
ok = np.allclose(onnx_y, keras_y, atol=1e-4) and np.allclose(tflite_y, keras_y, atol=1e-4)
parts["compare"] = time.perf_counter() - t
parts["total"] = time.perf_counter() - T0
w, b = (v.numpy().ravel()[0] for v in model.weights)
print(json.dumps({"parts": parts, "match": bool(ok), "w": float(w), "b": float(b)}))
sys.exit(0 if ok else 1)
