"""A config's data (pipeline/dataset.py), the user's files it names (pipeline/userfile.py) and the
config stage: good data read and split as documented, class labels by name or by index into
``task.labels``, an oracle's rows added to the validation rows; bad data refused by
`python -m pipeline config` in one line naming the file, the row and column (or .npz key) and
what was expected, exit 2, nothing written, TensorFlow never imported. One test runs integer
class labels through the whole pipeline (marked slow)."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline import config, dataset, userfile
from pipeline.__main__ import copy_config
from pipeline.errors import ConfigError, DataError
from tests.support import forkrun
from tests.support.core import MINIMAL, pipeline, ROOT, runtime_cli

# A small CSV classifier: 3 classes with string labels, 10 rows each.
ROWS = [(f"{i * 0.5:g}", f"{(i * 7) % 5 - 2:g}", ("cat", "dog", "owl")[i % 3]) for i in range(30)]
GOOD_CSV = "a,b,label\n" + "".join(f"{a},{b},{c}\n" for a, b, c in ROWS)
BUILDER = "def build(input_shape, num_outputs):\n    raise RuntimeError('not called by these tests')\n"

# Three classes of signal, named by task.labels; the cells hold the names (row 2 is example 0).
WAVE_NAMES = ["sine", "square", "sawtooth"]
WAVES_CSV = "a,b,label\n" + "".join(f"{i},{i % 4},{WAVE_NAMES[i % 3]}\n" for i in range(12))
WAVES = MINIMAL.replace('kind = "classification"', 'kind = "classification"\nlabels = ["sine", "square", "sawtooth"]')


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def project(folder: Path, files: dict[str, str | bytes], toml: str = MINIMAL) -> Path:
    """Write ``files`` and edge.toml into ``folder`` (model.py as well unless given); return the config."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model.py": BUILDER, **files}
    for name, content in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    cfg = folder / "edge.toml"
    cfg.write_text(toml)
    return cfg


def load(cfg: Path) -> dataset.Dataset:
    return dataset.load(config.load(cfg))


def run_config_stage(cfg: Path, build: Path) -> subprocess.CompletedProcess:
    """`python -m pipeline --build BUILD config --config CFG --out BUILD/config.toml`, then print
    whether TensorFlow or Keras was imported."""
    code = (
        "import sys; from pipeline.__main__ import main; "
        f"rc = main(['--build', {str(build)!r}, 'config', '--config', {str(cfg)!r}, '--out', "
        f"{str(build / 'config.toml')!r}]); "
        "print('imported:', 'tensorflow' in sys.modules, 'keras' in sys.modules); sys.exit(rc)"
    )
    return forkrun.python("-c", code, cwd=ROOT, timeout=120)


# --- good data ---


def test_csv_with_string_labels(tmp_path):
    ds = load(project(tmp_path, {"data.csv": GOOD_CSV}))
    assert ds.task == "classification" and ds.labels == ["cat", "dog", "owl"]
    assert ds.feature_names == ["a", "b"] and ds.input_shape == (2,) and ds.target_names == ["label"]
    assert len(ds.x_train) == 24 and len(ds.x_val) == 6
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64 and ds.y_val.dtype == np.int64
    # every example is where the file put it, with its class index
    got = {(float(a), float(b), int(y)) for xs, ys in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val))
           for (a, b), y in zip(xs, ys)}
    want = {(float(a), float(b), ["cat", "dog", "owl"].index(c)) for a, b, c in ROWS}
    assert got == want
    assert ds.sha256 == {str(tmp_path / "data.csv"): __import__("hashlib").sha256(GOOD_CSV.encode()).hexdigest()}
    line = dataset.summary(ds)
    assert line == ("data: 30 examples of 2 features from data.csv: 24 to train, 6 to validate; "
                    "classification into 3 classes (cat, dog, owl)")
    lo, hi = ds.observed_range()
    assert lo.shape == hi.shape == (2,)
    assert lo.tolist() == ds.x_train.min(axis=0).tolist() and hi.tolist() == ds.x_train.max(axis=0).tolist()


def test_features_and_labels_choose_the_order(tmp_path):
    toml = MINIMAL.replace('target = "label"', 'target = "label"\nfeatures = ["b", "a"]').replace(
        'kind = "classification"', 'kind = "classification"\nlabels = ["owl", "dog", "cat"]')
    ds = load(project(tmp_path, {"data.csv": GOOD_CSV}, toml))
    assert ds.feature_names == ["b", "a"] and ds.labels == ["owl", "dog", "cat"]
    by_features = {(float(b), float(a)): c for a, b, c in ROWS}
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        for (b, a), y in zip(xs.tolist(), ys.tolist()):
            assert ds.labels[y] == by_features[(b, a)]


def test_numeric_class_labels_sort_as_numbers(tmp_path):
    text = "x,y\n" + "".join(f"{i},{c}\n" for i, c in enumerate([10, 9, 2, 10, 9, 2, 10.0, 9, 2, 10]))
    toml = MINIMAL.replace('target = "label"', 'target = "y"')
    ds = load(project(tmp_path, {"data.csv": text}, toml))
    assert ds.labels == ["2", "9", "10"]  # "10.0" is class "10"


# --- class labels: names, or indices into task.labels ---

WAVES_NPZ = '[data]\nfile = "waves.npz"\n\n[task]\nkind = "classification"\nlabels = ["sine", "square", "sawtooth"]\n'


