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


def tensor_arrays(cfg: dict[str, Any], ds, predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                  keras_sha256: str, output_kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """The reference of a model of several inputs or outputs (pipeline/tensor_data.py), whose
    float32 outputs by name ``predict`` gives for rows by input name. The arrays of ``arrays``,
    per tensor under ``<key>/<tensor name>`` (``x/gauge``, ``keras_y/state``, ...), beside the
    shared ``group``, ``group_names``, ``keras_sha256``, ``data_sha256`` and ``oracle_rows``; and
    ``input_names``, ``output_names`` and, per output, ``task/<name>``."""
    groups = probes.tensor_groups(cfg, ds)
    x = {name: np.concatenate([g[name] for g in groups.values()]) for name in ds.input_names}
    group = np.concatenate([np.full(len(next(iter(g.values()))), i, np.int8) for i, g in enumerate(groups.values())])
    y = predict(x)
    out = {"group": group, "group_names": np.array(list(groups)), "keras_sha256": np.array(keras_sha256),
           "data_sha256": np.array(json.dumps({Path(k).name: v for k, v in sorted(ds.sha256.items())})),
           "oracle_rows": np.array(0, np.int64), "input_names": np.array(ds.input_names),
           "output_names": np.array(ds.output_names)}
    for i in ds.inputs:
        view = ds.view(i.name)
        obs_lo, obs_hi = view.observed_range()
        lo, hi = probes.working_range(cfg, view)
        out.update({f"x/{i.name}": x[i.name], f"input_shape/{i.name}": np.array(i.shape, np.int64),
                    f"feature_names/{i.name}": np.array(i.feature_names), f"observed_min/{i.name}": obs_lo,
                    f"observed_max/{i.name}": obs_hi, f"range_min/{i.name}": lo, f"range_max/{i.name}": hi})
    for o in ds.outputs:
        classes = o.task == "classification"
        out.update({f"keras_y/{o.name}": np.asarray(y[o.name], np.float32),
                    f"y_val/{o.name}": np.asarray(ds.y_val[o.name], np.int64 if classes else np.float64),
                    f"task/{o.name}": np.array(o.task), f"output_kind/{o.name}": np.array(output_kinds[o.name]),
                    f"labels/{o.name}": np.array(o.labels or [], dtype=str),
                    f"target_names/{o.name}": np.array(o.target_names)})
        out.update({f"{k}/{o.name}": v for k, v in baseline_arrays(_OutputView(o, ds)).items()})
    return out


class _OutputView:
    """One output of a TensorDataset as ``baseline_arrays`` reads a Dataset."""

    def __init__(self, o, ds):
        self.task, self.labels, self.y_train = o.task, o.labels, ds.y_train[o.name]


def output_view(ref: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """A tensor reference (``tensor_arrays``) seen from its output ``name`` as a one-output
    reference, what engine.Judge judges: its Keras outputs, labels and baseline; ``x`` the first
    input's rows (their count), ``input_shape`` every input's features as one, and ``in_range``
    the rows within the working range in every feature of every input."""
    view = {k: ref[k] for k in ("group", "group_names", "keras_sha256", "data_sha256", "oracle_rows")}
    for key in ("keras_y", "y_val", "output_kind", "labels", "target_names", "train_counts", "train_mean",
                "train_median"):
        view[key] = ref[f"{key}/{name}"]
    inputs = [str(n) for n in ref["input_names"]]
    view["x"] = ref[f"x/{inputs[0]}"]
    view["input_shape"] = np.array([sum(int(np.prod(ref[f"input_shape/{i}"])) for i in inputs)], np.int64)
    view["in_range"] = np.all([in_range({"x": ref[f"x/{i}"], "range_min": ref[f"range_min/{i}"],
                                         "range_max": ref[f"range_max/{i}"]}) for i in inputs], axis=0)
    return view


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
    if "input_names" not in ref and any(k not in ref for k in ("range_min", "train_mean", "target_names")):
        raise StageInputError(path, "made by an older version of the pipeline", "re-run `make export`")
    return ref


def in_group(ref: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Which rows of ``ref["x"]`` belong to the group ``name`` (a boolean mask; none if it is not there)."""
    names = [str(g) for g in ref["group_names"]]
    return ref["group"] == names.index(name) if name in names else np.zeros(len(ref["x"]), bool)


def in_range(ref: dict[str, np.ndarray]) -> np.ndarray:
    """Which rows lie within the working range in every feature (a boolean mask)."""
    if "in_range" in ref:  # a view of a tensor reference (output_view)
        return ref["in_range"]
    x = ref["x"].reshape(len(ref["x"]), -1).astype(np.float64)
    return np.all((x >= ref["range_min"]) & (x <= ref["range_max"]), axis=1)
