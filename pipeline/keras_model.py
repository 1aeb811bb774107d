"""The Keras model of a config: the user's (a builder, a dense stack or a trained file), with a
Normalization layer ahead of it, its tensors named as the config names them, and how to
train it. TensorFlow on call only.

The model that is saved, exported and shipped takes raw features: standardization (the
training rows' mean and variance, ``[data] standardize``) is its first layer, so every
format and the device compute it the same way. A trained ``.keras`` file is used as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from export import recurrent
from export.tfenv import tensorflow

from . import userfile
from .errors import ConfigError

STANDARDIZE = "standardize"  # the Normalization layer's name


def num_outputs(ds) -> int:
    """A classifier's classes, or a regression's targets."""
    return len(ds.labels) if ds.task == "classification" else len(ds.target_names)


def user_model(cfg: dict[str, Any], ds):
    """The user's model, uncompiled: from the builder, or the dense stack of ``model.layers``."""
    _, keras = tensorflow()
    m = cfg["model"]
    k = num_outputs(ds)
    if m.get("builder"):
        model = userfile.call(cfg, "model.builder", tuple(ds.input_shape), k)
        if not isinstance(model, keras.Model):
            raise ConfigError(None, "model.builder", f"{m['builder']} returned {type(model).__name__}, "
                              "expected a keras.Model")
        if len(getattr(model, "inputs", None) or [0]) != 1 or len(getattr(model, "outputs", None) or [0]) != 1:
            raise ConfigError(None, "model.builder", f"{m['builder']} returned a model with {len(model.inputs)} "
                              f"input(s) and {len(model.outputs)} output(s); one input and one output tensor are supported")
        return model
    units = list(m.get("layers") or [32, k])
    if units[-1] != k:
        raise ConfigError(None, "model.layers", f"the last layer has {units[-1]} unit(s), the task has {k} "
                          f"output(s): expected [..., {k}]")
    layers = [keras.Input(shape=tuple(ds.input_shape))]
    if len(ds.input_shape) > 1:
        layers.append(keras.layers.Flatten())
    for i, n in enumerate(units):
        act = None if i == len(units) - 1 else m.get("activation", "relu")
        layers.append(keras.layers.Dense(n, activation=act, name=f"dense_{i}"))
    return keras.Sequential(layers, name="dense_stack")


def compose(cfg: dict[str, Any], ds):
    """The model to train: the input (``model.input_name``) -> Normalization (if standardize) ->
    the user's model -> the output (``model.output_name``, an Identity layer)."""
    tf, keras = tensorflow()
    keras.utils.set_random_seed(cfg["train"]["seed"])
    inner = user_model(cfg, ds)
    # Before training: a recurrent layer over sequences of unknown length cannot be unrolled for
    # TFLite (export/recurrent.py), and the data's length is known.
    why = recurrent.unfixed_length(inner, f"the data's examples are {tuple(ds.input_shape)}: "
                                          f"keras.Input(shape={tuple(ds.input_shape)}) in the builder")
    if why:
        raise ConfigError(None, "model.builder", why)
    inputs = keras.Input(shape=tuple(ds.input_shape), name=cfg["model"]["input_name"])
    x = inputs
    if cfg["data"].get("standardize", True):
        norm = keras.layers.Normalization(axis=-1, name=STANDARDIZE)
        norm.adapt(ds.x_train)
        x = norm(x)
    try:
        y = inner(x)
    except Exception as e:
        raise ConfigError(None, "model", f"the model does not take inputs of shape {tuple(ds.input_shape)}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    want = (num_outputs(ds),)
    if tuple(y.shape[1:]) != want:
        raise ConfigError(None, "model", f"the model's output shape is {tuple(y.shape[1:])}, "
                          f"expected {want} for a {ds.task} with {want[0]} output(s)")
    return keras.Model(inputs, keras.layers.Identity(name=cfg["model"]["output_name"])(y), name="edge_model")


def output_kind(model, ds) -> str:
    """'values' (regression); 'probabilities' when every output row is a distribution, else 'logits'."""
    if ds.task != "classification":
        return "values"
    y = np.asarray(model(ds.x_train[:64], training=False), np.float64)
    probs = bool(np.all(y >= 0) and np.all(y <= 1) and np.allclose(y.sum(axis=1), 1.0, atol=1e-4))
    return "probabilities" if probs else "logits"


def compile_for(cfg: dict[str, Any], model, ds, kind: str) -> None:
    """Compile with the config's loss and optimizer; loss "auto" follows the task (and logits or not)."""
    _, keras = tensorflow()
    t = cfg["train"]
    loss = t["loss"]
    if loss == "auto":
        loss = "sparse_categorical_crossentropy" if ds.task == "classification" else "mean_squared_error"
    losses = {
        "mean_squared_error": keras.losses.MeanSquaredError,
        "mean_absolute_error": keras.losses.MeanAbsoluteError,
        "huber": keras.losses.Huber,
    }
    if loss == "sparse_categorical_crossentropy":
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=kind == "logits")
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss_fn = losses[loss]()
        metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    model.compile(loss=loss_fn, optimizer=optimizers[t["optimizer"]](learning_rate=t["learning_rate"]),
                  metrics=metrics)


def load_trained(path: str, ds):
    """A trained .keras file, checked against the data's input shape and the task's outputs."""
    _, keras = tensorflow()
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # keras raises many types for a bad archive
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(None, "model.file", f"{path}: does not load as a Keras model ({why})") from None
    check_io(model, ds, f"model.file: {path}")
    return model


def check_io(model, ds, what: str) -> None:
    """One input of the data's shape and one output of the task's: or one line saying why not."""
    ins, outs = model.inputs, model.outputs
    if len(ins) != 1 or len(outs) != 1:
        raise ConfigError(None, what.split(":")[0], f"{what.partition(': ')[2] or 'the model'} has {len(ins)} "
                          f"input(s) and {len(outs)} output(s); one input and one output tensor are supported")
    shape = tuple(ins[0].shape[1:])
    if shape != tuple(ds.input_shape):
        raise ConfigError(None, what.split(":")[0], f"the model takes inputs of shape {shape}, the data's are "
                          f"{tuple(ds.input_shape)}")
    want = (num_outputs(ds),)
    if tuple(outs[0].shape[1:]) != want:
        raise ConfigError(None, what.split(":")[0], f"the model's output shape is {tuple(outs[0].shape[1:])}, "
                          f"expected {want}")