def waves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` one-dimensional signals of 32 samples, and their class index ``y`` (0 sine, 1 square,
    2 sawtooth, in turn): a random frequency, phase and amplitude each, and a little noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    cycles = rng.uniform(1, 3, (n, 1)) * np.arange(32) / 32 + rng.uniform(0, 1, (n, 1))
    u = cycles % 1.0
    shapes = np.stack([np.sin(2 * np.pi * u), np.where(u < 0.5, 1.0, -1.0), 2 * u - 1])  # (3, n, 32)
    x = shapes[y, np.arange(n)] * rng.uniform(0.5, 2, (n, 1)) + rng.normal(0, 0.05, (n, 32))
    return x.astype(np.float32), y.astype(np.int64)


def assert_classes(ds: dataset.Dataset, want: dict[bytes, int]) -> None:
    """Every example of ``ds`` (train and validation) has the class index ``want[row bytes]``."""
    assert ds.y_train.dtype == ds.y_val.dtype == np.int64
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        assert [want[row.tobytes()] for row in xs] == ys.tolist()
    assert len(ds.x_train) + len(ds.x_val) == len(want)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float32])
def test_an_npz_of_class_indices_takes_the_names_of_task_labels(tmp_path, dtype):
    x, y = waves(60)
    ds = load(project(tmp_path, {"waves.npz": npz(x=x, y=y.astype(dtype))}, WAVES_NPZ))
    assert ds.labels == WAVE_NAMES and ds.target_names == ["y"] and ds.input_shape == (32,)
    assert_classes(ds, {row.tobytes(): int(k) for row, k in zip(x, y)})  # y[i] is the index of its name
    assert np.bincount(ds.y_val).tolist() == [4, 4, 4]  # stratified as ever
    assert dataset.summary(ds) == ("data: 60 examples of 32 features from waves.npz: 48 to train, 12 to validate; "
                                   "classification into 3 classes (sine, square, sawtooth)")
    # without task.labels the indices are the class names
    plain = load(project(tmp_path / "plain", {"waves.npz": npz(x=x, y=y.astype(dtype))},
                         WAVES_NPZ.replace('labels = ["sine", "square", "sawtooth"]\n', "")))
    assert plain.labels == ["0", "1", "2"] and plain.y_train.tolist() == ds.y_train.tolist()


def test_an_npz_of_class_names_is_ordered_by_task_labels(tmp_path):
    x, y = waves(30)
    names = np.array(WAVE_NAMES)[y]  # a string y: each must be one of the labels
    toml = WAVES_NPZ.replace('["sine", "square", "sawtooth"]', '["square", "sawtooth", "sine"]')
    ds = load(project(tmp_path, {"waves.npz": npz(x=x, y=names)}, toml))
    assert ds.labels == ["square", "sawtooth", "sine"]
    assert_classes(ds, {row.tobytes(): ds.labels.index(str(n)) for row, n in zip(x, names)})


def test_a_csv_target_of_indices_takes_the_names_of_task_labels(tmp_path):
    indices = WAVES_CSV
    for k, name in enumerate(WAVE_NAMES):
        indices = indices.replace(f",{name}\n", f",{k}\n")
    assert indices.splitlines()[1:4] == ["0,0,0", "1,1,1", "2,2,2"]
    ds = load(project(tmp_path / "indices", {"data.csv": indices}, WAVES))
    assert ds.labels == WAVE_NAMES
    want = {np.float32([i, i % 4]).tobytes(): i % 3 for i in range(12)}
    assert_classes(ds, want)
    # the same rows with the names in the cells: the same data set
    named = load(project(tmp_path / "names", {"data.csv": WAVES_CSV}, WAVES))
    assert named.labels == WAVE_NAMES
    for a, b in ((named.x_train, ds.x_train), (named.y_train, ds.y_train), (named.x_val, ds.x_val),
                 (named.y_val, ds.y_val)):
        np.testing.assert_array_equal(a, b)
    # cells that are all class names are names, even when the names are numbers: "0" is index 1
    numbers = load(project(tmp_path / "numbers", {"data.csv": indices},
                           WAVES.replace('["sine", "square", "sawtooth"]', "[2, 0, 1]")))
    assert numbers.labels == ["2", "0", "1"]
    assert_classes(numbers, {row: [1, 2, 0][k] for row, k in want.items()})


INDEX_3 = [0, 1, 2, 0, 1, 2, 3, 0, 1, 2]  # 3 is no index into three labels (example 6)


def out_of_range(folder: Path, fmt: str) -> Path:
    if fmt == "csv":
        text = "a,label\n" + "".join(f"{i},{k}\n" for i, k in enumerate(INDEX_3))
        return project(folder, {"data.csv": text}, WAVES)
    x = np.arange(len(INDEX_3), dtype=np.float32).reshape(-1, 1)
    return project(folder, {"waves.npz": npz(x=x, y=np.array(INDEX_3))}, WAVES_NPZ)


@pytest.mark.parametrize("fmt", ["csv", "npz"])
def test_a_class_index_outside_the_labels_is_refused(tmp_path, fmt):
    cfg = out_of_range(tmp_path / "p", fmt)
    with pytest.raises(DataError) as e:
        load(cfg)
    msg = e.value.message
    assert "\n" not in msg and msg.startswith(f"data error: {tmp_path / 'p'}/"), msg
    assert "task.labels" in msg and "sine, square, sawtooth" in msg and "0..2" in msg, msg
    if fmt == "csv":  # and by the config stage: one line, exit 2, before TensorFlow, nothing written
        r = run_config_stage(cfg, tmp_path / "build")
        assert r.returncode == 2 and r.stderr.decode().splitlines() == [f"error: {msg}"], r.stderr
        assert r.stdout.decode().splitlines() == ["imported: False False"]
        assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("fmt, where", [("csv", "row 8, column 'label': "), ("npz", "key 'y', y[6]: ")])
def test_a_class_index_outside_the_labels_is_named_where_it_is(tmp_path, fmt, where):
    with pytest.raises(DataError, match=re.escape(where)):
        load(out_of_range(tmp_path, fmt))


def test_a_validation_file_without_task_labels_has_class_names_not_indices(tmp_path):
    x = np.arange(9, dtype=np.float32).reshape(-1, 1)
    files = {"train.npz": npz(x=x, y=np.array([1, 2, 3] * 3)), "val.npz": npz(x=x[:4], y=np.array([1, 2, 1, 2]))}
    toml = '[data]\nfile = "train.npz"\nvalidation = "val.npz"\n\n[task]\nkind = "classification"\n'
    ds = load(project(tmp_path, files, toml))
    assert ds.labels == ["1", "2", "3"]
    assert [ds.labels[k] for k in ds.y_val] == ["1", "2", "1", "2"]


# --- an oracle on the user's data ---

ORACLE = "def oracle(x):\n    return 3.0 * x[:, 0] + 1.0\n"


def oracle_project(folder: Path, source: str = ORACLE, validation: str = "0.2", span: str = "[-0.5, 9.5]",
                   points: int = 10) -> Path:
    """A regression of y = 3x + 1 over x = 0..19 (a CSV) whose oracle (truth.py) knows the law;
    its rows are the midpoints of ``points`` cells over ``span`` (by default the integers 0..9)."""
    text = "x,y\n" + "".join(f"{i},{3 * i + 1}\n" for i in range(20))
    toml = (f'[data]\nfile = "d.csv"\ntarget = "y"\nvalidation = {validation}\n\n[verify]\n'
            f'oracle = "truth.py:oracle"\noracle_range = {span}\noracle_points = {points}\n')
    return project(folder, {"d.csv": text, "truth.py": source}, toml)


def test_an_oracle_labels_rows_added_to_the_validation_rows(tmp_path):
    ds = load(oracle_project(tmp_path))
    held = len(ds.x_val) - ds.oracle_rows
    assert (len(ds.x_train), held) == (16, 4)
    # the held-out rows first, as the file has them
    assert ds.y_val[:held].tolist() == (3 * ds.x_val[:held, 0] + 1).tolist()
    # then the oracle's: the midpoints 0..9 of oracle_range, minus every training row, labelled by it
    trained = set(ds.x_train[:, 0].tolist())
    assert 0 < len(trained & set(range(10))) < 10  # some midpoints are training rows, some are not
    assert ds.x_val[held:, 0].tolist() == [v for v in range(10) if v not in trained]
    assert ds.oracle_rows == 10 - len(trained & set(range(10)))
    assert ds.y_val[held:].tolist() == [3.0 * v + 1 for v in ds.x_val[held:, 0]]
    assert dataset.summary(ds) == (f"data: 20 examples of 1 feature from d.csv: 16 to train, 4 to validate, and "
                                   f"{ds.oracle_rows} rows the oracle labels; regression of 'y'")
    # validation = 0: every row trains; the oracle's rows are the validation rows
    ds = load(oracle_project(tmp_path / "all", validation="0", span="[20, 50]", points=15))
    assert len(ds.x_train) == 20 and ds.oracle_rows == len(ds.x_val) == 15
    assert ds.x_val[:, 0].tolist() == list(range(21, 50, 2)) and ds.y_val.tolist() == list(range(64, 149, 6))


@pytest.mark.parametrize("source, problem", [
    ("def oracle(x):\n    return 1 / 0\n", r"truth\.py:oracle raised ZeroDivisionError: division by zero$"),
    ("def oracle(x):\n    return x @ [[1.0, 2.0]]\n",
     r"returned shape \((\d+), 2\) for \1 rows \(expected one value per row: \(\1,\) or \(\1, 1\)\)$"),
    ("def oracle(x):\n    return [1.0, 2.0]\n", r"returned shape \(2,\) for \d+ rows \(expected one value per row"),
    ("def oracle(x):\n    return x[:, 0] + float('nan')\n", r"returned nan for the row \[\d\.0\] \(expected a "
                                                            r"finite number for every row of verify\.oracle_range\)$"),
    ("def truth(x):\n    return x\n", r"truth\.py: verify\.oracle: no function 'oracle' \(expected oracle\(x\)"),
])
def test_an_oracle_that_raises_or_returns_the_wrong_shape_is_refused(tmp_path, source, problem):
    with pytest.raises(ConfigError, match=problem) as e:
        load(oracle_project(tmp_path, source))
    assert e.value.key == "verify.oracle" and "\n" not in e.value.message, e.value.message


def test_an_oracle_that_raises_is_refused_by_the_config_stage(tmp_path):
    cfg = oracle_project(tmp_path / "p", "def oracle(x):\n    raise ValueError('no law here\\nsecond line')\n")
    r = run_config_stage(cfg, tmp_path / "build")
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [f"error: config error: verify.oracle: {tmp_path / 'p' / 'truth.py'}"
                                              ":oracle raised ValueError: no law here"]
    assert r.stdout.decode().splitlines() == ["imported: False False"]
    assert not (tmp_path / "build").exists()


def test_an_oracle_with_every_row_a_training_row_leaves_nothing_to_validate_and_is_refused(tmp_path):
    cfg = oracle_project(tmp_path, validation="0", span="[-0.5, 19.5]", points=20)  # the midpoints: 0..19
    with pytest.raises((DataError, ConfigError), match=r"verify\.oracle"):
        load(cfg)


def test_an_oracle_that_returns_no_numbers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"verify\.oracle"):
        load(oracle_project(tmp_path, "def oracle(x):\n    return ['warm'] * len(x)\n"))


def test_npz_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, (60, 8, 8, 1)).astype(np.float32)
    y = np.arange(60) % 3
    toml = '[data]\nfile = "img.npz"\n[task]\nkind = "classification"\n'
    ds = load(project(tmp_path, {"img.npz": npz(x=x, y=y)}, toml))
    assert ds.input_shape == (8, 8, 1) and ds.x_train.shape[1:] == (8, 8, 1)
    assert len(ds.feature_names) == 64
    assert ds.feature_names[:3] == ["x[0,0,0]", "x[0,1,0]", "x[0,2,0]"] and ds.feature_names[-1] == "x[7,7,0]"
    assert ds.labels == ["0", "1", "2"] and ds.target_names == ["y"]
    assert len(ds.x_train) + len(ds.x_val) == 60 and len(ds.x_val) == 12
    lo, hi = ds.observed_range()
    assert lo.shape == (64,) and (lo >= 0).all() and (hi <= 16).all()
    assert "from img.npz" in dataset.summary(ds) and "64 features (8x8x1)" in dataset.summary(ds)


def test_npz_tabular_regression_and_validation_file(tmp_path):
    rng = np.random.default_rng(1)
    x, xv = rng.normal(size=(40, 3)), rng.normal(size=(7, 3))
    toml = '[data]\nfile = "train.npz"\nvalidation = "val.npz"\n'
    ds = load(project(tmp_path, {"train.npz": npz(x=x, y=x.sum(1)), "val.npz": npz(x=xv, y=xv.sum(1))}, toml))
    assert ds.task == "regression" and ds.labels is None
    assert ds.feature_names == ["x[0]", "x[1]", "x[2]"] and ds.input_shape == (3,)
    assert len(ds.x_train) == 40 and len(ds.x_val) == 7 and ds.y_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_val, xv.astype(np.float32))
    assert sorted(ds.sha256) == [str(tmp_path / "train.npz"), str(tmp_path / "val.npz")]


def test_several_targets_from_a_csv_list_or_an_npz_y_of_k_columns(tmp_path):
    """A regression of k targets: y (n, k) in the order given, named by the columns or y[0] .. y[k-1];
    the features are every other column; a validation file and an oracle give k values per row too."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 2))
    y = np.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1], 2 * x[:, 0]], axis=1)
    text = "north,a,east,b,up\n" + "".join(f"{n:.4f},{a:.4f},{e:.4f},{b:.4f},{u:.4f}\n"
                                             for (a, b), (e, n, u) in zip(x, y))
    toml = '[data]\nfile = "d.csv"\ntarget = ["east", "north", "up"]\n'
    ds = load(project(tmp_path / "csv", {"d.csv": text}, toml))
    assert ds.target_names == ["east", "north", "up"] and ds.feature_names == ["a", "b"]
    assert ds.y_train.shape == (24, 3) and ds.y_val.shape == (6, 3) and ds.y_train.dtype == np.float32
    both = np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])
    order = np.lexsort(both[0].T[::-1])
    np.testing.assert_allclose(both[1][order], np.round(y, 4)[np.lexsort(np.round(x, 4).T[::-1])], atol=1e-6)
    assert dataset.summary(ds).endswith("regression of 'east', 'north', 'up'")
    # A list of one column is the single target it names.
    one = load(project(tmp_path / "one", {"d.csv": text}, toml.replace('"east", "north", "up"', '"up"')))
    assert one.target_names == ["up"] and one.y_train.shape == (24,) and one.feature_names == ["north", "a", "east", "b"]

    toml = '[data]\nfile = "t.npz"\nvalidation = "v.npz"\n'
    ds = load(project(tmp_path / "npz", {"t.npz": npz(x=x[:20], y=y[:20]), "v.npz": npz(x=x[20:], y=y[20:])}, toml))
    assert ds.target_names == ["y[0]", "y[1]", "y[2]"] and ds.y_train.shape == (20, 3) and ds.y_val.shape == (10, 3)
    np.testing.assert_array_equal(ds.y_val, y[20:].astype(np.float32))


def test_an_oracle_of_several_targets_gives_k_values_per_row(tmp_path):
    x = np.arange(10, dtype=np.float64).reshape(10, 1)
    files = {"d.npz": npz(x=x, y=np.hstack([2 * x, -x])),
             "truth.py": "def oracle(x):\n    import numpy as np\n    return np.hstack([2 * x, -x])\n"}
    toml = ('[data]\nfile = "d.npz"\n[verify]\noracle = "truth.py:oracle"\noracle_range = [0.0, 20.0]\n'
            'oracle_points = 10\n')
    ds = load(project(tmp_path / "good", files, toml))
    held = len(ds.x_val) - ds.oracle_rows
    assert ds.oracle_rows > 0 and ds.y_val.shape == (len(ds.x_val), 2)
    np.testing.assert_array_equal(ds.y_val[held:], np.hstack([2 * ds.x_val[held:], -ds.x_val[held:]]))
    files["truth.py"] = "def oracle(x):\n    return 2 * x[:, 0]\n"
    with pytest.raises(ConfigError, match=r"returned shape \((\d+),\) for \1 rows \(expected 2 numbers per row, one "
                                          r"per target: an array of shape \(\1, 2\)\)$"):
        load(project(tmp_path / "bad", files, toml))


def test_stratified_split_is_deterministic_and_proportional(tmp_path):
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    text = "f,t\n" + "".join(f"{i},{c}\n" for i, c in enumerate(labels))
    base = MINIMAL.replace('target = "label"', 'target = "t"')
    cfg = config.load(project(tmp_path, {"data.csv": text}, base))
    one, two = dataset.load(cfg), dataset.load(cfg)
    np.testing.assert_array_equal(one.x_val, two.x_val)
    np.testing.assert_array_equal(one.y_train, two.y_train)
    assert np.bincount(one.y_val).tolist() == [10, 6, 4]  # 20 % of each class
    assert np.bincount(one.y_train).tolist() == [40, 24, 16]
    cfg["train"]["seed"] = 1
    other = dataset.load(cfg)
    assert np.bincount(other.y_val).tolist() == [10, 6, 4]
    assert other.x_val[:, 0].tolist() != one.x_val[:, 0].tolist()  # another seed, another sample
    # the split itself: every row in exactly one part, both parts in file order
    tr, va = dataset.split_indices(np.array([0] * 50 + [1] * 30 + [2] * 20), 100, 0.2, 0)
    assert sorted(tr.tolist() + va.tolist()) == list(range(100)) and list(va) == sorted(va)
    np.testing.assert_array_equal(va, one.x_val[:, 0].astype(int))


def test_small_classes_keep_one_example_to_train(tmp_path):
    y = np.array([0] * 40 + [1] * 2)
    tr, va = dataset.split_indices(y, 42, 0.5, 0)
    assert (y[tr] == 1).sum() >= 1 and len(va) == 21


def test_regression_split_is_seeded(tmp_path):
    text = "a,b,t\n" + "".join(f"{i},{i % 7},{i * 2}\n" for i in range(50))
    toml = '[data]\nfile = "d.csv"\ntarget = "t"\nvalidation = 0.3\n'
    cfg = config.load(project(tmp_path, {"d.csv": text}, toml))
    a, b = dataset.load(cfg), dataset.load(cfg)
    assert len(a.x_val) == 15 and a.x_val.tolist() == b.x_val.tolist()
    assert sorted(a.x_train[:, 0].tolist() + a.x_val[:, 0].tolist()) == [float(i) for i in range(50)]
    assert a.y_train.tolist() == (a.x_train[:, 0] * 2).tolist()


def test_relative_paths_start_at_the_config_folder(tmp_path):
    cfg_path = project(tmp_path / "proj" / "cfg", {"../data/d.csv": GOOD_CSV},
                       MINIMAL.replace('"data.csv"', '"../data/d.csv"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import os

    old = os.getcwd()
    os.chdir(elsewhere)  # the working directory plays no part
    try:
        cfg = config.load(cfg_path)
    finally:
        os.chdir(old)
    assert cfg["data"]["file"] == str(tmp_path / "proj" / "data" / "d.csv")
    assert cfg["model"]["builder"] == f"{tmp_path / 'proj' / 'cfg' / 'model.py'}:build"
    assert cfg["bundle"]["name"] == "cfg"
    # the copy in BUILD records where it came from, and loads to the same dict
    build = tmp_path / "build"
    assert copy_config(cfg_path, build / "config.toml", cfg)
    assert (build / "config.origin").read_text() == f"{tmp_path / 'proj' / 'cfg'}\n"
    assert config.load(build / "config.toml") == cfg
    assert (build / "inputs.mk").read_text() == (
        f"INPUT_FILES := {tmp_path / 'proj' / 'data' / 'd.csv'} {tmp_path / 'proj' / 'cfg' / 'model.py'}\n")
    assert dataset.load(config.load(build / "config.toml")).sha256 == dataset.load(cfg).sha256


def test_the_copy_is_rewritten_when_its_text_or_origin_changes_and_only_then(tmp_path):
    a = project(tmp_path / "a", {"data.csv": GOOD_CSV})
    b = project(tmp_path / "b", {"data.csv": GOOD_CSV})  # the same text, another folder
    out = tmp_path / "build" / "config.toml"
    assert copy_config(a, out, config.load(a))
    stamp = out.stat().st_mtime_ns, (out.parent / "inputs.mk").stat().st_mtime_ns
    assert not copy_config(a, out, config.load(a))
    assert (out.stat().st_mtime_ns, (out.parent / "inputs.mk").stat().st_mtime_ns) == stamp
    import os

    os.utime(out, ns=(1, 1))  # so a rewrite shows even on a coarse clock
    assert copy_config(b, out, config.load(b))
    assert out.stat().st_mtime_ns != 1
    assert config.load(out)["data"]["file"] == str(tmp_path / "b" / "data.csv")
    os.utime(out, ns=(1, 1))
    a.write_text(MINIMAL + "\n[train]\nepochs = 3\n")
    assert copy_config(a, out, config.load(a))
    assert out.stat().st_mtime_ns != 1 and config.load(out)["train"]["epochs"] == 3


def test_the_default_presets_copy_lists_its_data_and_oracle(tmp_path):
    """The tutorial is a config like any other: its copy names the CSV and the oracle it reads."""
    out = tmp_path / "build" / "config.toml"
    src = ROOT / "configs" / "default.toml"
    copy_config(src, out, config.load(src))
    assert (out.parent / "inputs.mk").read_text() == (
        f"INPUT_FILES := {ROOT / 'configs' / 'celsius.csv'} {ROOT / 'configs' / 'fahrenheit.py'}\n")
    assert config.load(out) == config.load(src)


def test_the_builder_is_imported_from_the_users_file(tmp_path):
    good = "X = 1\ndef build(input_shape, num_outputs):\n    return None\n"
    cfg = config.load(project(tmp_path / "good", {"data.csv": GOOD_CSV, "model.py": good}))
    fn = userfile.function(cfg, "model.builder")
    assert callable(fn) and fn.__name__ == "build"
    for i, (source, message) in enumerate([
        ("def other():\n    pass\n", r"model\.py: model\.builder: no function 'build' \(expected build"),
        ("build = 3\n", r"model\.py: model\.builder: 'build' is a int, expected a function"),
        ("import no_such_module_here\n", r"model\.py: model\.builder: importing it raised ModuleNotFoundError: "
                                         r"No module named 'no_such_module_here'"),
        ("def build(:\n", r"model\.py: model\.builder: line 1: syntax error"),
        ("raise SystemExit(3)\n", r"model\.builder: importing it raised SystemExit: 3"),
    ]):
        # a folder each: userfile keeps a module it imported for the rest of the process, by path
        bad = config.load(project(tmp_path / f"bad{i}", {"data.csv": GOOD_CSV, "model.py": source}))
        with pytest.raises(ConfigError, match=message) as e:
            userfile.function(bad, "model.builder")
        assert "\n" not in e.value.message
    # the tutorial names no builder (a dense stack) and an oracle, imported the same way
    default = config.load(ROOT / "configs" / "default.toml")
    assert userfile.function(default, "model.builder") is None
    assert userfile.call(default, "verify.oracle", np.array([[100.0], [-40.0]])).tolist() == [[212.0], [-40.0]]


def test_a_builder_may_import_its_neighbours(tmp_path):
    files = {"data.csv": GOOD_CSV, "helpers.py": "UNITS = 7\n",
             "model.py": "import helpers\ndef build(s, k):\n    return helpers.UNITS\n"}
    cfg = config.load(project(tmp_path, files))
    assert userfile.call(cfg, "model.builder", (2,), 3) == 7


def test_the_config_stage_accepts_good_data_without_tensorflow(tmp_path):
    cfg = project(tmp_path / "p", {"data.csv": GOOD_CSV})
    build = tmp_path / "build"
    r = run_config_stage(cfg, build)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode().splitlines()
    assert out[-1] == "imported: False False"
    assert out[0] == (f"config: {cfg} -> {build / 'config.toml'}; data: 30 examples of 2 features from data.csv: "
                      "24 to train, 6 to validate; classification into 3 classes (cat, dog, owl)")
    assert r.stderr == b""
    assert {p.name for p in build.iterdir()} >= {"config.toml", "config.origin", "inputs.mk"}


# --- bad data and configs: one line, exit 2, nothing written, no TensorFlow ---

CSV3 = "a,b,label\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(10))


def bad_npz_text() -> bytes:
    return npz(x=np.array([["a", "b"], ["c", "d"], ["e", "f"]]), y=np.array([1, 2, 3]))


def csv_with(line: int, text: str) -> str:
    """CSV3 with file line ``line`` (the header is line 1) replaced by ``text``."""
    lines = CSV3.splitlines()
    lines[line - 1] = text
    return "\n".join(lines) + "\n"


REGRESSION = '[data]\nfile = "data.csv"\ntarget = "label"\n'
NPZ = '[data]\nfile = "data.npz"\n[task]\nkind = "classification"\n'

# (name, files, config, the whole stderr line after "error: " with {d} the project folder)
BAD = [
    ("missing cell", {"data.csv": csv_with(4, "3,,y")}, MINIMAL,
     "data error: {d}/data.csv: row 4, column 'b': empty cell (expected a number)"),
    ("non-numeric cell", {"data.csv": csv_with(6, "five,2,y")}, MINIMAL,
     "data error: {d}/data.csv: row 6, column 'a': 'five' is not a number (expected a number)"),
    ("NaN", {"data.csv": csv_with(3, "nan,1,y")}, MINIMAL,
     "data error: {d}/data.csv: row 3, column 'a': 'nan' is NaN (expected a number, finite)"),
    ("infinity", {"data.csv": csv_with(11, "9,-inf,y")}, MINIMAL,
     "data error: {d}/data.csv: row 11, column 'b': '-inf' is infinite (expected a number, finite)"),
    ("NA marker", {"data.csv": csv_with(2, "NA,0,x")}, MINIMAL,
     "data error: {d}/data.csv: row 2, column 'a': 'NA' marks a missing value (expected a number)"),
    ("float32 overflow", {"data.csv": csv_with(2, "1e39,0,x")}, MINIMAL,
     "data error: {d}/data.csv: row 2, column 'a': 1e39 is outside float32's range (expected a number within "
     "+-3.4e38)"),
    ("ragged row", {"data.csv": csv_with(5, "3,1,x,7")}, MINIMAL,
     "data error: {d}/data.csv: row 5: 4 cells, expected 3 (one per column of the header)"),
    ("no target column", {"data.csv": CSV3}, MINIMAL.replace('target = "label"', 'target = "class"'),
     "data error: {d}/data.csv: row 1 (the header): no column 'class' (data.target; expected one of the "
     "columns: a, b, label)"),
    ("no feature column", {"data.csv": CSV3}, MINIMAL.replace('target = "label"', 'target = "label"\n'
                                                              'features = ["a", "c"]'),
     "data error: {d}/data.csv: row 1 (the header): no column 'c' (data.features; expected one of the "
     "columns: a, b, label)"),
    ("duplicate column", {"data.csv": CSV3.replace("a,b,label", "a,a,label")}, MINIMAL,
     "data error: {d}/data.csv: row 1 (the header), column 2: column name 'a' appears twice (columns 1 and 2; "
     "expected distinct names)"),
    ("empty file", {"data.csv": ""}, MINIMAL,
     "data error: {d}/data.csv: empty file (expected a CSV with a header row, then one row per example)"),
    ("header only", {"data.csv": "a,b,label\n"}, MINIMAL,
     "data error: {d}/data.csv: a header row and no data rows (expected a CSV with a header row, then one row "
     "per example)"),
    ("not UTF-8", {"data.csv": CSV3.encode() + b"1,2,\xff\n"}, MINIMAL,
     "data error: {d}/data.csv: row 12: not UTF-8 text (expected a CSV with a header row, then one row per "
     "example)"),
    ("one example of a class", {"data.csv": CSV3 + "10,1,z\n"}, MINIMAL,
     "data error: {d}/data.csv: row 12, column 'label': class 'z' has only this one example (expected at least "
     "2 per class: one to train on, one to validate)"),
    ("one class only", {"data.csv": CSV3.replace(",y\n", ",x\n")}, MINIMAL,
     "data error: {d}/data.csv: column 'label': one class only ('x'; expected at least 2 classes to classify)"),
    ("labels do not cover targets", {"data.csv": CSV3},
     MINIMAL.replace('kind = "classification"', 'kind = "classification"\nlabels = ["x", "z"]'),
     "data error: {d}/data.csv: row 3, column 'label': 'y' is not a class of task.labels (expected one of: x, z; "
     "or an index 0..1 into them)"),
    ("regression target not numeric", {"data.csv": CSV3}, REGRESSION,
     "data error: {d}/data.csv: row 2, column 'label': 'x' is not a number (expected a number (a regression's "
     'target; for classes, set task.kind = "classification"))'),
    ("too few rows", {"data.csv": "a,t\n1,2\n3,4\n"}, REGRESSION.replace('"label"', '"t"'),
     "data error: {d}/data.csv: 2 examples (expected at least 3: 2 to train on, 1 to validate)"),
    ("empty validation split", {"data.csv": CSV3}, MINIMAL.replace("validation = 0.2", "validation = 0.01"),
     "data error: {d}/data.csv: data.validation = 0.01 holds out no example of 10 (expected a fraction that "
     "leaves at least one example to validate)"),
    ("validation file lacks a column", {"data.csv": CSV3, "val.csv": "a,label\n1,x\n"},
     MINIMAL.replace("validation = 0.2", 'validation = "val.csv"'),
     "data error: {d}/val.csv: row 1 (the header): no column 'b' (a feature column of data.file; expected one of "
     "the columns: a, label)"),
    ("validation class unknown", {"data.csv": CSV3, "val.csv": "a,b,label\n1,2,x\n1,2,w\n"},
     MINIMAL.replace("validation = 0.2", 'validation = "val.csv"').replace(
         'kind = "classification"', 'kind = "classification"\nlabels = ["x", "y"]'),
     "data error: {d}/val.csv: row 3, column 'label': 'w' is not a class of task.labels (expected one of: x, y; "
     "or an index 0..1 into them)"),
    ("a class name not among the labels", {"data.csv": WAVES_CSV.replace("7,3,square", "7,3,triangle")}, WAVES,
     "data error: {d}/data.csv: row 9, column 'label': 'triangle' is not a class of task.labels (expected one of: "
     "sine, square, sawtooth; or an index 0..2 into them)"),
    ("class names and indices mixed", {"data.csv": WAVES_CSV.replace("4,0,square", "4,0,1")}, WAVES,
     "data error: {d}/data.csv: row 6, column 'label': '1' is an index among class names (expected every target "
     "a name of task.labels, or every one an index into it)"),
    ("npz without y", {"data.npz": npz(x=np.zeros((5, 2)), target=np.zeros(5))}, NPZ,
     "data error: {d}/data.npz: key 'y': missing (expected an .npz with arrays x (n, ...) and y (n,); the archive "
     "holds: x, target)"),
    ("npz lengths differ", {"data.npz": npz(x=np.zeros((5, 2)), y=np.zeros(4))}, NPZ,
     "data error: {d}/data.npz: key 'y': 4 targets, expected 5 (as many as x has examples)"),
    ("npz not numeric", {"data.npz": bad_npz_text()}, NPZ,
     "data error: {d}/data.npz: key 'x': dtype <U1 (expected numbers: an integer or float array)"),
    ("npz NaN", {"data.npz": npz(x=np.where(np.arange(24).reshape(6, 2, 2) == 13, np.nan, 1.0),
                                 y=np.arange(6) % 2)}, NPZ,
     "data error: {d}/data.npz: key 'x', x[3,0,1]: NaN (expected a finite number)"),
    ("npz one-dimensional x", {"data.npz": npz(x=np.zeros(5), y=np.zeros(5))}, NPZ,
     "data error: {d}/data.npz: key 'x': shape (5,) (expected (n, features...): one row per example; one "
     "feature is shape (n, 1))"),
    ("npz y of three dimensions", {"data.npz": npz(x=np.zeros((4, 1)), y=np.zeros((4, 2, 2)))},
     '[data]\nfile = "data.npz"\n', "data error: {d}/data.npz: key 'y': shape (4, 2, 2) (expected (n,): one target per "
     "example or (n, k): k targets per example)"),
    ("npz classes of two columns", {"data.npz": npz(x=np.zeros((4, 1)), y=np.zeros((4, 2)))}, NPZ,
     "data error: {d}/data.npz: key 'y': shape (4, 2) (expected (n,): one target per example (several targets "
     "are a regression's))"),
    ("several targets for a classification", {"data.csv": CSV3},
     MINIMAL.replace('target = "label"', 'target = ["label", "b"]'),
     "config error: {d}/edge.toml: data.target: expected one column for a classification (several targets are a "
     "regression's), got 2: ['label', 'b']"),
    ("a target list naming no column", {"data.csv": CSV3}, REGRESSION.replace('"label"', '["b", "c"]'),
     "data error: {d}/data.csv: row 1 (the header): no column 'c' (data.target; expected one of the columns: a, "
     "b, label)"),
    ("a target among the features", {"data.csv": CSV3},
     REGRESSION.replace('"label"', '["a", "b"]\nfeatures = ["b", "label"]'),
     "config error: {d}/edge.toml: data.features: expected feature columns other than the target 'b', got it "
     "among them"),
    ("a target list that is no list of names", {"data.csv": CSV3}, REGRESSION.replace('"label"', '["a", "a"]'),
     "config error: {d}/edge.toml: data.target: expected a column name, or a list of distinct column names (a "
     "regression of several targets), got ['a', 'a']"),
    ("a validation file of other targets", {"t.npz": npz(x=np.zeros((6, 2)), y=np.zeros((6, 2))),
                                            "v.npz": npz(x=np.zeros((3, 2)), y=np.zeros((3, 3)))},
     '[data]\nfile = "t.npz"\nvalidation = "v.npz"\n',
     "data error: {d}/v.npz: key 'y': 3 target(s) per example, expected 2 (as in {d}/t.npz)"),
    ("npz fractional class", {"data.npz": npz(x=np.zeros((4, 1)), y=np.array([0, 1, 0.5, 1]))}, NPZ,
     "data error: {d}/data.npz: key 'y', y[2]: 0.5 (expected a class: an integer or a string)"),
    ("npz class name not among the labels",
     {"data.npz": npz(x=np.zeros((6, 2)), y=np.array(["sine", "square", "sawtooth", "sine", "triangle", "square"]))},
     NPZ + 'labels = ["sine", "square", "sawtooth"]\n',
     "data error: {d}/data.npz: key 'y', y[4]: 'triangle' is not a class of task.labels (expected one of: sine, "
     "square, sawtooth; or an index 0..2 into them)"),
    ("npz not an archive", {"data.npz": b"x,y\n1,2\n"}, NPZ,
     "data error: {d}/data.npz: not an .npz archive (expected an .npz with arrays x (n, ...) and y (n,), as "
     "numpy.savez writes)"),
    ("outside the valid range", {"data.csv": CSV3},
     MINIMAL + '\n[runtime]\nvalid = { a = [0, 5] }\n',
     "data error: {d}/data.csv: row 8, column 'a': 6 is outside the valid range [0, 5] (runtime.valid.a; "
     "expected data the device would accept)"),
    ("data file missing", {}, MINIMAL,
     "config error: {d}/edge.toml: data.file: expected an existing file; {d}/data.csv does not exist (paths are "
     "relative to {d}), got 'data.csv'"),
    ("builder without function", {"data.csv": CSV3}, MINIMAL.replace("model.py:build", "model.py"),
     "config error: {d}/edge.toml: model.builder: expected 'file.py:function' (a Python file, relative to the "
     "config's folder, and its build function), got 'model.py'"),
    ("builder file missing", {"data.csv": CSV3}, MINIMAL.replace("model.py:build", "net.py:build"),
     "config error: {d}/edge.toml: model.builder: expected 'file.py:function' (a Python file, relative to the "
     "config's folder, and its build function); {d}/net.py does not exist, got 'net.py:build'"),
    ("trained model not a .keras archive", {"data.csv": CSV3, "model.keras": "not a zip"},
     MINIMAL.replace('builder = "model.py:build"', 'file = "model.keras"'),
     "config error: {d}/edge.toml: model.file: expected a Keras 3 .keras file; {d}/model.keras is not a zip "
     "archive, got 'model.keras'"),
    ("builder and layers", {"data.csv": CSV3}, MINIMAL + "layers = [8, 2]\n",
     "config error: {d}/edge.toml: model.layers: expected at most one of model.builder, model.file and "
     "model.layers, got model.builder and model.layers"),
    # keys of the schema before issue 25 are refused naming where they went
    ("an old train key", {"data.csv": CSV3}, MINIMAL + "\n[train]\nsteps = 10\n",
     'config error: {d}/edge.toml: train.steps: unknown key: train.epochs, with train.batch_size = "all" (one '
     "full-batch step per epoch)"),
    ("an old verify key", {"data.csv": CSV3}, MINIMAL + "\n[verify]\ngrid_min = -10\n",
     "config error: {d}/edge.toml: verify.grid_min: unknown key: verify.range = [min, max]"),
    ("an old budget key", {"data.csv": CSV3}, REGRESSION + "\n[verify]\nmax_mae_f = 3.5\n",
     "config error: {d}/edge.toml: verify.max_mae_f: unknown key: verify.max_mae"),
    ("a misspelt key", {"data.csv": CSV3}, MINIMAL.replace("validation = 0.2", "validaton = 0.2"),
     "config error: {d}/edge.toml: data.validaton: unknown key (did you mean data.validation? expected one of: "
     "file, target, features, validation, standardize)"),
    ("a wrong type", {"data.csv": CSV3}, MINIMAL + "\n[train]\nepochs = \"many\"\n",
     "config error: {d}/edge.toml: train.epochs: expected an integer >= 1 and <= 10000000, got 'many'"),
    ("a batch size neither all nor a count", {"data.csv": CSV3}, MINIMAL + "\n[train]\nbatch_size = \"full\"\n",
     "config error: {d}/edge.toml: train.batch_size: expected \"all\" (every training row in each step) or an "
     "integer >= 1, got 'full'"),
    ("a budget of the other task", {"data.csv": CSV3}, MINIMAL + "\n[verify]\nmax_mae = 0.5\n",
     'config error: {d}/edge.toml: verify.max_mae: expected only with task.kind = "regression" (a '
     "classification's check is verify.min_accuracy)"),
    ("no validation row and no oracle", {"data.csv": CSV3}, MINIMAL.replace("validation = 0.2", "validation = 0"),
     "config error: {d}/edge.toml: data.validation: expected a fraction > 0 or a validation file: 0 holds out no "
     "row, which needs verify.oracle to label the rows accuracy is judged on"),
]


@pytest.mark.parametrize("name, files, toml, line", BAD, ids=[b[0] for b in BAD])
def test_bad_data_is_refused_in_one_line_before_tensorflow(tmp_path, name, files, toml, line):
    d = tmp_path / "p"
    files = {k: v for k, v in files.items()}
    if name == "data file missing":
        files = {}
    cfg = project(d, files, toml)
    build = tmp_path / "build"
    r = run_config_stage(cfg, build)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.decode().splitlines() == ["error: " + line.format(d=d)]
    assert r.stdout.decode().splitlines() == ["imported: False False"]
    assert not build.exists()


def test_at_least_fifteen_bad_cases():
    assert len(BAD) >= 15 and len({b[3] for b in BAD}) == len(BAD)


def test_every_stage_checks_the_data_before_anything_else(tmp_path):
    d = tmp_path / "p"
    cfg = project(d, {"data.csv": csv_with(4, "3,,y")})
    build = tmp_path / "build"
    code = (
        "import sys; from pipeline.__main__ import main; "
        f"rc = main(['train', '--config', {str(cfg)!r}, '--build', {str(build)!r}, '--dist', "
        f"{str(tmp_path / 'dist')!r}]); print('tensorflow' in sys.modules); sys.exit(rc)"
    )
    r = forkrun.python("-c", code, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [f"error: data error: {d}/data.csv: row 4, column 'b': empty cell "
                                              "(expected a number)"]
    assert r.stdout.decode().split() == ["False"]
    assert not build.exists() and not (tmp_path / "dist").exists()


def test_layers_must_end_in_the_number_of_classes(tmp_path):
    cfg = config.load(project(tmp_path, {"data.csv": GOOD_CSV},
                              MINIMAL.replace('builder = "model.py:build"', "layers = [8, 2]")))
    with pytest.raises(ConfigError, match=r"model\.layers: expected a last layer of 3 units \(one per class"):
        dataset.load(cfg)


def test_runtime_valid_names_a_feature(tmp_path):
    cfg = config.load(project(tmp_path, {"data.csv": GOOD_CSV}, MINIMAL + '[runtime]\nvalid = { c = [0, 1] }\n'))
    with pytest.raises(ConfigError, match=r"runtime\.valid\.c: no such feature in .*data\.csv \(expected one of: "
                                          r"a, b\)"):
        dataset.load(cfg)


def test_data_errors_are_one_line(tmp_path):
    """The whole table, in-process: a DataError or ConfigError of one line each."""
    for name, files, toml, _ in BAD:
        d = tmp_path / re.sub(r"\W", "_", name)
        cfg_path = project(d, {} if name == "data file missing" else files, toml)
        with pytest.raises((DataError, ConfigError)) as e:
            dataset.load(config.load(cfg_path))
        assert "\n" not in e.value.message and str(d) in e.value.message, name


def test_the_examples_data_loads(tmp_path):
    """The committed examples' data files, as a config next to them would name them."""
    for folder, toml in [("digits", NPZ), ("wine", MINIMAL.replace('"label"', '"cultivar"')),
                         ("diabetes", '[data]\nfile = "data.npz"\n')]:
        src = ROOT / "examples" / folder
        if not src.is_dir():
            pytest.skip("examples not there")
        cfg = tmp_path / folder / "edge.toml"
        cfg.parent.mkdir()
        files = {p.name: p.read_bytes() for p in src.iterdir() if p.suffix in (".csv", ".npz")}
        ds = load(project(cfg.parent, files, toml))
        assert len(ds.x_train) + len(ds.x_val) == {"digits": 1797, "wine": 178, "diabetes": 442}[folder]
        assert json.dumps(ds.feature_names)  # names are plain strings


# --- integer class labels through the whole pipeline (TensorFlow, tf2onnx, LiteRT, onnxruntime) ---


@pytest.mark.slow
def test_class_indices_named_by_task_labels_go_through_the_whole_pipeline(tmp_path):
    """An .npz of 60 signals whose y holds 0..2, named by task.labels: the report, the bundle's
    signature and the device's answers speak the names (and the tensors carry model.input_name
    and model.output_name)."""
    x, y = waves(60)
    toml = WAVES_NPZ + '\n[model]\ninput_name = "signal"\noutput_name = "wave"\n\n[train]\nepochs = 5\nbatch_size = 8\n'
    toml += '\n[variants.onnx-fp16]\n'  # the names, not the variants: one variant, a third less work
    cfg = project(tmp_path / "waves", {"waves.npz": npz(x=x, y=y)}, toml)
    build, dist = tmp_path / "build", tmp_path / "dist"
    r = pipeline("all", "--config", str(cfg), "--build", str(build), "--dist", str(dist))
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    out = r.stdout.decode()
    assert "train: 5 epochs of batch 8 on 48 rows" in out and "on 12 validation rows: keras " in out, out

    report = json.loads((build / "verify" / "report.json").read_text())
    assert report["passed"] and report["task"] == "classification", report["failures"]
    for fmt in ("keras", "onnx-fp32", "tflite-fp32"):
        acc = report["accuracy"][fmt]
        assert acc["labels"] == WAVE_NAMES and acc["rows"] == 12 and set(acc["recall"]) == set(WAVE_NAMES), (fmt, acc)
        assert np.sum(acc["confusion"], axis=1).tolist() == [4, 4, 4]  # rows: the true class, by index
    m = json.loads((dist / "bundle" / "manifest.json").read_text())
    assert m["signature"]["labels"] == m["signature"]["output"]["names"] == WAVE_NAMES
    assert m["signature"]["input"]["shape"] == [-1, 32]
    assert (m["signature"]["input"]["name"], m["signature"]["output"]["name"]) == ("signal", "wave")
    import onnx

    graph = onnx.load(str(dist / "bundle" / "model.onnx")).graph
    assert [t.name for t in graph.input] == ["signal"] and [t.name for t in graph.output] == ["wave"]

    # the device (the bundle's own runtime, no TensorFlow) answers the names of Keras's classes
    with np.load(build / "reference.npz") as z:
        sel = z["group"] == list(z["group_names"]).index("validation")
        x_val, keras_y = z["x"][sel], z["keras_y"][sel]
    np.save(tmp_path / "rows.npy", x_val)
    r = runtime_cli(dist / "bundle", "predict", "--input", str(tmp_path / "rows.npy"), "--json")
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["labels"] == [WAVE_NAMES[k] for k in keras_y.argmax(axis=1)]
