"""A config's data: read, checked and split, before TensorFlow is imported.

Stdlib and numpy only. ``load(cfg)`` reads ``[data] file`` (a CSV with a header row, or an
.npz with arrays ``x`` (n, ...) and ``y`` (n,)), checks every cell, and splits off the
validation rows (a seeded, for classification stratified, fraction; or a second file of the
same format; or none). With ``[verify] oracle`` the validation rows also hold rows the
oracle labels: midpoints of an even grid over ``verify.oracle_range`` (every feature at the
same value), minus any training row. Anything wrong is a ``DataError``: one line naming the
file, where in it (the row as the file numbers it, the header being row 1, and the column;
or the .npz key and element) and what was expected; exit 2, nothing written.

Over 400 lines for one job: every cell of two file formats is checked and each refusal names
its place in the file; the readers, the labels, the split and the oracle's rows share that one
vocabulary of places (``_Raw.where``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .probes import valid_ranges

F32_MAX = float(np.finfo(np.float32).max)
MIN_TRAIN_ROWS = 2  # at least this many training rows, and at least one validation row
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_MISSING_WORDS = {"na", "n/a", "nan", "null", "none", "?", "-", "--"}


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # float32 (n, *input_shape)
    y_train: np.ndarray  # regression float32 (n,), or (n, k) for k targets; classification int64 class index (n,)
    x_val: np.ndarray
    y_val: np.ndarray
    feature_names: list[str]  # len = prod(input_shape), flattened C order; CSV column names; npz "x[i]", "x[i,j]"
    input_shape: tuple[int, ...]
    task: str  # "regression" | "classification"
    labels: list[str] | None  # classification: class names in index order
    target_names: list[str]  # the CSV's target column(s); "y" for an .npz (y[0], y[1], ... for a y (n, k))
    sha256: dict[str, str]  # each file read -> sha256 of its bytes
    oracle_rows: int = 0  # the last this many validation rows are the oracle's
    multi = False  # one input and one output (pipeline/tensor_data.TensorDataset's is True)

    @property
    def size(self) -> int:
        """Features per example (the product of input_shape)."""
        return len(self.feature_names)

    def observed_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per feature (flattened, C order), the training rows' min and max (float64 arrays)."""
        return observed_range(self.x_train)


def observed_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature of the rows ``x`` (n, ...), flattened in C order, their min and max (float64)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat.min(axis=0), flat.max(axis=0)


@dataclass
class _Raw:
    """One file as read: the features, the targets (floats, or class names), where each row is."""

    file: str
    x: np.ndarray  # float32 (n, *shape)
    targets: list  # float, or k floats (regression), or str (classification), one per example
    feature_names: list[str]
    target_names: list[str]
    rows: list[int] | None  # CSV: the row (line) of each example; None for an .npz
    sha256: str
    integer_targets: bool = False  # an .npz whose y holds integers: class indices when task.labels names them
    y_key: str = "y"  # an .npz's key of the targets

    def where(self, i: int, feature: int | None = None, target: bool = False) -> str:
        """'row 7, column 'b'' (CSV) or 'key 'x', x[6,1]' (.npz) for example ``i``."""
        if self.rows is not None:
            col = self.target_names[0] if target else (self.feature_names[feature] if feature is not None else None)
            return f"row {self.rows[i]}" + (f", column {col!r}" if col is not None else "")
        if target:
            return f"key {self.y_key!r}, {self.y_key}[{i}]"
        if feature is None:
            return f"key 'x', x[{i}]"
        idx = np.unravel_index(feature, self.x.shape[1:])
        return f"key 'x', x[{','.join(str(int(j)) for j in (i, *idx))}]"


# --- cells ---


def _number(cell: str, file: str, where: str, what: str = "a number") -> float:
    t = cell.strip()
    if _NUMBER.fullmatch(t):
        v = float(t)
        if abs(v) > F32_MAX:
            raise DataError(file, where, f"{t} is outside float32's range (expected {what} within +-3.4e38)")
        return v
    low = t.lower()
    if not t:
        raise DataError(file, where, f"empty cell (expected {what})")
    if low.lstrip("+-") in ("inf", "infinity"):
        raise DataError(file, where, f"{t!r} is infinite (expected {what}, finite)")
    if low.lstrip("+-") == "nan":
        raise DataError(file, where, f"{t!r} is NaN (expected {what}, finite)")
    if low in _MISSING_WORDS:
        raise DataError(file, where, f"{t!r} marks a missing value (expected {what})")
    raise DataError(file, where, f"{t!r} is not a number (expected {what})")


