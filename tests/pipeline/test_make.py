"""The Makefile: stages are file targets, so make redoes exactly what changed.

Also what that rests on: each stage's *_SRC lists exactly the code the stage runs (its
imports, followed), the Makefile's paths are the ones pipeline/layout.py names, and no
stage module imports another (shared pieces live in modules of their own).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.core import preset_with, ROOT
from tests.support.make_runs import make, STAGES

@pytest.mark.slow  # trains or runs the pipeline again: make test, not test-fast
def test_make_runs_what_changed_and_nothing_else(tmp_path):
    tiny = preset_with(tmp_path / "config" / "tiny.toml", preset="tiny")  # make's logic, not accuracy
    rc, out, ran = make(tmp_path, "all", f"CONFIG={tiny}")
    assert rc == 0, out
    assert ran == set(STAGES)
    assert "all: done" in out and (tmp_path / "dist" / "bundle.tar.gz").exists()

    rc, out, ran = make(tmp_path, "all", f"CONFIG={tiny}")
    assert rc == 0 and ran == set(), out  # nothing changed: no stage runs

    os.utime(tmp_path / "build" / "model.onnx")
    rc, out, ran = make(tmp_path, "all", f"CONFIG={tiny}")
    assert rc == 0 and ran == {"verify", "bundle"}, out

    os.utime(tmp_path / "build" / "model.keras")  # as a changed export/ source would: export alone
    rc, out, ran = make(tmp_path, "all", f"CONFIG={tiny}")
    assert rc == 0 and ran == {"export", "verify", "bundle"} and " export\n" in out, out

    edited = preset_with(tmp_path / "config" / "edited.toml", ("epochs = 300", "epochs = 290"), preset="tiny")
    rc, out, ran = make(tmp_path, "all", f"CONFIG={edited}")
    assert rc == 0 and ran == set(STAGES), out

    rc, out, ran = make(tmp_path, "all", f"CONFIG={edited}")  # same config again: no work
    assert rc == 0 and ran == set(), out


def test_make_bad_config_fails_fast_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    preset_with(bad, ("[verify.onnx]", "[verify.onx]"))
    rc, out, ran = make(tmp_path, "all", f"CONFIG={bad}")
    assert rc != 0 and ran == set()
    assert f"error: config error: {bad}: verify.onx: unknown key" in out
    assert not (tmp_path / "build" / "model.keras").exists()


def test_make_help_lists_the_targets(tmp_path):
    # With BUILD/inputs.mk there (a dataset-mode build's), make reads two makefiles: help must
    # still show the targets, not the file each line came from.
    (tmp_path / "inputs.mk").write_text("INPUT_FILES :=\n")
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "help", f"BUILD={tmp_path}"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for target in ("all", "train", "export", "verify", "bundle", "test", "clean"):
        assert any(line.split()[0] == target for line in r.stdout.splitlines() if line.strip()), target


def make_var(name: str, **overrides: str) -> str:
    """A variable of the Makefile as make expands it."""
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "--eval", "print-%: ; @echo $($*)",
                        f"print-{name}", *(f"{k}={v}" for k, v in overrides.items())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


OURS = ("pipeline", "export", "runtime")


def imported_files(path: Path, top_level_only: bool = False) -> set[Path]:
    """The files of our packages that ``path`` imports (in function bodies too, unless top_level_only)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: within the importing file's package
                base = path.parent.name + (f".{base}" if base else "")
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            f = ROOT.joinpath(*parts).with_suffix(".py")
            if parts[0] in OURS and f.is_file() and f.name != "__init__.py":
                found.add(f)
    return found


def closure(start: set[Path]) -> set[Path]:
    seen, todo = set(), list(start)
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo += imported_files(f)
    return seen


MAIN = ROOT / "pipeline" / "__main__.py"
STAGE_MODULES = {"train": "train", "export": "export_stage", "verify": "verify", "bundle": "bundle"}
# What a stage imports that make's run of it never executes: make runs train with
# --no-plot (the loss plot is a target of its own).
NOT_RUN_BY_MAKE = {"train": {ROOT / "pipeline" / "plots.py"}}


