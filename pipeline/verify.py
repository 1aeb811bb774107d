"""Stage 3, verify: every model against Keras and against the task, each run once.

Reads build/reference.npz (the probe rows, Keras's outputs on them and the validation labels,
written by export), build/model.onnx, build/model.tflite, build/variants/ and, for the
report's training section, build/train/history.json if it is there. Every model (ONNX in onnxruntime, TFLite in LiteRT, each variant) is
run once over the probe rows (engine.py), then judged: the float32 formats' parity with Keras
within ``verify.onnx``/``verify.tflite`` (and, for a classifier, the same top-1 class on every
row); every model's accuracy on the validation rows (``verify.max_mae`` or ``min_accuracy``);
Keras's against the trivial baseline's on the same rows (the majority class, or the training
mean or median: ``verify.baseline``, ``verify.baseline_margin``), so that a model that learned
nothing never passes; each variant against its budget. Records the model the bundle will ship
(bundle_model.py) and writes build/verify/report.json and report.md whether it passes or not
(report.py), and build/verify/plots.npz (the plots' data). A failure exits non-zero with one line per failing
check and removes any stale bundle from dist/.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from export import variants as V
from runtime.manifest import sha256_file

from . import bundle_model, fsutil, reference
from . import report as report_mod
from .config import config_hash
from .engine import Judge, run_model, speed_vs_float32
from .errors import StageInputError, VerificationFailed
from .layout import Layout
from .runners import open_runner

FORMATS = ("onnx", "tflite")  # the float32 models export writes, held to float32 tolerances


def _json(path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise StageInputError(path, "not found or unreadable", f"run `make {what}` first") from None


def models(cfg: dict[str, Any], layout: Layout) -> list[tuple[str, str, Any, dict | None, dict | None]]:
    """(name, format, path or the reason it was not built, tolerance, budget) of every model to judge."""
    out = [(f"{fmt}-fp32", fmt, layout.model(fmt), cfg["verify"][fmt], None) for fmt in FORMATS]
    for name, entry in _json(layout.variants_index, "export").get("variants", {}).items():
        budget = cfg["variants"].get(name)
        if isinstance(budget, dict):  # else built under an older config: make reruns export
            path = layout.variants_dir / entry["file"] if entry["built"] else entry["reason"]
            out.append((name, V.fmt(name), path, None, budget))
    return out


def add_speed_vs_float32(results: dict[str, Any], runs: dict[str, Any], x, large: int) -> None:
    """``results[name]["speed"]["vs_fp32"]``: each model's time against its format's float32
    model in the same runtime, {"batch_1": ratio, "batch_32": ratio} (below 1: faster;
    engine.speed_vs_float32). ``runs``: name -> the model's function of the input rows."""
    for fmt in FORMATS:
        group = {n: f for n, f in runs.items() if V.fmt(n) == fmt}
        if f"{fmt}-fp32" in group:
            for n, ratios in speed_vs_float32(group, f"{fmt}-fp32", x, large).items():
                results[n]["speed"]["vs_fp32"] = ratios


