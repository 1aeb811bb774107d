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
from pipeline import config, train  # noqa: E402
from export.tfenv import tensorflow  # noqa: E402

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
_, keras = tensorflow()
cfg = config.load(Path(__file__).resolve().parent.parent / "configs" / "tutorial.toml")
c = np.array(cfg["data"]["celsius"], dtype=float)
f = np.array(cfg["data"]["fahrenheit"], dtype=float)
steps = cfg["train"]["steps"]
ours, fits, same = [], [], True
for _ in range(runs):
    t = time.perf_counter()
    model = train.build_model(cfg)
    loss_fn, opt = train._loss_and_optimizer(cfg)
    model.compile(loss=loss_fn, optimizer=opt)
    train.fit_compiled(model, loss_fn, opt, c.reshape(-1, 1), f.reshape(-1, 1), steps)
    ours.append(time.perf_counter() - t)

    t = time.perf_counter()
    keras.utils.set_random_seed(cfg["train"]["seed"])
    ref = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(units=1)])
    ref.compile(loss="mean_squared_error", optimizer=keras.optimizers.Adam(0.1))
    ref.fit(c, f, epochs=steps, verbose=False)
    fits.append(time.perf_counter() - t)
    same = same and all(np.array_equal(a, b) for a, b in zip(ref.get_weights(), model.get_weights()))
print(json.dumps({"compiled_loop_s": ours, "fit_s": fits, "identical_weights": bool(same), "steps": steps}))
