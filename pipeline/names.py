"""The names the stages share, in one place: the model's input and output, and its two formats.

train names the Keras model's input, export the SavedModel's signature and the ONNX
graph's input and output after them; verify runs both float32 formats.
"""

INPUT_NAME = "celsius"
OUTPUT_NAME = "fahrenheit"
FORMATS = ("onnx", "tflite")  # the float32 models export writes, and verify checks at the ulp level
