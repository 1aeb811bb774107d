"""build/reference.npz: the probe inputs and the Keras model's outputs on them. numpy only.

Export computes it while TensorFlow is loaded anyway (``arrays``, given the model's
predict function) and writes it; verify compares every format with it and bundle picks
its golden data from it, neither importing TensorFlow. The arrays:

- ``x``: every parity probe (float32); ``group``: each one's group, an index into
  ``group_names`` (training, grid, edge, random: probes.parity_probes);
- ``keras_y``: Keras's outputs on ``x``;
- ``accuracy_x``, ``keras_accuracy_y``: the held-out accuracy grid and Keras's outputs on it;
- ``keras_sha256``: the sha256 of the model.keras they came from.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import fsutil, probes
from .errors import StageInputError


def arrays(cfg: dict[str, Any], predict: Callable[[np.ndarray], np.ndarray], keras_sha256: str) -> dict[str, np.ndarray]:
    """The reference of a model whose float32 outputs ``predict`` gives, shape (n,) for (n,)."""
    groups = probes.parity_probes(cfg)
    x = np.concatenate(list(groups.values()))
    group = np.concatenate([np.full(len(v), i, np.int8) for i, v in enumerate(groups.values())])
    acc_x = probes.accuracy_grid(cfg)
    return {
        "x": x,
        "group": group,
        "group_names": np.array(list(groups)),
        "keras_y": predict(x),
        "accuracy_x": acc_x,
        "keras_accuracy_y": predict(acc_x),
        "keras_sha256": np.array(keras_sha256),
    }


def dataset_arrays(cfg: dict[str, Any], ds, predict: Callable[[np.ndarray], np.ndarray], keras_sha256: str
                   ) -> dict[str, np.ndarray]:
    """Dataset mode's reference: ``x`` (n, *shape) with ``group`` as above (training, validation,
    synthetic, edge: probes.dataset_probes), ``keras_y`` (n, outputs), and the validation rows'
    labels ``y_val`` (the true targets accuracy is judged against)."""
    groups = probes.dataset_probes(cfg, ds)
    x = np.concatenate(list(groups.values()))
    group = np.concatenate([np.full(len(v), i, np.int8) for i, v in enumerate(groups.values())])
    lo, hi = ds.observed_range()
    return {
        "x": x,
        "group": group,
        "group_names": np.array(list(groups)),
        "keras_y": predict(x),
        "y_val": np.asarray(ds.y_val),
        "keras_sha256": np.array(keras_sha256),
        # What bundle's signature needs, so that neither verify nor bundle reads the data again.
        "input_shape": np.array(ds.input_shape, np.int64),
        "feature_names": np.array(ds.feature_names),
        "labels": np.array(ds.labels or [], dtype=str),
        "target_name": np.array(ds.target_name),
        "data_sha256": np.array(json.dumps({Path(k).name: v for k, v in sorted(ds.sha256.items())})),
        "observed_min": lo,
        "observed_max": hi,
    }


def save(path: Path, ref: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **ref)
    fsutil.write_bytes(path, buf.getvalue())


def load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise StageInputError(path, "not found", "run `make export` or `python -m pipeline export` first")
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # a damaged zip raises several kinds
        raise StageInputError(path, f"unreadable: {e}", "re-run export") from None


def in_group(ref: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Which probes of ``ref["x"]`` belong to the group ``name`` (a boolean mask)."""
    return ref["group"] == list(ref["group_names"]).index(name)
