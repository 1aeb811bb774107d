"""build/reference.npz: the probe rows, Keras's outputs on them and the validation labels. numpy only.

Export computes it while TensorFlow is loaded anyway and writes it; verify runs every other
model over the same rows and judges it against this, and bundle picks its golden rows from
it, neither importing TensorFlow nor reading the data again. The arrays:

- ``x``: every probe row (float32, (n, *input_shape)); ``group``: each one's group, an index
  into ``group_names`` (probes.groups, in the config's order);
- ``keras_y``: Keras's outputs on ``x`` (float32, (n, *output_shape));
- ``y_val``: the validation group's labels (class indices, or target values: float64, (n,) or
  (n, k) for k targets);
- ``keras_sha256``: the sha256 of the model.keras they came from; ``output_kind``: values,
  logits or probabilities (keras_model.output_kind);
- what the report and the signature need of the data: ``input_shape``, ``feature_names``,
  ``labels``, ``target_names``, ``data_sha256`` (JSON), ``observed_min``/``observed_max`` (the
  training rows'), ``range_min``/``range_max`` (the working range), ``oracle_rows`` (how many of
  the validation rows the oracle labelled);
- what the trivial baseline needs of the training rows' labels (verify's baseline check):
  ``train_counts``, each class's rows (a classifier; empty otherwise), and ``train_mean`` /
  ``train_median``, the target's (a regression; empty otherwise).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import fsutil, probes
from .errors import StageInputError


def arrays(cfg: dict[str, Any], ds, predict: Callable[[np.ndarray], np.ndarray], keras_sha256: str,
           output_kind: str) -> dict[str, np.ndarray]:
    """The reference of a model whose float32 outputs ``predict`` gives for rows (n, *input_shape)."""
    groups = probes.groups(cfg, ds)
    x = np.concatenate(list(groups.values()))
    group = np.concatenate([np.full(len(v), i, np.int8) for i, v in enumerate(groups.values())])
    obs_lo, obs_hi = ds.observed_range()
    lo, hi = probes.working_range(cfg, ds)
    return {
        "x": x,
        "group": group,
        "group_names": np.array(list(groups)),
        "keras_y": np.asarray(predict(x), np.float32),
        "y_val": np.asarray(ds.y_val, np.int64 if ds.task == "classification" else np.float64),
        "keras_sha256": np.array(keras_sha256),
        "output_kind": np.array(output_kind),
        "input_shape": np.array(ds.input_shape, np.int64),
        "feature_names": np.array(ds.feature_names),
        "labels": np.array(ds.labels or [], dtype=str),
        "target_names": np.array(ds.target_names),
        "data_sha256": np.array(json.dumps({Path(k).name: v for k, v in sorted(ds.sha256.items())})),
        "observed_min": obs_lo,
        "observed_max": obs_hi,
        "range_min": lo,
        "range_max": hi,
        "oracle_rows": np.array(ds.oracle_rows, np.int64),
        **baseline_arrays(ds),
    }


def baseline_arrays(ds) -> dict[str, np.ndarray]:
    """The training labels' class counts (a classifier), or the target's mean and median."""
    y = np.asarray(ds.y_train)
    if ds.task == "classification":
        counts = np.bincount(y.astype(np.int64), minlength=len(ds.labels or []))
        return {"train_counts": counts.astype(np.int64), "train_mean": np.zeros(0), "train_median": np.zeros(0)}
    y = y.astype(np.float64).reshape(len(y), -1)
    return {"train_counts": np.zeros(0, np.int64), "train_mean": y.mean(axis=0), "train_median": np.median(y, axis=0)}


def save(path: Path, ref: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **ref)
    fsutil.write_bytes(path, buf.getvalue())


def load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise StageInputError(path, "not found", "run `make export` or `python -m pipeline export` first")
    try:
        with np.load(path) as z:
            ref = {k: z[k] for k in z.files}
    except Exception as e:  # a damaged zip raises several kinds
        raise StageInputError(path, f"unreadable: {e}", "re-run export") from None
    if any(k not in ref for k in ("range_min", "train_mean", "target_names")):
        raise StageInputError(path, "made by an older version of the pipeline", "re-run `make export`")
    return ref


def in_group(ref: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Which rows of ``ref["x"]`` belong to the group ``name`` (a boolean mask; none if it is not there)."""
    names = [str(g) for g in ref["group_names"]]
    return ref["group"] == names.index(name) if name in names else np.zeros(len(ref["x"]), bool)


def in_range(ref: dict[str, np.ndarray]) -> np.ndarray:
    """Which rows lie within the working range in every feature (a boolean mask)."""
    x = ref["x"].reshape(len(ref["x"]), -1).astype(np.float64)
    return np.all((x >= ref["range_min"]) & (x <= ref["range_max"]), axis=1)
