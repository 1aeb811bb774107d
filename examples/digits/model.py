"""The digits example's model: a small Conv2D classifier for 8x8 grey images (NHWC).

``build(input_shape, num_outputs)`` returns it uncompiled; the pipeline puts a Normalization
layer in front of it (standardizing the pixel values with the training rows' mean and
variance), compiles it (sparse categorical cross-entropy on logits, Adam) and trains it.

    (8, 8, 1) -> Conv2D(16, 3x3, same, relu) -> MaxPooling2D(2) -> (4, 4, 16)
              -> Conv2D(32, 3x3, same, relu) -> (4, 4, 32) -> Flatten (512)
              -> Dropout(0.25) -> Dense(128, relu) -> Dense(num_outputs): logits

About 72,000 parameters: small enough to train in seconds on two cores, and big enough that
the weights (not the graph's names and nodes) make up most of the ONNX file, so the int8
variant comes out at about a third of the float32 file's bytes.
"""

from __future__ import annotations


def build(input_shape, num_outputs):
    import keras

    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape))
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1")(inputs)
    h = layers.MaxPooling2D(2, name="pool_1")(h)
    h = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_2")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dropout(0.25, name="dropout")(h)
    h = layers.Dense(128, activation="relu", name="hidden")(h)
    outputs = layers.Dense(num_outputs, name="logits")(h)
    return keras.Model(inputs, outputs, name="digits_cnn")
