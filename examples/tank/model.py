"""The tank example's model: two inputs and two outputs, every tensor named as the data names it.

``build(input_shapes, outputs)`` gets ``{input name: one example's shape}`` and ``{output
name: its number of values}`` and returns the model uncompiled; the pipeline puts a
Normalization layer in front of each input, compiles it (one loss per output: sparse
categorical cross-entropy on the state's logits, mean squared error on the level) and trains it.

    gauge (8, 8, 1) -> Conv2D(8, 3x3, relu) -> Flatten -> Dense(16, relu) --+
    readings (3,)   -> Dense(16, relu) --------------------------------------+-> Concatenate
        -> Dense(outputs["state"]): state, logits over draining, steady, filling
        -> Dense(outputs["level"]): level, metres
"""

from __future__ import annotations


def build(input_shapes, outputs):
    import keras

    gauge = keras.Input(shape=tuple(input_shapes["gauge"]), name="gauge")
    readings = keras.Input(shape=tuple(input_shapes["readings"]), name="readings")
    g = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(gauge)
    g = keras.layers.Dense(16, activation="relu", name="seen")(keras.layers.Flatten(name="flat")(g))
    r = keras.layers.Dense(16, activation="relu", name="read")(readings)
    h = keras.layers.Concatenate(name="both")([g, r])
    state = keras.layers.Dense(outputs["state"], name="state")(h)
    level = keras.layers.Dense(outputs["level"], name="level")(h)
    return keras.Model([gauge, readings], [state, level], name="tank")