def _class_name(value: Any) -> str:
    """A class label's name: integers (also 3.0 or '3.0') as their decimal text, else the text."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value))  # integer-valued: checked by the caller
    t = str(value).strip()
    if _NUMBER.fullmatch(t):
        v = float(t)
        if v.is_integer() and abs(v) < 2**53:
            return str(int(v))
    return t


# --- reading files ---


def _read_bytes(file: str, kind: str) -> bytes:
    try:
        data = Path(file).read_bytes()
    except FileNotFoundError:
        raise DataError(file, "", f"not found (expected {kind})") from None
    except OSError as e:
        raise DataError(file, "", f"cannot read: {e.strerror or e}") from None
    if not data.strip():
        raise DataError(file, "", f"empty file (expected {kind})")
    return data


CSV_KIND = "a CSV with a header row, then one row per example"
NPZ_KIND = "an .npz with arrays x (n, ...) and y (n,)"


def _read_csv(file: str, target: list[str], features: list[str] | None, task: str, role: str) -> _Raw:
    data = _read_bytes(file, CSV_KIND)
    sha = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(file, f"row {line}", f"not UTF-8 text (expected {CSV_KIND})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            rows.append((reader.line_num, cells))
    except csv.Error as e:
        raise DataError(file, f"row {reader.line_num}", f"not valid CSV: {e}") from None
    if not rows:
        raise DataError(file, "", f"empty file (expected {CSV_KIND})")
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    for j, name in enumerate(header):
        if not name:
            raise DataError(file, f"row {header_line} (the header), column {j + 1}",
                            "empty column name (expected a name for every column)")
        if header.index(name) != j:
            raise DataError(file, f"row {header_line} (the header), column {j + 1}",
                            f"column name {name!r} appears twice (columns {header.index(name) + 1} and {j + 1}; "
                            "expected distinct names)")
    columns = ", ".join(header) if len(header) <= 20 else ", ".join(header[:20]) + ", ..."

    def index(name: str, key: str) -> int:
        if name not in header:
            raise DataError(file, f"row {header_line} (the header)",
                            f"no column {name!r} ({key}; expected one of the columns: {columns})")
        return header.index(name)

    t_cols = [index(t, "data.target") for t in target]
    names = list(features) if features is not None else [h for h in header if h not in target]
    f_cols = [index(n, "a feature column of data.file" if role == "data.validation" else "data.features")
              for n in names]
    if not f_cols:
        raise DataError(file, f"row {header_line} (the header)",
                        f"no feature column (expected at least one column beside the target{'s' if len(target) > 1 else ''} "
                        f"{', '.join(map(repr, target))})")
    body = rows[1:]
    if not body:
        raise DataError(file, "", f"a header row and no data rows (expected {CSV_KIND})")
    x = np.empty((len(body), len(f_cols)), np.float32)
    targets: list = []
    lines = []
    for i, (line, cells) in enumerate(body):
        if len(cells) != len(header):
            raise DataError(file, f"row {line}", f"{len(cells)} cells, expected {len(header)} (one per column "
                            "of the header)")
        for k, j in enumerate(f_cols):
            x[i, k] = _number(cells[j], file, f"row {line}, column {header[j]!r}")
        if task == "regression":
            what = 'a number (a regression\'s target; for classes, set task.kind = "classification")'
            values = [_number(cells[j], file, f"row {line}, column {header[j]!r}", what) for j in t_cols]
            targets.append(values[0] if len(values) == 1 else values)
        else:
            cell = cells[t_cols[0]]
            if not cell.strip():
                raise DataError(file, f"row {line}, column {target[0]!r}", "empty cell (expected a class label)")
            targets.append(_class_name(cell))
        lines.append(line)
    return _Raw(file, x, targets, names, target, lines, sha)


def npz_arrays(file: str, need: tuple[str, ...] = ("x", "y"), kind: str = NPZ_KIND,
               every: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """The arrays ``need`` of the .npz ``file`` by key (``every``: all of them, in the archive's
    order), and the sha256 of its bytes."""
    data = _read_bytes(file, kind)
    sha = hashlib.sha256(data).hexdigest()
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:  # not a zip, not numpy: np.load raises several kinds
        raise DataError(file, "", f"not an .npz archive (expected {kind}, as numpy.savez writes)") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(file, "", f"a single .npy array (expected {kind}, as numpy.savez writes)")
    arrays = {}
    with z:
        keys = list(z.files)
        for key in need:
            if key not in keys:
                raise DataError(file, f"key {key!r}", f"missing (expected {kind}; the archive holds: "
                                f"{', '.join(keys) or 'nothing'})")
        for key in keys if every else need:
            try:
                arrays[key] = z[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                why = "an object array" if "allow_pickle" in str(e) else f"unreadable ({e})"
                raise DataError(file, f"key {key!r}", f"{why} (expected an array of numbers)") from None
    return arrays, sha


def npz_features(file: str, key: str, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The .npz array ``key`` as float32 examples (n, ...) and its feature names (``x[i]``, ``x[i,j]``,
    C order), or a DataError naming the first cell that is not a finite float32."""
    if x.dtype.kind not in "biuf":
        raise DataError(file, f"key {key!r}", f"dtype {x.dtype} (expected numbers: an integer or float array)")
    if x.ndim < 2:
        raise DataError(file, f"key {key!r}", f"shape {x.shape} (expected (n, features...): one row per example; "
                        "one feature is shape (n, 1))")
    if x.shape[0] == 0 or x[0].size == 0:
        raise DataError(file, f"key {key!r}", f"shape {x.shape}, no data (expected at least one example of at least "
                        "one feature)")
    xf = x.astype(np.float64)
    bad = ~np.isfinite(xf) | (np.abs(xf) > F32_MAX)
    if bad.any():
        idx = tuple(int(j) for j in np.argwhere(bad)[0])
        v = xf[idx]
        what = "NaN" if np.isnan(v) else ("infinite" if np.isinf(v) else f"{v:g}, outside float32's range")
        raise DataError(file, f"key {key!r}, {key}[{','.join(map(str, idx))}]", f"{what} (expected a finite number)")
    shape = x.shape[1:]
    if len(shape) == 1:
        names = [f"{key}[{i}]" for i in range(shape[0])]
    else:
        names = [f"{key}[" + ",".join(map(str, ix)) + "]" for ix in np.ndindex(*shape)]
    return x.astype(np.float32), names


