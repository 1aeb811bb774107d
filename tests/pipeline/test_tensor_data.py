"""A model of several inputs or outputs: its config (``[task.<output>]`` tables) and its data (one
.npz array per tensor, pipeline/tensor_data.py). Good data read and split by name, the same rows of
every array; bad configs and data refused by `python -m pipeline config` in one line naming the key,
exit 2, nothing written, TensorFlow never imported. (The whole pipeline on such a model:
tests/pipeline/test_example_tank.py; the exporters: test_export_multi.py; the device: the runtime's
test_runtime_multi.py.)"""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline import config, dataset
from tests.support.core import one_error_line, pipeline

N = 40
TWO_OUTPUTS = """\
[data]
file = "d.npz"

[task.kind]
kind = "classification"
labels = ["a", "b", "c"]

[task.level]
kind = "regression"

[model]
builder = "b.py:build"
"""


def arrays(n: int = N, **changes) -> dict[str, np.ndarray]:
    r = np.random.default_rng(0)
    a = {"image": r.normal(size=(n, 4, 4, 1)), "readings": r.normal(size=(n, 3)), "kind": np.arange(n) % 3,
         "level": r.normal(size=n)}
    a.update(changes)
    return {k: v for k, v in a.items() if v is not None}


def project(tmp_path, toml: str = TWO_OUTPUTS, **changes):
    buf = io.BytesIO()
    np.savez(buf, **arrays(**changes))
    (tmp_path / "d.npz").write_bytes(buf.getvalue())
    (tmp_path / "b.py").write_text("def build(input_shapes, outputs):\n    raise RuntimeError('not called here')\n")
    (tmp_path / "c.toml").write_text(toml)
    return tmp_path / "c.toml"


def test_every_array_is_read_by_name_and_split_on_the_same_rows(tmp_path):
    cfg = config.load(project(tmp_path))
    assert config.task_kinds(cfg) == ["regression", "classification"]
    ds = dataset.load(cfg)
    assert ds.multi and ds.input_names == ["image", "readings"] and ds.output_names == ["kind", "level"]
    assert [o.units for o in ds.outputs] == [3, 1] and ds.outputs[0].labels == ["a", "b", "c"]
    assert ds.inputs[0].feature_names[:2] == ["image[0,0,0]", "image[0,1,0]"]
    n_val = len(ds.y_val["kind"])
    assert n_val == round(0.2 * N) and all(len(v) == n_val for v in (*ds.x_val.values(), *ds.y_val.values()))
    assert np.bincount(ds.y_val["kind"]).tolist() == [3, 3, 2]  # stratified on the classification output
    src = arrays()  # the same example's row in every array
    i = int(np.flatnonzero(np.all(src["readings"].astype(np.float32) == ds.x_val["readings"][0], axis=1))[0])
    np.testing.assert_array_equal(ds.x_val["image"][0], src["image"][i].astype(np.float32))
    assert ds.y_val["level"][0] == np.float32(src["level"][i]) and ds.y_val["kind"][0] == src["kind"][i]


def test_several_inputs_and_one_output_keep_y_under_one_task_table(tmp_path):
    toml = '[data]\nfile = "d.npz"\n\n[model]\nbuilder = "b.py:build"\n'
    ds = dataset.load(config.load(project(tmp_path, toml, kind=None, level=None, y=np.linspace(0, 1, N))))
    assert ds.input_names == ["image", "readings"] and ds.output_names == ["y"] and ds.outputs[0].task == "regression"


@pytest.mark.parametrize("toml, changes, key, problem", [
    (TWO_OUTPUTS.replace('[task.kind]', '[task]\nlabels = ["p", "q"]\n\n[task.kind]'), {}, "task.labels",
     "expected either one [task] table"),
    (TWO_OUTPUTS.replace('[task.level]\nkind = "regression"', '[task.level]\nkind = "regression"\nlabels = ["x", "y"]'),
     {}, "task.level.labels", 'expected only with kind = "classification"'),
    (TWO_OUTPUTS.replace('builder = "b.py:build"', 'layers = [8, 3]'), {}, "model.layers", "model.builder or model.file"),
    (TWO_OUTPUTS.replace('"d.npz"', '"d.csv"'), {}, "data.file", "expected an .npz for [task.<output>] tables"),
    (TWO_OUTPUTS + '\n[verify]\nmax_mae = 1.0\nmin_accuracy = 0.5\noracle = "b.py:build"\noracle_range = [0, 1]\n', {},
     "verify.oracle", "an oracle labels one output"),
    (TWO_OUTPUTS.replace("[task.level]", "[task.2level]"), {}, "task.2level", "a tensor name"),
])
def test_a_config_of_output_tables_is_refused_where_it_cannot_hold(tmp_path, toml, changes, key, problem):
    if "d.csv" in toml:
        (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    r = pipeline("config", "--config", str(project(tmp_path, toml, **changes)))
    line = one_error_line(r)
    assert r.returncode == 2 and f": {key}: " in line and problem in line, line


@pytest.mark.parametrize("changes, where, problem", [
    ({"level": None}, "key 'level'", "missing"),
    ({"readings": np.zeros((N - 1, 3))}, "key 'readings'", f"{N - 1} examples, expected {N}"),
    ({"kind": np.arange(N) % 4}, "key 'kind', kind[3]", "is not a class of task.kind.labels"),
    ({"level": np.full(N, np.nan)}, "key 'level', level[0]", "expected a finite number"),
    ({"image": np.full((N, 4, 4, 1), np.inf)}, "key 'image', image[0,0,0,0]", "infinite"),
    ({"image": None, "readings": None}, "", "no input array beside the outputs"),
])
def test_bad_arrays_are_refused_naming_the_key_and_element(tmp_path, changes, where, problem):
    r = pipeline("config", "--config", str(project(tmp_path, **changes)))
    line = one_error_line(r)
    assert r.returncode == 2 and where in line and problem in line, line
    assert "tensorflow" not in r.stderr.decode().lower()
