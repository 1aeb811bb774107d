"""The data of a model with several inputs or outputs: one .npz array per tensor, by name.

Stdlib and numpy only, like pipeline/dataset.py, whose checks it shares. An .npz holds one
array per model input and one per model output, each named as the Keras model names it.
The outputs are the ``[task.<output>]`` tables' names (each with its own task), or ``y``
under one ``[task]`` table (several inputs, one output); every other array is an input.
A single-input model's .npz keeps ``x`` and ``y`` and is read by pipeline/dataset.py.

Every array has one row per example; the split (a seeded fraction, stratified on the first
classification output; or a second .npz with the same arrays) takes the same rows of each.
Anything wrong is a ``DataError`` or ``ConfigError``: one line naming the file, the key and
what was expected; exit 2, nothing written.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import dataset as D
from .config import output_tasks
from .errors import ConfigError, DataError
from .probes import valid_ranges

KIND = "an .npz with one array per model input and one per output, named as the model names them"


@dataclass(frozen=True)
class Input:
    name: str
    shape: tuple[int, ...]  # one example's
    feature_names: list[str]  # prod(shape) names, C order: "image[0,1,0]"

    @property
    def size(self) -> int:
        return len(self.feature_names)


@dataclass(frozen=True)
class Output:
    name: str
    task: str  # "regression" | "classification"
    labels: list[str] | None  # a classification's class names, in index order
    target_names: list[str]  # a regression's: the name, or name[0] .. name[k-1]

    @property
    def units(self) -> int:
        """The output's values per example: one per class, or one per target."""
        return len(self.labels) if self.task == "classification" else len(self.target_names)


@dataclass(frozen=True)
class TensorDataset:
    inputs: list[Input]
    outputs: list[Output]
    x_train: dict[str, np.ndarray]  # input name -> float32 (n, *shape)
    y_train: dict[str, np.ndarray]  # output name -> float32 (n,) or (n, k); int64 class indices (n,)
    x_val: dict[str, np.ndarray]
    y_val: dict[str, np.ndarray]
    sha256: dict[str, str]
    oracle_rows: int = 0
    multi = True  # pipeline/dataset.Dataset's is False

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def view(self, name: str) -> "InputView":
        """Input ``name`` seen as a one-input data set (what pipeline/probes.py makes rows for)."""
        return InputView(next(i for i in self.inputs if i.name == name), self)


class InputView:
    """One input of a TensorDataset with the attributes of a one-input Dataset that the probe
    rows, the working range and the calibration rows are made from."""

    def __init__(self, inp: Input, ds: TensorDataset):
        self.name, self.input_shape, self.feature_names = inp.name, inp.shape, inp.feature_names
        self.x_train, self.x_val = ds.x_train[inp.name], ds.x_val[inp.name]

    @property
    def size(self) -> int:
        return len(self.feature_names)

    def observed_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per feature (flattened, C order), the training rows' min and max (float64 arrays)."""
        return D.observed_range(self.x_train)


def applies(cfg: dict[str, Any]) -> bool:
    """Whether the config's data is read here: ``[task.<output>]`` tables, or an .npz without ``x``."""
    if output_tasks(cfg) is not None:
        return True
    file = cfg["data"]["file"]
    if not file.lower().endswith(".npz"):
        return False
    try:
        with zipfile.ZipFile(file) as z:
            keys = {Path(n).stem for n in z.namelist() if n.endswith(".npy")}
    except (OSError, zipfile.BadZipFile):
        return False  # dataset.load names what is wrong with the file
    return "x" not in keys


