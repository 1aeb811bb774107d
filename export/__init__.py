"""Format converters: Keras model -> SavedModel -> ONNX (tf2onnx) and TFLite.

One module per format; the Keras 3 workaround both of them rely on lives in
``keras3_savedmodel``. TensorFlow is imported inside the functions that need it.
"""
