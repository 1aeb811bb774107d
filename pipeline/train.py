"""Stage 1, train: config -> build/model.keras, build/train/history.json (and loss.png).

All steps run inside one compiled TensorFlow loop (``tf.function`` over ``tf.range``)
that records the loss of every step, instead of ``model.fit(..., epochs=N)``'s Python
loop over epochs. Each step is exactly what ``fit`` does on a full batch (forward pass,
the compiled loss, ``optimizer.apply``), so the tutorial preset gives the tutorial's
weights bit for bit (tests/test_train.py checks this against ``fit``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from export.tfenv import tensorflow

from . import fsutil
from .layout import Layout
from .names import INPUT_NAME


def least_squares(cfg: dict[str, Any]) -> tuple[float, float]:
    """Closed-form optimum (w, b) of the MSE line through the training data, in float64."""
    c = np.asarray(cfg["data"]["celsius"], dtype=np.float64)
    f = np.asarray(cfg["data"]["fahrenheit"], dtype=np.float64)
    a = np.stack([c, np.ones_like(c)], axis=1)
    (w, b), *_ = np.linalg.lstsq(a, f, rcond=None)
    return float(w), float(b)


def loss_at(cfg: dict[str, Any], w: float, b: float) -> float:
    """The training loss (the config's loss function, as Keras computes it) of the line w * c + b, in float64."""
    c = np.asarray(cfg["data"]["celsius"], dtype=np.float64)
    f = np.asarray(cfg["data"]["fahrenheit"], dtype=np.float64)
    r = np.abs(w * c + b - f)
    loss = cfg["train"]["loss"]
    if loss == "mean_squared_error":
        return float(np.mean(r**2))
    if loss == "mean_absolute_error":
        return float(np.mean(r))
    return float(np.mean(np.where(r <= 1.0, 0.5 * r**2, r - 0.5)))  # huber, Keras's delta = 1


def build_model(cfg: dict[str, Any]):
    """The Sequential model of ``model.layers``, seeded with ``train.seed`` before it is built."""
    _, keras = tensorflow()
    keras.utils.set_random_seed(cfg["train"]["seed"])
    units = cfg["model"]["layers"]
    layers = [keras.Input(shape=(1,), name=INPUT_NAME)]
    for i, n in enumerate(units):
        last = i == len(units) - 1
        act = None if last else cfg["model"]["activation"]
        layers.append(keras.layers.Dense(units=n, activation=act, name=f"dense_{i}"))
    return keras.Sequential(layers, name="celsius_to_fahrenheit")


def _loss_and_optimizer(cfg: dict[str, Any]):
    _, keras = tensorflow()
    losses = {
        "mean_squared_error": keras.losses.MeanSquaredError,
        "mean_absolute_error": keras.losses.MeanAbsoluteError,
        "huber": keras.losses.Huber,
    }
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    t = cfg["train"]
    return losses[t["loss"]](), optimizers[t["optimizer"]](learning_rate=t["learning_rate"])


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


def dense_weights(model) -> list[dict[str, list]]:
    """Each Dense layer's kernel and bias as nested lists (float32 values as Python floats)."""
    return [
        {"name": layer.name, "kernel": w.tolist(), "bias": b.tolist()}
        for layer in model.layers
        for w, b in [layer.get_weights()]
    ]


def run(cfg: dict[str, Any], layout: Layout, plot: bool = True) -> dict[str, Any]:
    """Train and write the stage's outputs; return a summary for the console.

    Args:
        plot: also draw build/train/loss.png (make draws it in a parallel job instead).
    """
    from .config import is_dataset

    if is_dataset(cfg):
        return run_dataset(cfg, layout, plot)
    c = np.asarray(cfg["data"]["celsius"], dtype=np.float32).reshape(-1, 1)
    f = np.asarray(cfg["data"]["fahrenheit"], dtype=np.float32).reshape(-1, 1)

    model = build_model(cfg)
    loss_fn, optimizer = _loss_and_optimizer(cfg)
    model.compile(loss=loss_fn, optimizer=optimizer)
    t0 = time.perf_counter()
    losses = fit_compiled(model, loss_fn, optimizer, c, f, cfg["train"]["steps"])
    seconds = time.perf_counter() - t0
    if not np.all(np.isfinite(losses)):
        from .errors import VerificationFailed

        bad = int(np.argmax(~np.isfinite(losses)))
        raise VerificationFailed(
            f"train: loss became {losses[bad]} at step {bad + 1} "
            "(expected finite; lower train.learning_rate)"
        )

    at_100 = float(model(np.array([[100.0]], np.float32), training=False).numpy()[0, 0])
    w_opt, b_opt = least_squares(cfg)
    history = {
        "loss": [float(v) for v in losses],
        "steps": int(cfg["train"]["steps"]),
        "train_seconds": round(seconds, 4),
        "final_loss": float(losses[-1]),
        "weights": dense_weights(model),
        "prediction_at_100c": at_100,
        "loss_name": cfg["train"]["loss"],
        "least_squares": {"w": w_opt, "b": b_opt, "prediction_at_100c": w_opt * 100 + b_opt,
                          "loss": loss_at(cfg, w_opt, b_opt)},
    }
    return save(model, history, layout, plot)


def save(model, history: dict[str, Any], layout: Layout, plot: bool) -> dict[str, Any]:
    """Write the stage's outputs: model.keras, history.json and (``plot``) loss.png; return the history."""
    with fsutil.atomic_path(layout.model_keras) as tmp:
        model.save(tmp)
    fsutil.write_json(layout.history, history)
    if plot:
        from .lossplot import plot_loss

        plot_loss(history, layout.loss_png)
    return history


def validation_callback(keras, ds, metric: str):
    """Records the validation loss and metric after each epoch, from one forward pass over the
    validation rows (``fit``'s own ``validation_data`` runs a whole evaluate loop per epoch,
    which costs more than the epoch itself on a small data set)."""

    class Validation(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history = {"val_loss": [], "val_" + metric: []}

        def on_epoch_end(self, epoch, logs=None):
            y = self.model(ds.x_val, training=False)
            self.history["val_loss"].append(float(self.model.loss(ds.y_val, y)))
            y = np.asarray(y)
            score = (np.mean(y.argmax(axis=1) == ds.y_val) if metric == "accuracy"
                     else np.mean(np.abs(y.reshape(len(y), -1)[:, 0] - ds.y_val)))
            self.history["val_" + metric].append(float(score))

    return Validation()


def run_dataset(cfg: dict[str, Any], layout: Layout, plot: bool = True) -> dict[str, Any]:
    """Dataset mode: the user's data and model, mini-batch epochs, seeded and deterministic.

    The data is read (and refused if bad) before TensorFlow is imported. With ``[model] file``
    the trained model is checked against the data and copied as it is: no training.
    """
    from . import dataset, keras_model

    ds = dataset.load(cfg)
    tf, keras = tensorflow()
    tf.config.experimental.enable_op_determinism()
    t = cfg["train"]
    if cfg["model"].get("file"):
        model = keras_model.load_trained(cfg["model"]["file"], ds)
        kind = keras_model.output_kind(model, ds)
        fsutil.write_bytes(layout.model_keras, Path(cfg["model"]["file"]).read_bytes())
        history = {"came_trained": True, "source": cfg["model"]["file"], "loss": [], "epochs": 0,
                   "task": ds.task, "output_kind": kind, "train_seconds": 0.0}
        fsutil.write_json(layout.history, history)
        return history
    model = keras_model.compose(cfg, ds)
    kind = keras_model.output_kind(model, ds)
    keras_model.compile_for(cfg, model, ds, kind)
    metric = "accuracy" if ds.task == "classification" else "mae"
    val = validation_callback(keras, ds, metric)
    t0 = time.perf_counter()
    fit = model.fit(ds.x_train, ds.y_train, epochs=t["epochs"], batch_size=t["batch_size"], shuffle=True,
                    verbose=0, callbacks=[val])
    seconds = time.perf_counter() - t0
    h = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    h.update(val.history)
    if not np.all(np.isfinite(h["loss"])):
        from .errors import VerificationFailed

        bad = int(np.argmax(~np.isfinite(h["loss"])))
        raise VerificationFailed(f"train: loss became {h['loss'][bad]} at epoch {bad + 1} "
                                 "(expected finite; lower train.learning_rate or check the data's scale)")
    history = {
        "came_trained": False,
        "task": ds.task,
        "output_kind": kind,
        "loss": h["loss"],
        "val_loss": h.get("val_loss", []),
        "metric": metric,
        metric: h.get(metric, []),
        "val_" + metric: h.get("val_" + metric, []),
        "epochs": int(t["epochs"]),
        "batch_size": int(t["batch_size"]),
        "train_seconds": round(seconds, 4),
        "final_loss": h["loss"][-1],
        "loss_name": model.loss.name if hasattr(model.loss, "name") else str(t["loss"]),
        "rows": {"train": int(len(ds.x_train)), "validation": int(len(ds.x_val))},
        "parameters": int(model.count_params()),
    }
    return save(model, history, layout, plot)