def _tasks(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return output_tasks(cfg) or {"y": {"kind": cfg["task"]["kind"], "labels": cfg["task"]["labels"]}}


@dataclass
class _File:
    file: str
    x: dict[str, np.ndarray]
    inputs: list[Input]
    raws: dict[str, D._Raw]  # output name -> its targets as read
    sha256: str


def _read(file: str, cfg: dict[str, Any], expect: list[Input] | None = None) -> _File:
    tasks = _tasks(cfg)
    arrays, sha = D.npz_arrays(file, tuple(tasks), KIND, every=True)
    names = [k for k in arrays if k not in tasks]
    if expect is not None:
        missing = [i.name for i in expect if i.name not in names]
        extra = [k for k in names if k not in {i.name for i in expect}]
        if missing or extra:
            raise DataError(file, f"key {(missing or extra)[0]!r}", ("missing" if missing else "not an input of the "
                            "training data") + f" (expected the arrays of data.file: {', '.join(i.name for i in expect)}"
                            f" and {', '.join(tasks)})")
        names = [i.name for i in expect]
    if not names:
        raise DataError(file, "", f"no input array beside the outputs {', '.join(tasks)} (expected {KIND})")
    x, inputs, n = {}, [], None
    for key in names:
        arr, features = D.npz_features(file, key, arrays[key])
        if n is not None and len(arr) != n:
            raise DataError(file, f"key {key!r}", f"{len(arr)} examples, expected {n} (as many as {names[0]!r} has)")
        n = len(arr)
        x[key] = arr
        inputs.append(Input(key, tuple(int(d) for d in arr.shape[1:]), features))
    raws = {}
    for key, t in tasks.items():
        targets, target_names, integer = D.npz_targets(file, key, arrays[key], t["kind"], n)
        raws[key] = D._Raw(file, x[names[0]], targets, [], target_names, None, sha, integer, key)
    return _File(file, x, inputs, raws, sha)


def _check_valid_range(f: _File, cfg: dict[str, Any]) -> None:
    rt = cfg["runtime"]
    every = [name for i in f.inputs for name in i.feature_names]
    for name in rt["valid"]:
        if name not in every:
            shown = ", ".join(every[:8]) + (", ..." if len(every) > 8 else "")
            raise ConfigError(None, f"runtime.valid.{name}", f"no such feature in {f.file} (expected one of: {shown})")
    for inp in f.inputs:
        lo, hi = valid_ranges(cfg, inp.feature_names)
        flat = f.x[inp.name].reshape(len(f.x[inp.name]), -1)
        bad = (flat < lo) | (flat > hi)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            name = inp.feature_names[j]
            key = f"runtime.valid.{name}" if name in rt["valid"] else "runtime.valid_min/valid_max"
            raise DataError(f.file, f"key {inp.name!r}, {name.replace('[', f'[{i},', 1)}",
                            f"{flat[i, j]:g} is outside the valid range [{lo[j]:g}, {hi[j]:g}] ({key}; expected "
                            "data the device would accept)")


def load(cfg: dict[str, Any]) -> TensorDataset:
    """The config's data, checked and split: one array per input and per output.

    Raises:
        DataError: a data file is malformed (one line: file, key, what was expected).
        ConfigError: the config does not fit the data (model.layers, verify.oracle, runtime.valid).
    """
    d = cfg["data"]
    tasks = _tasks(cfg)
    if not d["file"].lower().endswith(".npz"):
        raise DataError(d["file"], "", f"a CSV (expected {KIND})")
    f = _read(d["file"], cfg)
    if len(f.inputs) > 1 or output_tasks(cfg) is not None:
        if cfg["model"]["layers"] is not None:
            raise ConfigError(None, "model.layers", f"expected model.builder or model.file for a model of inputs "
                              f"{', '.join(f.x)} and outputs {', '.join(tasks)} (a dense stack has one of each)")
        if cfg["verify"]["oracle"] is not None:
            raise ConfigError(None, "verify.oracle", "expected no oracle for a model of several inputs (an oracle "
                              "labels rows of one input)")
    n = len(next(iter(f.x.values())))
    fraction = d["validation"] if not isinstance(d["validation"], str) else None
    need = D.MIN_TRAIN_ROWS + (1 if fraction else 0)
    if n < need:
        raise DataError(f.file, "", f"{n} example{'s' if n != 1 else ''} (expected at least {need}: "
                        f"{D.MIN_TRAIN_ROWS} to train on" + (", 1 to validate)" if fraction else ")"))
    outputs, y = [], {}
    for key, t in tasks.items():
        raw = f.raws[key]
        if t["kind"] == "classification":
            labels = D._labels(raw, t["labels"], source=f"task.{key}.labels" if key in (output_tasks(cfg) or {})
                               else "task.labels")
            y[key] = D._check_classes(raw, labels)
        else:
            labels = None
            y[key] = np.array(raw.targets, np.float32)
        outputs.append(Output(key, t["kind"], labels, list(raw.target_names)))
    _check_valid_range(f, cfg)
    sha = {f.file: f.sha256}
    if fraction is not None:
        strata = next((y[o.name] for o in outputs if o.task == "classification"), None)
        if fraction == 0:
            train, val = np.arange(n), np.arange(0)
        else:
            train, val = D.split_indices(strata, n, fraction, cfg["train"]["seed"])
            if len(val) == 0:
                raise DataError(f.file, "", f"data.validation = {fraction:g} holds out no example of {n} (expected "
                                "a fraction that leaves at least one example to validate)")
            if len(train) < D.MIN_TRAIN_ROWS:
                raise DataError(f.file, "", f"data.validation = {fraction:g} leaves {len(train)} of {n} examples to "
                                f"train on (expected at least {D.MIN_TRAIN_ROWS})")
        x_train, x_val = ({k: v[idx] for k, v in f.x.items()} for idx in (train, val))
        y_train, y_val = ({k: v[idx] for k, v in y.items()} for idx in (train, val))
    else:
        v = _read(d["validation"], cfg, f.inputs)
        for inp in f.inputs:
            if v.x[inp.name].shape[1:] != f.x[inp.name].shape[1:]:
                raise DataError(v.file, f"key {inp.name!r}", f"examples of shape {v.x[inp.name].shape[1:]}, expected "
                                f"{f.x[inp.name].shape[1:]} (as in {f.file})")
        y_val = {}
        for o in outputs:
            raw = v.raws[o.name]
            if len(raw.target_names) != len(o.target_names):
                raise DataError(v.file, f"key {o.name!r}", f"{len(raw.target_names)} target(s) per example, expected "
                                f"{len(o.target_names)} (as in {f.file})")
            if o.task == "classification":
                given = tasks[o.name]["labels"]
                D._labels(raw, o.labels, indices=given is not None, source=f.file if given is None else "task labels")
                y_val[o.name] = np.array([o.labels.index(t) for t in raw.targets], np.int64)
            else:
                y_val[o.name] = np.array(raw.targets, np.float32)
        _check_valid_range(v, cfg)
        x_train, y_train, x_val = f.x, y, v.x
        sha[v.file] = v.sha256
    c = np.ascontiguousarray
    return TensorDataset(
        inputs=f.inputs, outputs=outputs, x_train={k: c(a) for k, a in x_train.items()},
        y_train={k: c(a) for k, a in y_train.items()}, x_val={k: c(a) for k, a in x_val.items()},
        y_val={k: c(a) for k, a in y_val.items()}, sha256=sha)


def summary(ds: TensorDataset) -> str:
    """One line for the console: the examples, each input's shape, the split and each output's task."""
    n_tr, n_val = len(ds.y_train[ds.outputs[0].name]), len(ds.y_val[ds.outputs[0].name])
    files = ", ".join(Path(f).name for f in ds.sha256)
    ins = ", ".join(f"{i.name} ({'x'.join(map(str, i.shape))})" for i in ds.inputs)

    def task(o: Output) -> str:
        if o.task == "classification":
            shown = ", ".join(o.labels) if len(o.labels) <= 10 else ", ".join(o.labels[:10]) + ", ..."
            return f"{o.name}: classification into {len(o.labels)} classes ({shown})"
        return f"{o.name}: regression" + (f" of {len(o.target_names)} targets" if len(o.target_names) > 1 else "")

    return (f"data: {n_tr + n_val} examples of inputs {ins} from {files}: {n_tr} to train, {n_val} to validate; "
            f"outputs {'; '.join(task(o) for o in ds.outputs)}")