def npz_targets(file: str, key: str, y: np.ndarray, task: str, n: int) -> tuple[list, list[str], bool]:
    """The .npz array ``key`` as one target per example (a float, k floats, or a class name), the
    target names (``y``; ``y[0]`` .. for a y (n, k)) and whether they are integers (class indices
    when task.labels names them); or a DataError naming what is wrong."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and task == "regression" and y.shape[1] > 1:
        target_names = [f"{key}[{j}]" for j in range(y.shape[1])]
    elif y.ndim != 1:
        several = " or (n, k): k targets per example" if task == "regression" else " (several targets are a regression's)"
        raise DataError(file, f"key {key!r}", f"shape {y.shape} (expected (n,): one target per example{several})")
    else:
        target_names = [key]
    if len(y) != n:
        raise DataError(file, f"key {key!r}", f"{len(y)} targets, expected {n} (as many as x has examples)")
    targets: list
    if task == "regression":
        if y.dtype.kind not in "biuf":
            raise DataError(file, f"key {key!r}", f"dtype {y.dtype} (expected numbers: a regression's target; for "
                            'classes, set task.kind = "classification")')
        yf = y.astype(np.float64)
        bad = ~np.isfinite(yf) | (np.abs(yf) > F32_MAX)
        if bad.any():
            idx = tuple(int(j) for j in np.argwhere(bad)[0])
            raise DataError(file, f"key {key!r}, {key}[{','.join(map(str, idx))}]", f"{yf[idx]} (expected a finite number)")
        targets = yf.tolist()
    elif y.dtype.kind in "iub":
        targets = [str(int(v)) for v in y.tolist()]
    elif y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(file, f"key {key!r}, {key}[{i}]", f"{y[i]} (expected a class: an integer or a string)")
        targets = [str(int(v)) for v in y.tolist()]
    elif y.dtype.kind == "U":
        targets = [str(v).strip() for v in y.tolist()]
        if "" in targets:
            i = targets.index("")
            raise DataError(file, f"key {key!r}, {key}[{i}]", "an empty string (expected a class label)")
    else:
        raise DataError(file, f"key {key!r}", f"dtype {y.dtype} (expected class labels: integers or strings)")
    return targets, target_names, y.dtype.kind in "iub" or (y.dtype.kind == "f" and task != "regression")


def _read_npz(file: str, task: str, role: str) -> _Raw:
    arrays, sha = npz_arrays(file)
    x, names = npz_features(file, "x", arrays["x"])
    targets, target_names, integer = npz_targets(file, "y", arrays["y"], task, len(x))
    return _Raw(file, x, targets, names, target_names, None, sha, integer)


def _read(file: str, cfg: dict[str, Any], role: str, features: list[str] | None = None) -> _Raw:
    d, task = cfg["data"], cfg["task"]["kind"]
    if file.lower().endswith(".csv"):
        target = [d["target"]] if isinstance(d["target"], str) else d["target"]
        return _read_csv(file, target, features if features is not None else d["features"], task, role)
    return _read_npz(file, task, role)


# --- labels, split, checks ---


def _labels(raw: _Raw, given: list[str] | None, indices: bool = True, source: str = "task.labels") -> list[str]:
    """The class names in index order: ``given`` (``task.labels``), else the sorted distinct targets.

    A target is a class name among ``given``, or, with ``indices``, when the targets are
    integers 0..k-1 (an .npz's integer ``y``; in a CSV, when not every cell is a name), an
    index that takes the name at that position. ``source`` names where ``given`` came from."""
    present = sorted(set(raw.targets))
    if given is None:
        if all(_NUMBER.fullmatch(t) for t in present):
            present.sort(key=float)
        return present
    allowed = set(given)
    by_index = {str(i): name for i, name in enumerate(given)} if indices else {}
    if indices and (raw.integer_targets or not all(t in allowed for t in raw.targets)):
        if all(t in by_index for t in raw.targets):
            raw.targets = [by_index[t] for t in raw.targets]
            return list(given)
        # the first target that is no index (an .npz's integers), or neither an index nor a name
        ok = by_index if raw.integer_targets else (by_index.keys() | allowed)
        bad = next((i for i, t in enumerate(raw.targets) if t not in ok), None)
        if bad is None:  # a CSV of names and indices mixed: the first index among the names
            bad = next(i for i, t in enumerate(raw.targets) if t not in allowed)
            raise DataError(raw.file, raw.where(bad, target=True), f"{raw.targets[bad]!r} is an index among class "
                            f"names (expected every target a name of {source}, or every one an index into it)")
    else:
        bad = next((i for i, t in enumerate(raw.targets) if t not in allowed), None)
    if bad is not None:
        shown = ", ".join(given) if len(given) <= 12 else ", ".join(given[:12]) + ", ..."
        index = f"; or an index 0..{len(given) - 1} into them" if indices else ""
        raise DataError(raw.file, raw.where(bad, target=True),
                        f"{raw.targets[bad]!r} is not a class of {source} (expected one of: {shown}{index})")
    return list(given)


def _check_classes(raw: _Raw, labels: list[str]) -> np.ndarray:
    index = {name: k for k, name in enumerate(labels)}
    y = np.array([index[t] for t in raw.targets], np.int64)
    counts = np.bincount(y, minlength=len(labels))
    if len(labels) < 2:
        raise DataError(raw.file, raw.where(0, target=True) if raw.rows is None else f"column {raw.target_names[0]!r}",
                        f"one class only ({labels[0]!r}; expected at least 2 classes to classify)")
    for k, c in enumerate(counts):
        if c < 2:
            if c == 0:
                raise DataError(raw.file, f"column {raw.target_names[0]!r}" if raw.rows is not None else f"key {raw.y_key!r}",
                                f"class {labels[k]!r} (task.labels) has no example (expected at least 2 per class)")
            i = int(np.argmax(y == k))
            raise DataError(raw.file, raw.where(i, target=True),
                            f"class {labels[k]!r} has only this one example (expected at least 2 per class: one "
                            "to train on, one to validate)")
    return y


def _allocate(counts: np.ndarray, n_val: int) -> np.ndarray:
    """Per-class validation counts summing to ``n_val`` (largest remainder), each below its class's count."""
    n = counts.sum()
    quota = counts * n_val / n
    take = np.minimum(np.floor(quota).astype(np.int64), counts - 1)
    order = sorted(range(len(counts)), key=lambda k: (-(quota[k] - np.floor(quota[k])), k))
    while take.sum() < n_val:
        grown = False
        for k in order:
            if take.sum() >= n_val:
                break
            if take[k] < counts[k] - 1:
                take[k] += 1
                grown = True
        if not grown:
            break
    return take


def split_indices(y: np.ndarray | None, n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices, each sorted: a seeded random ``fraction`` held out; with
    class indices ``y``, stratified (each class in proportion, at least one of each kept to train)."""
    rng = np.random.default_rng(seed)
    n_val = int(round(n * fraction))
    if y is None:
        val = rng.permutation(n)[:n_val]
    else:
        counts = np.bincount(y)
        take = _allocate(counts, n_val)
        val = np.concatenate([rng.permutation(np.flatnonzero(y == k))[: take[k]] for k in range(len(counts))])
    val = np.sort(val.astype(np.int64))
    train = np.setdiff1d(np.arange(n), val)
    return train, val


def _check_valid_range(raw: _Raw, cfg: dict[str, Any]) -> None:
    rt = cfg["runtime"]
    names = raw.feature_names
    for name in rt["valid"]:
        if name not in names:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ConfigError(None, f"runtime.valid.{name}", f"no such feature in {raw.file} (expected one of: "
                              f"{shown})")
    lo, hi = valid_ranges(cfg, names)
    flat = raw.x.reshape(len(raw.x), -1)
    bad = (flat < lo) | (flat > hi)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        key = f"runtime.valid.{names[j]}" if names[j] in rt["valid"] else "runtime.valid_min/valid_max"
        raise DataError(raw.file, raw.where(i, j), f"{flat[i, j]:g} is outside the valid range [{lo[j]:g}, "
                        f"{hi[j]:g}] ({key}; expected data the device would accept)")


def load(cfg: dict[str, Any]) -> Dataset:
    """The config's data, checked and split (see the module's docstring). A model of several
    inputs or outputs (``[task.<output>]`` tables, or an .npz without ``x``) gets a
    ``tensor_data.TensorDataset`` instead.

    Raises:
        DataError: a data file is malformed (one line: file, row and column or key, what was expected).
        ConfigError: the config does not fit the data (model.layers, runtime.valid, the oracle).
    """
    from . import tensor_data

    if tensor_data.applies(cfg):
        return tensor_data.load(cfg)
    d, task = cfg["data"], cfg["task"]["kind"]
    raw = _read(d["file"], cfg, "data.file")
    n = len(raw.x)
    fraction = d["validation"] if not isinstance(d["validation"], str) else None
    need = MIN_TRAIN_ROWS + (1 if fraction else 0)
    if n < need:
        raise DataError(raw.file, "", f"{n} example{'s' if n != 1 else ''} (expected at least {need}: "
                        f"{MIN_TRAIN_ROWS} to train on" + (", 1 to validate)" if fraction else ")"))
    labels = None
    y_all: np.ndarray
    if task == "classification":
        labels = _labels(raw, cfg["task"]["labels"])
        y_all = _check_classes(raw, labels)
        layers = cfg["model"]["layers"]
        if layers is not None and layers[-1] != len(labels):
            raise ConfigError(None, "model.layers", f"expected a last layer of {len(labels)} units (one per class "
                              f"in {raw.file}), got {layers}")
    else:
        y_all = np.array(raw.targets, np.float32)
    _check_valid_range(raw, cfg)
    sha = {raw.file: raw.sha256}
    if fraction == 0:
        x_train, y_train, x_val, y_val = raw.x, y_all, raw.x[:0], y_all[:0]
    elif fraction is not None:
        train, val = split_indices(y_all if task == "classification" else None, n, fraction, cfg["train"]["seed"])
        if len(val) == 0:
            raise DataError(raw.file, "", f"data.validation = {fraction:g} holds out no example of {n} (expected "
                            "a fraction that leaves at least one example to validate)")
        if len(train) < MIN_TRAIN_ROWS:
            raise DataError(raw.file, "", f"data.validation = {fraction:g} leaves {len(train)} of {n} examples to "
                            f"train on (expected at least {MIN_TRAIN_ROWS})")
        x_train, y_train, x_val, y_val = raw.x[train], y_all[train], raw.x[val], y_all[val]
    else:
        vraw = _read(d["validation"], cfg, "data.validation", raw.feature_names if raw.rows is not None else None)
        if vraw.x.shape[1:] != raw.x.shape[1:]:
            raise DataError(vraw.file, "key 'x'", f"examples of shape {vraw.x.shape[1:]}, expected "
                            f"{raw.x.shape[1:]} (as in {raw.file})")
        if len(vraw.target_names) != len(raw.target_names):
            raise DataError(vraw.file, "key 'y'", f"{len(vraw.target_names)} target(s) per example, expected "
                            f"{len(raw.target_names)} (as in {raw.file})")
        if task == "classification":  # names, or indices into task.labels when it names them
            given = cfg["task"]["labels"]
            _labels(vraw, labels, indices=given is not None, source="task.labels" if given else raw.file)
            y_val = np.array([labels.index(t) for t in vraw.targets], np.int64)
        else:
            y_val = np.array(vraw.targets, np.float32)
        _check_valid_range(vraw, cfg)
        x_train, y_train, x_val = raw.x, y_all, vraw.x
        sha[vraw.file] = vraw.sha256
    n_oracle = 0
    if cfg["verify"]["oracle"]:
        ox, oy = oracle_rows(cfg, x_train, len(raw.target_names))
        x_val = np.concatenate([x_val, ox])
        y_val = np.concatenate([y_val.astype(np.float64), oy])
        n_oracle = len(ox)
    return Dataset(
        x_train=np.ascontiguousarray(x_train), y_train=np.ascontiguousarray(y_train),
        x_val=np.ascontiguousarray(x_val), y_val=np.ascontiguousarray(y_val),
        feature_names=list(raw.feature_names), input_shape=tuple(int(s) for s in raw.x.shape[1:]),
        task=task, labels=labels, target_names=list(raw.target_names), sha256=sha, oracle_rows=n_oracle,
    )


def oracle_rows(cfg: dict[str, Any], x_train: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``verify.oracle`` labels: the midpoints of ``oracle_points`` even cells over
    ``oracle_range`` (float32, every feature at the same value), minus any training row; and
    the oracle's value for each (float64, shape (n,); (n, k) for ``k`` targets)."""
    from . import userfile

    v = cfg["verify"]
    edges = np.linspace(*v["oracle_range"], v["oracle_points"] + 1)
    mids = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
    shape = x_train.shape[1:]
    x = np.repeat(mids, int(np.prod(shape))).reshape(-1, *shape)
    seen = {row.tobytes() for row in x_train.astype(np.float32)}
    x = x[[row.tobytes() not in seen for row in x]]
    if not len(x):
        raise ConfigError(None, "verify.oracle_range", f"every one of its {v['oracle_points']} points is a training "
                          "row (expected a range with rows to judge accuracy on that training did not see)")
    got = userfile.call(cfg, "verify.oracle", x.astype(np.float64))
    n = len(x)
    shapes = ((n,), (n, 1)) if k == 1 else ((n, k),)
    expected = (f"one number per row: an array of shape ({n},) or ({n}, 1)" if k == 1
                else f"{k} numbers per row, one per target: an array of shape ({n}, {k})")
    try:
        y = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(None, "verify.oracle", f"returned a {type(got).__name__} that is not numbers (expected "
                          f"{expected})") from None
    if y.shape not in shapes:
        raise ConfigError(None, "verify.oracle", f"returned shape {y.shape} for {n} rows (expected " + (
            f"one value per row: ({n},) or ({n}, 1))" if k == 1 else f"{expected})"))
    y = y.reshape(-1) if k == 1 else y
    if not np.all(np.isfinite(y)):
        i = int(np.argwhere(~np.isfinite(y))[0][0])
        row = y.reshape(len(y), -1)[i]
        raise ConfigError(None, "verify.oracle", f"returned {row[~np.isfinite(row)][0]} for the row {x[i].reshape(-1)[:4].tolist()} "
                          "(expected a finite number for every row of verify.oracle_range)")
    return x, y


def summary(ds: Dataset) -> str:
    """One line for the console: how many examples, their shape, the split and the task."""
    if ds.multi:
        from . import tensor_data

        return tensor_data.summary(ds)
    n_tr, n_val = len(ds.x_train), len(ds.x_val)
    files = ", ".join(Path(f).name for f in ds.sha256)
    shape = "x".join(map(str, ds.input_shape))
    nf = len(ds.feature_names)
    what = f"{nf} feature{'s' if nf != 1 else ''}" + (f" ({shape})" if len(ds.input_shape) > 1 else "")
    if ds.task == "classification":
        shown = ", ".join(ds.labels) if len(ds.labels) <= 10 else ", ".join(ds.labels[:10]) + ", ..."
        task = f"classification into {len(ds.labels)} classes ({shown})"
    else:
        task = "regression of " + ", ".join(map(repr, ds.target_names))
    held = n_val - ds.oracle_rows
    val = f"{held} to validate" + (f", and {ds.oracle_rows} rows the oracle labels" if ds.oracle_rows else "")
    return f"data: {n_tr + held} examples of {what} from {files}: {n_tr} to train, {val}; {task}"
