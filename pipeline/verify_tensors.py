"""Stage 3, verify, for a model of several inputs or outputs (pipeline/tensor_data.py).

The same checks as pipeline/verify.py, per output: every model (ONNX in onnxruntime, TFLite in
LiteRT, each variant) runs once over the probe rows, fed by input name and read by output name
(pipeline/runners.py), at batch 1 and tiled to the large batch; then each output is judged on
its own by an ``engine.Judge`` over that output's view of the reference
(``reference.output_view``): the float32 formats' parity with Keras, the accuracy in the
output's own task's terms on the validation rows, Keras against the trivial baseline, and each
variant against its budget (each budget key judges the outputs of its task). A line that fails
names the output. The report (report.json, report.md) holds one section per output.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import bundle_model, reference
from . import report as report_mod
from .engine import Judge, Outputs, batch_1_p50_us
from .layout import Layout
from .numerics import tiled
from .runners import open_runner
from .verify import FORMATS, add_speed_vs_float32, finish, models, plot_data, shared_report


def output_cfg(cfg: dict[str, Any], ref: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    """The config as a one-output model's, for output ``name``: its task."""
    labels = [str(v) for v in ref[f"labels/{name}"]] or None
    return {**cfg, "task": {"kind": str(ref[f"task/{name}"]), "labels": labels}}


def run_feeds(name: str, runner, feeds: dict[str, np.ndarray], large: int) -> tuple[dict[str, Outputs], dict]:
    """Run ``runner`` once over the probe rows by input name: row by row, then tiled to ``large``
    rows in one call; each output's ``Outputs`` by name, and the speed (batch-1 p50 of one call)."""
    t = time.perf_counter()
    y_large = runner.infer({k: tiled(v, large) for k, v in feeds.items()})
    large_s = time.perf_counter() - t
    y1 = runner.infer_each(feeds)
    one = {k: v[:1] for k, v in feeds.items()}
    speed = {"p50_batch_1_us": batch_1_p50_us(lambda: runner.infer(one)), "rows_per_s_large_batch": large / large_s}
    return {o: Outputs(name, y1[o], y_large[o], speed) for o in y1}, speed


def run(cfg: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """Verify a model of several inputs or outputs; write the report; raise VerificationFailed
    (after writing it) on any breach, as verify.run does."""
    ref = reference.load(layout.reference)
    ins, outs = [str(n) for n in ref["input_names"]], [str(n) for n in ref["output_names"]]
    judges = {o: Judge(output_cfg(cfg, ref, o), reference.output_view(ref, o)) for o in outs}
    large = cfg["verify"]["large_batch"]
    feeds = {i: ref[f"x/{i}"] for i in ins}
    results: dict[str, Any] = {}
    runs = {}
    first = judges[outs[0]]  # the plots draw the first output's figures
    val_outputs = {"keras": first.keras.batch_1[first.val]}
    for name, fmt, path, tol, budget in models(cfg, layout):
        if isinstance(path, str):
            results[name] = {"built": False, "passed": False, "reason": f"not built: {path}", "budget": budget}
            continue
        runner = open_runner(fmt, path)
        runs[name] = runner.infer
        got, speed = run_feeds(name, runner, feeds, large)
        m = {"built": True, "size_bytes": path.stat().st_size, "speed": speed, "budget": budget,
             "parity": {}, "accuracy": {}}
        reasons = []
        for o, j in judges.items():
            p, a = j.parity(got[o], tol), j.accuracy(got[o])
            m["parity"][o], m["accuracy"][o] = p, a
            if budget is not None:
                per = {"parity": p, "accuracy": a}
                reasons += [f"{o}: {r}" for r in j.over_budget(per, budget)]
                if "accuracy_drop" in per:
                    m.setdefault("accuracy_drop", {})[o] = per["accuracy_drop"]
        if budget is None:
            m["passed"] = all(p["passed"] for p in m["parity"].values())
        else:
            m["passed"], m["reason"] = not reasons, "; ".join(reasons)
        results[name] = m
        val_outputs[name] = got[outs[0]].batch_1[first.val]
    add_speed_vs_float32(results, runs, feeds, large)
    failures, warnings, sections = [], [], {}
    training = report_mod.training(layout)
    for o, j in judges.items():
        who = lambda model: f"{model} output {o!r}"  # noqa: E731
        accuracy = {"keras": j.keras_accuracy, **{f"{f}-fp32": results[f"{f}-fp32"]["accuracy"][o] for f in FORMATS}}
        failures += [line for f in FORMATS for line in j.parity_failures(who(f), results[f"{f}-fp32"]["parity"][o])]
        failures += [line for n, acc in accuracy.items() if (line := j.accuracy_failure(who(n), acc))]
        baseline = j.baseline()
        line = j.baseline_failure(who("keras"), j.keras_accuracy, baseline)
        if line:
            (warnings if cfg["verify"]["baseline"] == "warn" else failures).append(line)
        baseline.update(margin=cfg["verify"]["baseline_margin"], check=cfg["verify"]["baseline"], beaten=line is None)
        sections[o] = {
            "task": j.task, "output_kind": j.kind, "parity": {f: results[f"{f}-fp32"]["parity"][o] for f in FORMATS},
            "accuracy": accuracy, "baseline": baseline,
            "variants": {n: _one_output(v, o) for n, v in results.items()},
        }
    chosen, problem = bundle_model.choose(cfg, results, layout)
    failures += [problem] if problem else []
    plot_data(layout, first, sections[outs[0]]["variants"], val_outputs)
    groups = {str(g): int((ref["group"] == i).sum()) for i, g in enumerate(ref["group_names"])}
    report = {
        "passed": not failures,
        "failures": failures,
        "warnings": warnings,
        "task": "tensors",
        "inputs": {i: {"shape": ref[f"input_shape/{i}"].tolist(), "range": [ref[f"range_min/{i}"].tolist(),
                                                                          ref[f"range_max/{i}"].tolist()]}
                   for i in ins},
        "outputs": sections,
        "probes": {"groups": groups, "large_batch": large,
                   "range_rows": int(next(iter(judges.values())).in_range.sum()),
                   "features": int(sum(np.prod(ref[f"input_shape/{i}"]) for i in ins))},
        **shared_report(cfg, layout, ref, results, training, chosen),
    }
    for o, section in sections.items():  # what a one-output report's renderer reads beside its own figures
        section["probes"] = {**report["probes"], "range": None}
        section["plots"] = o == outs[0]
        section["cpu"] = report["cpu"]
    return finish(layout, report)


def _one_output(v: dict[str, Any], o: str) -> dict[str, Any]:
    """A model's result as a one-output report holds it: output ``o``'s figures, the model's verdict."""
    if not v.get("built", True):
        return v
    return {**v, "parity": v["parity"][o], "accuracy": v["accuracy"][o]}
