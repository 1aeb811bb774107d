"""The names of the reduced-precision variants, in one place (stdlib only, so that config
validation can name them without importing numpy or a converter)."""

VARIANTS = ("onnx-fp16", "onnx-int8-dynamic", "onnx-int8-static", "tflite-fp16", "tflite-int8-dynamic",
            "tflite-int8-full")
