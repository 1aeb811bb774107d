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
    (check_tensors if ds.multi else check_io)(model, ds, f"model.file: {path}")
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


# --- a model of several inputs or outputs (pipeline/tensor_data.py), every tensor bound by name ---


def outputs_of(model, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's float32 outputs by name for inputs ``x`` (by name)."""
    y = model(x, training=False)
    y = list(y.values()) if isinstance(y, dict) else (y if isinstance(y, (list, tuple)) else [y])
    return {name: np.asarray(v, np.float32) for name, v in zip(model.output_names, y)}


def check_tensors(model, ds, what: str) -> None:
    """The model's inputs and outputs are the data's, by name and shape: or one line saying why not."""
    key = what.split(":")[0]
    who = what.partition(": ")[2] or "the model"
    ins = {t.name: tuple(t.shape[1:]) for t in model.inputs}
    outs = dict(zip(model.output_names, (tuple(t.shape[1:]) for t in model.outputs)))
    for side, got, want in (("inputs", ins, ds.input_names), ("outputs", outs, ds.output_names)):
        if sorted(got) != sorted(want):
            raise ConfigError(None, key, f"{who} has {side} {', '.join(map(repr, got))}; the data's are "
                              f"{', '.join(map(repr, want))} (the .npz's arrays, bound by name)")
    for i in ds.inputs:
        if ins[i.name] != i.shape:
            raise ConfigError(None, key, f"{who}'s input {i.name!r} takes examples of shape {ins[i.name]}, the "
                              f"data's are {i.shape}")
    for o in ds.outputs:
        if outs[o.name] != (o.units,):
            raise ConfigError(None, key, f"{who}'s output {o.name!r} has shape {outs[o.name]}, expected "
                              f"({o.units},) for a {o.task} of {o.units} value(s)")


def compose_tensors(cfg: dict[str, Any], ds):
    """The model to train for a TensorDataset: each input (named as the data names it) ->
    Normalization (if standardize) -> the builder's model, called with a dict by input name ->
    each output (an Identity layer named as the data names it).

    The builder is called as ``build(input_shapes, outputs)``: ``{input name: one example's
    shape}`` and ``{output name: its number of values}`` (classes, or targets)."""
    tf, keras = tensorflow()
    keras.utils.set_random_seed(cfg["train"]["seed"])
    m = cfg["model"]
    shapes = {i.name: i.shape for i in ds.inputs}
    inner = userfile.call(cfg, "model.builder", dict(shapes), {o.name: o.units for o in ds.outputs})
    if not isinstance(inner, keras.Model):
        raise ConfigError(None, "model.builder", f"{m['builder']} returned {type(inner).__name__}, expected a keras.Model")
    check_tensors(inner, ds, f"model.builder: {m['builder']}")
    why = recurrent.unfixed_length(inner, "the data's examples have a fixed length: keras.Input(shape=...) in "
                                          "the builder as input_shapes gives it")
    if why:
        raise ConfigError(None, "model.builder", why)
    inputs = [keras.Input(shape=i.shape, name=i.name) for i in ds.inputs]
    fed = {}
    for i, t in zip(ds.inputs, inputs):
        if cfg["data"].get("standardize", True):
            norm = keras.layers.Normalization(axis=-1, name=f"{STANDARDIZE}_{i.name}")
            norm.adapt(ds.x_train[i.name])
            t = norm(t)
        fed[i.name] = t
    y = inner(fed)
    y = dict(zip(inner.output_names, y if isinstance(y, (list, tuple)) else [y]))
    outputs = [keras.layers.Identity(name=o.name)(y[o.name]) for o in ds.outputs]
    return keras.Model(inputs, outputs, name="edge_model")


def output_kinds(model, ds) -> dict[str, str]:
    """Per output: 'values' (regression); 'probabilities' when every row is a distribution, else 'logits'."""
    y = outputs_of(model, {k: v[:64] for k, v in ds.x_train.items()})
    kinds = {}
    for o in ds.outputs:
        v = y[o.name].astype(np.float64)
        probs = bool(np.all(v >= 0) and np.all(v <= 1) and np.allclose(v.sum(axis=1), 1.0, atol=1e-4))
        kinds[o.name] = "values" if o.task != "classification" else ("probabilities" if probs else "logits")
    return kinds


def compile_tensors(cfg: dict[str, Any], model, ds, kinds: dict[str, str]) -> None:
    """Compile with one loss per output (train.loss for the regression outputs, "auto" their mean
    squared error; sparse categorical cross-entropy for the classifications) and the optimizer."""
    _, keras = tensorflow()
    t = cfg["train"]
    regression = {"auto": keras.losses.MeanSquaredError, "mean_squared_error": keras.losses.MeanSquaredError,
                  "mean_absolute_error": keras.losses.MeanAbsoluteError, "huber": keras.losses.Huber}[t["loss"]]
    losses, metrics = {}, {}
    for o in ds.outputs:
        if o.task == "classification":
            losses[o.name] = keras.losses.SparseCategoricalCrossentropy(from_logits=kinds[o.name] == "logits")
            metrics[o.name] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        else:
            losses[o.name] = regression()
            metrics[o.name] = [keras.metrics.MeanAbsoluteError(name="mae")]
    optimizers = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
                  "rmsprop": keras.optimizers.RMSprop}
    model.compile(loss=losses, optimizer=optimizers[t["optimizer"]](learning_rate=t["learning_rate"]),
                  metrics=metrics)
