"""The sensor_gru example's model: a GRU over a trace of readings, classifying its waveform.

``build(input_shape, num_outputs)`` returns it uncompiled; the pipeline puts a Normalization
layer in front of it (the training readings' mean and variance), compiles it (sparse
categorical cross-entropy on logits, Adam) and trains it.

    (24, 1) -> GRU(16): its state after the last reading (16) -> Dense(num_outputs): logits

The sequence length is fixed by the input shape (24 readings): export unrolls the GRU over
those 24 steps for TFLite, whose builtin ops have no loop over a Keras 3 GRU
(docs/your-model.md, "Recurrent layers").
"""

from __future__ import annotations


def build(input_shape, num_outputs):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.GRU(16, name="gru")(inputs)
    outputs = keras.layers.Dense(num_outputs, name="logits")(h)
    return keras.Model(inputs, outputs, name="sensor_gru")