def run(cfg: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """Verify, write the report, and raise VerificationFailed (after writing it) on any breach.

    On a breach, also removes the bundle in ``layout.dist`` (if the layout has one)."""
    ref = reference.load(layout.reference)
    if "input_names" in ref:  # a model of several inputs or outputs: each output judged on its own
        from . import verify_tensors

        return verify_tensors.run(cfg, layout)
    judge = Judge(cfg, ref)
    results: dict[str, Any] = {}
    runs = {}
    val_outputs = {"keras": judge.keras.batch_1[judge.val]}
    for name, fmt, path, tol, budget in models(cfg, layout):
        if isinstance(path, str):
            results[name] = {"built": False, "passed": False, "reason": f"not built: {path}", "budget": budget}
            continue
        runner = open_runner(fmt, path)
        runs[name] = runner.run
        o = run_model(name, runner, ref["x"], judge.large)
        m = {"built": True, "size_bytes": path.stat().st_size, "parity": judge.parity(o, tol),
             "accuracy": judge.accuracy(o), "speed": o.speed, "budget": budget}
        if budget is None:
            m["passed"] = m["parity"]["passed"]
        else:
            reasons = judge.over_budget(m, budget)
            m["passed"], m["reason"] = not reasons, "; ".join(reasons)
        results[name] = m
        val_outputs[name] = o.batch_1[judge.val]
    add_speed_vs_float32(results, runs, ref["x"], judge.large)
    accuracy = {"keras": judge.keras_accuracy, **{f"{f}-fp32": results[f"{f}-fp32"]["accuracy"] for f in FORMATS}}
    failures = [line for f in FORMATS for line in judge.parity_failures(f, results[f"{f}-fp32"]["parity"])]
    failures += [line for name, acc in accuracy.items() if (line := judge.accuracy_failure(name, acc))]
    training = report_mod.training(layout)
    baseline, warnings = judge.baseline(), []
    line = judge.baseline_failure("keras", judge.keras_accuracy, baseline)
    if line:
        hint = judge.batch_norm_hint(training, judge.keras_accuracy)
        line += f"; {hint}" if hint else ""
        (warnings if cfg["verify"]["baseline"] == "warn" else failures).append(line)
    baseline.update(margin=cfg["verify"]["baseline_margin"], check=cfg["verify"]["baseline"], beaten=line is None)
    chosen, problem = bundle_model.choose(cfg, results, layout)
    failures += [problem] if problem else []
    plot_data(layout, judge, results, val_outputs)
    report = {
        "passed": not failures,
        "failures": failures,
        "warnings": warnings,
        "task": judge.task,
        "output_kind": judge.kind,
        "probes": {"groups": {str(g): int((ref["group"] == i).sum()) for i, g in enumerate(ref["group_names"])},
                   "large_batch": judge.large, "range": [ref["range_min"].tolist(), ref["range_max"].tolist()],
                   "range_rows": int(judge.in_range.sum()), "features": int(np.prod(ref["input_shape"]))},
        "parity": {fmt: results[f"{fmt}-fp32"]["parity"] for fmt in FORMATS},
        "accuracy": accuracy,
        "baseline": baseline,
        **shared_report(cfg, layout, ref, results, training, chosen),
    }
    return finish(layout, report)


def shared_report(cfg: dict[str, Any], layout: Layout, ref: dict[str, np.ndarray], results: dict[str, Any],
                  training: dict[str, Any], chosen: dict[str, Any] | None) -> dict[str, Any]:
    """The report's keys beside its figures: every model's result, the graph pass, training, the
    bundle's model, the files and config it speaks for, the tool versions."""
    return {
        "variants": results,
        "graph_pass": _json(layout.variants_index, "export").get("graph_pass"),
        "training": training,
        "bundle": chosen,
        "files": model_files(layout, chosen),
        "keras_sha256": str(ref["keras_sha256"]),
        "config_sha256": config_hash(cfg),
        "versions": report_mod.versions(),
        "cpu": report_mod.cpu(),  # where the speeds were measured
    }


def plot_data(layout: Layout, judge: Judge, results: dict[str, Any], val_outputs: dict[str, np.ndarray]) -> None:
    """build/verify/plots.npz: what the verify plots draw (plots.py)."""
    built = [n for n, m in results.items() if m.get("built")]
    metric = "accuracy" if judge.task == "classification" else "mae"
    x_val = judge.ref["x"][judge.val].reshape(int(judge.val.sum()), -1)[:, 0]
    arrays = {"task": np.array(judge.task), "names": np.array(built),
              "size_bytes": np.array([results[n]["size_bytes"] for n in built], np.int64),
              "score": np.array([results[n]["accuracy"][metric] for n in built], np.float64),
              "keras_score": np.array(judge.keras_accuracy[metric]), "y_val": judge.ref["y_val"],
              "x_val": x_val if judge.one_feature else np.zeros(0)}
    if judge.task == "classification":
        arrays["confusion"] = np.array(results["onnx-fp32"]["accuracy"]["confusion"])
        arrays["labels"] = np.array(judge.labels)
    else:
        for name, y in val_outputs.items():
            arrays["val_" + name] = y.reshape(len(y), -1)  # (n, targets)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    fsutil.write_bytes(layout.plots_npz, buf.getvalue())


def model_files(layout: Layout, chosen: dict[str, Any] | None) -> dict[str, Any]:
    """The models the report speaks for, with their sha256, by paths relative to the build folder
    (so a report still speaks for a copied build)."""
    files = {fmt: {"path": layout.relative(layout.model(fmt)), "sha256": sha256_file(layout.model(fmt))}
             for fmt in FORMATS}
    if chosen and chosen["model"] != "onnx-fp32":
        files["bundle_model"] = {"path": chosen["path"], "sha256": sha256_file(layout.build / chosen["path"])}
    return files


def finish(layout: Layout, report: dict[str, Any]) -> dict[str, Any]:
    """Write the report; on failures remove the stale bundle and raise VerificationFailed."""
    failures = report["failures"]
    report_mod.write(layout, report)
    if failures:
        removed = bundle_model.remove_stale(layout) if layout.dist else []
        note = f"; removed stale {', '.join(removed)}" if removed else ""
        summary = f"verify failed: {len(failures)} check(s); report {layout.report_md}{note}"
        raise VerificationFailed("\n".join([f"verify: {f}" for f in failures] + [summary]))
    return report
