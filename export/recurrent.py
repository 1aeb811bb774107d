"""Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional) with builtin TFLite ops: an unrolled copy.

Why: a Keras 3 recurrent layer traces to a ``while`` loop over a TensorList, which the TFLite
converter keeps only as Select TF ops (``tf.TensorListReserve``; tensorflow #73254), which the
device's builtin-ops runtime lacks. The same layer with ``unroll=True`` traces to one copy of
its cell per time step: builtin ops only, as long as the sequence length is fixed.

So the exported TFLite models (float32 and the TFLite variants) come from ``unrolled(model)``:
a clone whose recurrent layers are rebuilt from their config with ``unroll=True`` and given the
trained weights. Before anything is exported from it, the clone must give the model's outputs on
the calibration rows (``check_same``); verify then compares every format with the original model.
A model of several inputs and outputs is cloned the same way: ``clone_model`` keeps the Keras
names of its inputs and output layers, by which every format binds them.

ONNX uses the original graph where tf2onnx turns it into a native ONNX op (an LSTM, a
Bidirectional LSTM) and the unrolled one where tf2onnx would make a ``Loop`` (GRU, SimpleRNN):
``export/onnx_export.py``'s ``convert(..., unrolled=...)``, measured in docs/your-model.md.

When it can go: once the TFLite converter lowers Keras 3's recurrent loops to builtin ops
(a fused LSTM, or a WHILE without TensorLists) by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .errors import ExportError

# The clone computes what the model computes, op for op (measured: bit for bit on CPU); this
# leaves room for float32 rounding alone, relative to the outputs' largest magnitude.
SAME_RTOL = 1e-5


def walk(model) -> Iterator:
    """Every layer of ``model``, nested models' layers included, in order."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from walk(layer)


def is_recurrent(layer) -> bool:
    import keras

    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))


def recurrent_layers(model) -> list:
    """The model's recurrent layers (a Bidirectional counts once), nested models included."""
    return [layer for layer in walk(model) if is_recurrent(layer)]


def unfixed_length(model, hint: str = "") -> str | None:
    """The one-line refusal for the first recurrent layer whose sequence length is not fixed
    (an input shape of (batch, None, features)), or None when every one is fixed.

    Args:
        hint: what to write instead, e.g. "keras.Input(shape=(24, 3)) in the builder".
    """
    for layer in recurrent_layers(model):
        shape = (layer.get_build_config() or {}).get("input_shape")
        if shape is not None and (len(shape) < 2 or shape[1] is None):
            return (f"layer {layer.name!r} ({type(layer).__name__}) runs over a sequence of unknown length "
                    f"(input shape {tuple(shape)}); expected a fixed length{f' ({hint})' if hint else ''}: "
                    "the TFLite export unrolls it over its time steps, builtin ops only")
    return None


def _unrolled_config(config: dict) -> dict:
    """A recurrent layer's config with unroll=True; a Bidirectional's, for both its layers."""
    config = dict(config)
    if "unroll" in config:
        config["unroll"] = True
    for key in ("layer", "backward_layer"):  # Bidirectional: the serialized wrapped layers
        inner = config.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            config[key] = {**inner, "config": _unrolled_config(inner["config"])}
    return config


def unrolled(model):
    """A copy of ``model`` whose recurrent layers run with ``unroll=True``, with the model's weights;
    None when it has no recurrent layer.

    Raises ExportError when a recurrent layer's sequence length is not fixed."""
    import keras

    if not recurrent_layers(model):
        return None
    why = unfixed_length(model)
    if why:
        raise ExportError(f"export: {why}")

    def rebuild(layer):
        config = layer.get_config()
        return type(layer).from_config(_unrolled_config(config) if is_recurrent(layer) else config)

    clone = keras.models.clone_model(model, clone_function=rebuild, recursive=True)
    clone.set_weights(model.get_weights())
    # set_weights writes the variables only: a layer that derives tensors from them (an adapted
    # Normalization's mean and variance) refreshes them here, as loading a .keras file does.
    for layer in walk(clone):
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return clone


def check_same(model, clone, rows, outputs: Callable) -> float:
    """The largest difference between ``clone`` and ``model`` on ``rows``; ExportError if it is
    more than float rounding (SAME_RTOL of the outputs' largest magnitude), for any output.

    Args:
        rows: the inputs (n, *shape), or for a model of several inputs a dict {input name: rows}.
        outputs: ``outputs(model, rows)`` -> the model's float32 outputs for ``rows``: one array,
            or a dict {output name: array} (each output then compared by name).
    """
    want, got = outputs(model, rows), outputs(clone, rows)
    n = len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)
    if not isinstance(want, dict):
        want, got = {"": want}, {"": got}
    worst = 0.0
    for name, w in want.items():
        w = np.asarray(w, np.float64)
        g = np.asarray(got[name], np.float64) if name in got else np.zeros(0)
        allowed = SAME_RTOL * max(1.0, float(np.max(np.abs(w))) if w.size else 0.0)
        diff = float(np.max(np.abs(g - w))) if w.size and g.shape == w.shape else (0.0 if not w.size else np.inf)
        if g.shape != w.shape or not diff <= allowed:
            of = f" (output {name!r})" if name else ""
            raise ExportError(f"export: the unrolled copy of the model (unroll=True, for TFLite) differs from the model"
                              f"{of} on {n} calibration rows by up to {diff:.3g} (shape {g.shape} vs {w.shape}, "
                              f"allowed {allowed:.3g}); expected the same function: a layer's state did not carry over")
        worst = max(worst, diff)
    return worst
