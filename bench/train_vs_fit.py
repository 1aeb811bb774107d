"""Training time alone, in one process: the train stage's compiled loop against `fit(epochs=500)`.

Both on the tutorial preset, from the same seed, alternating, after TensorFlow is imported
(so neither pays for the import). Prints JSON: the seconds of each run and whether the
weights are identical.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline import config, dataset, keras_model, train  # noqa: E402
from export.tfenv import tensorflow  # noqa: E402

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
_, keras = tensorflow()
cfg = config.load(Path(__file__).resolve().parent.parent / "configs" / "tutorial.toml")
ds = dataset.load(cfg)  # the tutorial's seven rows (configs/celsius.csv)
x, y = ds.x_train.astype(float).reshape(-1, 1), ds.y_train.astype(float).reshape(-1, 1)
epochs = cfg["train"]["epochs"]
ours, fits, same = [], [], True
for _ in range(runs):
    t = time.perf_counter()
    model = keras_model.compose(cfg, ds)  # the train stage's model, seeded as it seeds it
    keras_model.compile_for(cfg, model, ds, "values")
    train.fit_compiled(model, model.loss, model.optimizer, x, y, epochs)
    ours.append(time.perf_counter() - t)

    t = time.perf_counter()
    keras.utils.set_random_seed(cfg["train"]["seed"])
    ref = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(units=1)])
    ref.compile(loss="mean_squared_error", optimizer=keras.optimizers.Adam(0.1))
    ref.fit(x.reshape(-1), y.reshape(-1), epochs=epochs, verbose=False)
    fits.append(time.perf_counter() - t)
    same = same and all(np.array_equal(a, b) for a, b in zip(ref.get_weights(), model.get_weights()))
print(json.dumps({"compiled_loop_s": ours, "fit_s": fits, "identical_weights": bool(same), "epochs": epochs}))