def stage_code(stage: str) -> set[Path]:
    """The code `python -m pipeline <stage>` runs: __main__'s own imports, then the stage's, followed."""
    mod = ROOT / "pipeline" / f"{STAGE_MODULES[stage]}.py"
    top = imported_files(MAIN, top_level_only=True)  # __main__ imports each stage in its function
    check = ROOT / "pipeline" / "dataset.py"  # and the data check every stage runs first
    return {MAIN} | closure(top | {mod, check}) - NOT_RUN_BY_MAKE.get(stage, set())


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_exactly_the_code_it_runs(stage):
    listed = {ROOT / p for p in make_var(f"{stage.upper()}_SRC").split() if not p.endswith("/__init__.py")}
    code = stage_code(stage)
    assert sorted(map(str, code - listed)) == [], f"{stage.upper()}_SRC misses code the stage runs"
    extra = listed - code
    if stage == "bundle":  # what the bundle copies from runtime/ is data to it: a change must rebundle
        extra = {p for p in extra if p.relative_to(ROOT).parts[0] != "runtime"}
    assert sorted(map(str, extra)) == [], f"{stage.upper()}_SRC lists code the stage does not run"


def test_the_makefile_and_the_layout_name_the_same_paths():
    from pipeline.layout import Layout

    b, d = "/B", "/D"
    lay = Layout(Path(b), Path(d))
    got = {v: make_var(v, BUILD=b, DIST=d).split() for v in ("MODEL_KERAS", "HISTORY", "LOSS_PNG", "EXPORT_OUT",
                                                                "REPORT", "VERIFY_OUT", "VERIFY_PNG", "TARBALL")}
    assert got == {
        "MODEL_KERAS": [str(lay.model_keras)],
        "HISTORY": [str(lay.history)],
        "LOSS_PNG": [str(lay.loss_png)],
        "EXPORT_OUT": [str(lay.model_onnx), str(lay.model_tflite), str(lay.reference), str(lay.variants_index)],
        "REPORT": [str(lay.report_json)],
        "VERIFY_OUT": [str(lay.report_json), str(lay.report_md), str(lay.plots_npz)],
        "VERIFY_PNG": [str(lay.validation_png), str(lay.accuracy_size_png)],
        "TARBALL": [str(lay.tarball)],
    }
    assert make_var("PIPELINE", BUILD=b, DIST=d).endswith(f"--config {lay.config_in_force} --build {b} --dist {d}")


def test_no_stage_module_imports_another():
    """Stages share code through modules of their own (layout, names, probes, reference,
    numerics, runners, bundle_model, ...), never by importing each other; only __main__,
    the command line, imports them. The plot modules count as stages: `plot` runs them."""
    stages = {ROOT / "pipeline" / f"{m}.py" for m in (*STAGE_MODULES.values(), "plots")}
    borrowed = {f"{s.name} -> {i.name}" for s in stages for i in closure(imported_files(s)) & stages if i != s}
    assert borrowed == {"train.py -> plots.py"}  # train draws loss.png itself unless --no-plot


def test_the_build_side_has_one_pipeline_and_the_tutorial_lives_in_its_config():
    """No mode branch (issue 25): no module of pipeline/ or export/ names the tutorial's tensors or
    asks which kind of model it has; the tutorial is its config, its data and its oracle."""
    modules = sorted((ROOT / "pipeline").glob("*.py")) + sorted((ROOT / "export").glob("*.py"))
    assert not [p.name for p in modules if p.stem.endswith("_dataset")]
    words = re.compile(r"celsius|fahrenheit|is_dataset|tutorial mode|dataset mode", re.IGNORECASE)
    named = {f"{p.relative_to(ROOT)}:{n}": line.strip() for p in modules
             for n, line in enumerate(p.read_text().splitlines(), 1) if words.search(line)}
    assert named == {}
    assert {p.name for p in (ROOT / "configs").iterdir()} >= {"default.toml", "tutorial.toml", "celsius.csv",
                                                                "fahrenheit.py"}
