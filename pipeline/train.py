"""Stage 1, train: config -> build/model.keras, build/train/history.json (and loss.png).

The data is read (and refused if bad) before TensorFlow is imported. ``[train] batch_size``
picks the loop: an integer runs ``model.fit``'s mini-batch epochs (shuffled, seeded,
deterministic); ``"all"`` runs every step on the full batch inside one compiled TensorFlow
loop (``tf.function`` over ``tf.range``) that records the loss of every step. Each such step
is exactly what ``fit`` does on a full batch (forward pass, the compiled loss,
``optimizer.apply``), so the tutorial preset gives the tutorial's weights bit for bit
(tests/pipeline/test_train.py checks this against ``fit``). With ``[model] file`` the trained model is
checked against the data and copied as it is: no training.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.tfenv import tensorflow

from . import dataset, fsutil, keras_model
from .errors import VerificationFailed
from .layout import Layout

MAX_LEAST_SQUARES_FEATURES = 1024  # the least-squares line of a regression is computed up to this many features


def fit_compiled(model, loss_fn, optimizer, x, y, steps: int) -> np.ndarray:
    """Run ``steps`` full-batch training steps in one compiled loop; return each step's loss.

    The loss recorded for a step is the loss before that step's update, as ``fit`` reports it.
    """
    tf, _ = tensorflow()
    x = tf.constant(x, dtype=tf.float32)
    y = tf.constant(y, dtype=tf.float32)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def loop(n):
        losses = tf.TensorArray(tf.float32, size=n)
        for i in tf.range(n):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            losses = losses.write(i, loss)
        return losses.stack()

    return loop(tf.constant(steps, dtype=tf.int32)).numpy()


def least_squares(ds, loss: str) -> dict[str, Any] | None:
    """A regression's closed-form least-squares line through the training rows (float64): its
    coefficients, intercept and the training loss it scores (the config's loss, as Keras computes
    it). For mean squared error the best any linear model can do: the loss plot's dashed line.
    None for a classification or more than MAX_LEAST_SQUARES_FEATURES features."""
    if ds.task != "regression" or len(ds.feature_names) > MAX_LEAST_SQUARES_FEATURES:
        return None
    x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
    y = ds.y_train.astype(np.float64)
    a = np.hstack([x, np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    r = np.abs(a @ coef - y)
    value = {"mean_squared_error": np.mean(r**2), "mean_absolute_error": np.mean(r),
             "huber": np.mean(np.where(r <= 1.0, 0.5 * r**2, r - 0.5))}.get(loss)  # Keras's Huber delta = 1
    return {"coef": coef[:-1].tolist(), "intercept": coef[-1].tolist(),  # per target for several
            "loss": None if value is None else float(value)}


def steps(t: dict[str, Any], rows: int) -> int:
    """The optimizer steps training took: one per batch of each epoch."""
    return int(t["epochs"]) * (1 if t["batch_size"] == "all" else math.ceil(rows / t["batch_size"]))


def batch_norm_layers(model) -> list[dict[str, Any]]:
    """Each BatchNormalization layer's name and momentum, nested models included (verify's hint
    when their moving statistics saw too few updates to be trusted)."""
    out, todo = [], list(model.layers)
    while todo:
        layer = todo.pop(0)
        if type(layer).__name__ in ("BatchNormalization", "SyncBatchNormalization"):
            out.append({"layer": layer.name, "momentum": float(layer.momentum)})
        todo += list(getattr(layer, "layers", []))
    return out


def validation_callback(keras, ds, metric: str):
    """Records the validation loss and metric after each epoch, from one forward pass over the
    validation rows (``fit``'s own ``validation_data`` runs a whole evaluate loop per epoch,
    which costs more than the epoch itself on a small data set)."""

    class Validation(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history = {"val_loss": [], "val_" + metric: []}

        def on_epoch_end(self, epoch, logs=None):
            loss, score = validation_scores(self.model, ds, metric)
            self.history["val_loss"].append(loss)
            self.history["val_" + metric].append(score)

    return Validation()


def validation_scores(model, ds, metric: str) -> tuple[float, float]:
    """(loss, metric) on the validation rows; (nan, nan) without any."""
    if not len(ds.x_val):
        return float("nan"), float("nan")
    y = model(ds.x_val, training=False)
    y_true = ds.y_val.reshape(len(ds.y_val), -1) if metric == "mae" else ds.y_val
    loss = float(model.loss(y_true, y))
    y = np.asarray(y)
    score = (np.mean(y.argmax(axis=1) == ds.y_val) if metric == "accuracy"
             else np.mean(np.abs(y.reshape(len(y), -1) - y_true)))
    return loss, float(score)


def came_trained(cfg: dict[str, Any], layout: Layout, model, base: dict[str, Any], kind) -> tuple[dict[str, Any], Any]:
    """A trained ``model.file``, checked against the data: copied as it is to model.keras, with a
    history saying so (``kind``: its output kind, or one per output)."""
    fsutil.write_bytes(layout.model_keras, Path(cfg["model"]["file"]).read_bytes())
    history = {**base, "came_trained": True, "source": cfg["model"]["file"], "loss": [], "epochs": 0,
               "output_kind": kind, "train_seconds": 0.0, "parameters": int(model.count_params())}
    fsutil.write_json(layout.history, history)
    return history, model


def check_finite(losses: list[float]) -> None:
    """VerificationFailed naming the first epoch whose loss is not finite."""
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmax(~np.isfinite(losses)))
        raise VerificationFailed(f"train: loss became {losses[bad]} at epoch {bad + 1} "
                                 "(expected finite; lower train.learning_rate or check the data's scale)")


def saved(layout: Layout, model, history: dict[str, Any], plot: bool) -> tuple[dict[str, Any], Any]:
    """Save the trained model and its history (and draw loss.png with ``plot``); return both."""
    with fsutil.atomic_path(layout.model_keras) as tmp:
        model.save(tmp)
    fsutil.write_json(layout.history, history)
    if plot:
        from .plots import plot_loss

        plot_loss(history, layout.loss_png)
    return history, model


def run(cfg: dict[str, Any], layout: Layout, plot: bool = True, ds=None) -> tuple[dict[str, Any], Any]:
    """Train and write the stage's outputs; return the history (a summary for the console) and
    the model, as saved (export may take it from here rather than load it again).

    Args:
        plot: also draw build/train/loss.png (make draws it in a parallel job instead).
        ds: the config's data, already read and checked (else it is read here).
    """
    ds = ds if ds is not None else dataset.load(cfg)
    tf, keras = tensorflow()
    tf.config.experimental.enable_op_determinism()
    t = cfg["train"]
    if ds.multi:
        return run_tensors(cfg, layout, ds, plot)
    base = {"task": ds.task, "rows": {"train": int(len(ds.x_train)), "validation": int(len(ds.x_val))}}
    if cfg["model"].get("file"):
        model = keras_model.load_trained(cfg["model"]["file"], ds)
        return came_trained(cfg, layout, model, base, keras_model.output_kind(model, ds))
    model = keras_model.compose(cfg, ds)
    kind = keras_model.output_kind(model, ds)
    keras_model.compile_for(cfg, model, ds, kind)
    metric = "accuracy" if ds.task == "classification" else "mae"
    t0 = time.perf_counter()
    if t["batch_size"] == "all":
        y = ds.y_train.reshape(len(ds.y_train), -1) if ds.task == "regression" else ds.y_train
        losses = fit_compiled(model, model.loss, model.optimizer, ds.x_train, y, t["epochs"])
        h = {"loss": [float(v) for v in losses]}
        val_loss, val_score = validation_scores(model, ds, metric)
        h.update({"val_loss": [val_loss], "val_" + metric: [val_score]})  # at the end only
    else:
        val = validation_callback(keras, ds, metric)
        fit = model.fit(ds.x_train, ds.y_train, epochs=t["epochs"], batch_size=t["batch_size"], shuffle=True,
                        verbose=0, callbacks=[val])
        h = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
        h.update(val.history)
    seconds = time.perf_counter() - t0
    check_finite(h["loss"])
    loss_name = model.loss.name if hasattr(model.loss, "name") else str(t["loss"])
    history = {
        **base,
        "came_trained": False,
        "output_kind": kind,
        "loss": h["loss"],
        "val_loss": h.get("val_loss", []),
        "metric": metric,
        metric: h.get(metric, []),
        "val_" + metric: h.get("val_" + metric, []),
        "epochs": int(t["epochs"]),
        "batch_size": t["batch_size"],
        "train_seconds": round(seconds, 4),
        "final_loss": h["loss"][-1],
        "loss_name": loss_name,
        "parameters": int(model.count_params()),
        "least_squares": least_squares(ds, loss_name),
        "steps": steps(t, len(ds.x_train)),
        "batch_norm": batch_norm_layers(model),
    }
    return saved(layout, model, history, plot)


def run_tensors(cfg: dict[str, Any], layout: Layout, ds, plot: bool = True) -> tuple[dict[str, Any], Any]:
    """``run`` for a model of several inputs or outputs (pipeline/tensor_data.py): ``model.fit``
    on dicts by tensor name, one loss per output (their sum is the loss); ``batch_size = "all"``
    is one full-batch step per epoch. The history records, per output, its metric on the training
    rows (as fit measured it) and on the validation rows after each epoch."""
    _, keras = tensorflow()
    t = cfg["train"]
    first = ds.outputs[0].name
    n_train, n_val = len(ds.y_train[first]), len(ds.y_val[first])
    base = {"task": "tensors", "rows": {"train": n_train, "validation": n_val},
            "inputs": ds.input_names, "outputs": ds.output_names}
    if cfg["model"].get("file"):
        model = keras_model.load_trained(cfg["model"]["file"], ds)
        return came_trained(cfg, layout, model, base, keras_model.output_kinds(model, ds))
    model = keras_model.compose_tensors(cfg, ds)
    kinds = keras_model.output_kinds(model, ds)
    keras_model.compile_tensors(cfg, model, ds, kinds)
    metrics = {o.name: "accuracy" if o.task == "classification" else "mae" for o in ds.outputs}
    val: dict[str, list[float]] = {"val_loss": []}

    class Validation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if not n_val:
                return
            scores = self.model.evaluate(ds.x_val, ds.y_val, batch_size=max(n_val, 1), verbose=0, return_dict=True)
            for key, v in scores.items():
                val.setdefault("val_" + key, []).append(float(v))

    t0 = time.perf_counter()
    fit = model.fit(ds.x_train, ds.y_train, epochs=t["epochs"], batch_size=n_train if t["batch_size"] == "all"
                    else t["batch_size"], shuffle=True, verbose=0, callbacks=[Validation()])
    seconds = time.perf_counter() - t0
    h = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    check_finite(h["loss"])
    history = {
        **base,
        "came_trained": False,
        "output_kind": kinds,
        "loss": h["loss"],
        "val_loss": val.get("val_loss", []),
        "metric": "loss",
        "outputs_metrics": {name: {"metric": m, "train": h.get(f"{name}_{m}", []), "validation": val.get(
            f"val_{name}_{m}", [])} for name, m in metrics.items()},
        "epochs": int(t["epochs"]),
        "batch_size": t["batch_size"],
        "train_seconds": round(seconds, 4),
        "final_loss": h["loss"][-1],
        "loss_name": "sum of the outputs' losses",
        "parameters": int(model.count_params()),
        "steps": steps(t, n_train),
        "batch_norm": batch_norm_layers(model),
    }
    return saved(layout, model, history, plot)
