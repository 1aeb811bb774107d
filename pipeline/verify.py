"""Stage 3, verify: ONNX (onnxruntime) and TFLite (LiteRT) against the Keras reference and the formula.

Reads build/model.onnx, build/model.tflite, build/reference.npz (the probe inputs and
Keras's outputs for them, written by export) and build/variants/. Checks each float32
format's parity with Keras to the ulp and its accuracy against F = 1.8 C + 32, measures
every model against its budget (variant_checks.py), and records the model the bundle
will ship (bundle_model.py). Writes build/verify/report.json and report.md whether it
passes or not (report.py); a failure exits non-zero with one line per failing check,
naming the format, the worst input and the error, and removes any stale bundle from dist/.

In dataset mode (``[data] file``: the user's data and model) the reference is labelled rows,
not a formula: ``run_dataset`` measures parity and accuracy with verify_dataset.py and renders
the report with report_dataset.py; the bundle's choice and the stale-bundle rule are the same.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from runtime.manifest import sha256_file

from . import bundle_model, probes, reference
from . import report as report_mod
from .config import config_hash
from .errors import VerificationFailed
from .layout import Layout
from .names import FORMATS
from .numerics import accuracy, compare, tiled
from .runners import Runner, open_runner
from .variant_checks import check_variants


def check_format(fmt: str, runner: Runner, ref: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, Any]:
    """One float32 format's parity with Keras: over every probe at batch 1 and in the large
    batch, per batch and per probe group, and its largest error over the working range."""
    tol = cfg["verify"][fmt]
    x, keras_y = ref["x"], ref["keras_y"]
    large = cfg["verify"]["large_batch"]
    x_large = tiled(x, large)
    y_large = runner.run(x_large)
    runs = {  # name: (inputs, the format's outputs, Keras's outputs)
        "batch_1": (x, runner.run_each(x), keras_y),
        f"batch_{large}": (x_large, y_large, tiled(keras_y, large)),
    }
    inputs, got, want = (np.concatenate(parts) for parts in zip(*runs.values()))
    result = asdict(compare(inputs, want, got, tol["atol"], tol["rtol"]))
    result["batches"] = {
        name: asdict(compare(xs, ys_keras, ys, tol["atol"], tol["rtol"])) for name, (xs, ys, ys_keras) in runs.items()
    }
    groups = {}
    for i, name in enumerate(ref["group_names"]):
        sel = ref["group"] == i
        groups[str(name)] = asdict(compare(x[sel], keras_y[sel], runs["batch_1"][1][sel], tol["atol"], tol["rtol"]))
    result["groups"] = groups
    # The error a user meets: inputs in the working range (the probe grid's, within the
    # valid input range). Huge probes (|x| ~ 1e30) have ulps of ~1e23 degF, which say
    # nothing about the model's faithfulness: they count in max_ulp, not here.
    lo, hi = probes.working_range(cfg)
    in_range = (inputs >= lo) & (inputs <= hi)
    err = np.abs(got[in_range].astype(np.float64) - want[in_range].astype(np.float64))
    result["range_c"] = [lo, hi]
    result["range_max_abs_err"] = float(err.max()) if err.size else 0.0
    return result


def parity_failure(fmt: str, p: dict[str, Any]) -> str:
    """One short line: how many probes fail, and the worst, in degrees rounded to what matters."""
    return (
        f"{fmt} parity: {p['failures']:,} of {p['probes']:,} probes beyond atol {p['atol']:g} + rtol {p['rtol']:g} "
        f"* |Keras|; worst at {p['worst_input']:.6g} degC: {p['worst_output']:.6g} vs Keras {p['worst_reference']:.6g} degF "
        f"(off by {p['worst_abs_err']:.3g}; {p['max_ulp']:,} ulp at most)"
    )


def accuracy_failure(fmt: str, a: dict[str, Any]) -> str:
    return (
        f"{fmt} accuracy: MAE {a['mae_f']:.4g} degF against F = 1.8 C + 32 (allowed {a['max_mae_f']:g}); "
        f"worst {a['max_err_f']:.4g} degF at {a['worst_input_c']:.6g} degC"
    )


def run(cfg: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """Verify, write the report, and raise VerificationFailed (after writing it) on any breach.

    On a breach, also removes the bundle in ``layout.dist`` (if the layout has one)."""
    from .config import is_dataset

    if is_dataset(cfg):
        return run_dataset(cfg, layout)
    ref = reference.load(layout.reference)
    runners = {fmt: open_runner(fmt, layout.model(fmt)) for fmt in FORMATS}
    max_mae = cfg["verify"]["max_mae_f"]
    acc_x = ref["accuracy_x"]
    parity = {fmt: check_format(fmt, runners[fmt], ref, cfg) for fmt in FORMATS}
    acc = {"keras": accuracy(acc_x, ref["keras_accuracy_y"], max_mae)}
    for fmt in FORMATS:
        acc[fmt] = accuracy(acc_x, runners[fmt].run(acc_x), max_mae)

    variants = check_variants(cfg, layout, ref, runners)
    failures = [parity_failure(fmt, p) for fmt, p in parity.items() if not p["passed"]]
    chosen, problem = bundle_model.choose(cfg, variants, layout)
    failures += [accuracy_failure(fmt, a) for fmt, a in acc.items() if not a["passed"]]
    failures += [problem] if problem else []
    files = model_files(layout, chosen)
    report = {
        "passed": not failures,
        "failures": failures,
        "parity": parity,
        "accuracy": acc,
        "variants": variants,
        "training": report_mod.training(layout),
        "bundle": chosen,
        "files": files,
        "keras_sha256": str(ref["keras_sha256"]),
        "config_sha256": config_hash(cfg),
        "versions": report_mod.versions(),
    }
    return finish(layout, report)


def run_dataset(cfg: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """Dataset mode (verify_dataset.py): parity with Keras and accuracy on the validation rows."""
    from . import report_dataset, verify_dataset

    ref = reference.load(layout.reference)
    labels = [str(v) for v in ref["labels"]] if "labels" in ref and ref["labels"].size else None
    res = verify_dataset.run(cfg, layout, labels)
    chosen, problem = bundle_model.choose(cfg, res["variants"], layout)
    failures = res["failures"] + ([problem] if problem else [])
    files = model_files(layout, chosen)
    h = res["history"]
    report = {
        "passed": not failures,
        "failures": failures,
        "mode": "dataset",
        "task": res["task"],
        "output_kind": res["output_kind"],
        "parity": {fmt: res["formats"][f"{fmt}-fp32"]["parity"] for fmt in FORMATS},
        "accuracy": res["accuracy"],
        "variants": res["variants"],
        "training": {k: h[k] for k in ("came_trained", "source", "epochs", "batch_size", "final_loss", "rows",
                                       "parameters", "metric", "train_seconds") if k in h},
        "bundle": chosen,
        "files": files,
        "keras_sha256": str(ref["keras_sha256"]),
        "config_sha256": config_hash(cfg),
        "versions": report_mod.versions(),
    }
    return finish(layout, report, report_dataset.render_markdown)


def model_files(layout: Layout, chosen: dict[str, Any] | None) -> dict[str, Any]:
    """The models the report speaks for, with their sha256, by paths relative to the build folder
    (so a report still speaks for a copied build)."""
    files = {fmt: {"path": layout.relative(layout.model(fmt)), "sha256": sha256_file(layout.model(fmt))}
             for fmt in FORMATS}
    if chosen and chosen["model"] != "onnx-fp32":
        files["bundle_model"] = {"path": chosen["path"], "sha256": sha256_file(layout.build / chosen["path"])}
    return files


def finish(layout: Layout, report: dict[str, Any], render=None) -> dict[str, Any]:
    """Write the report; on failures remove the stale bundle and raise VerificationFailed."""
    failures = report["failures"]
    report_mod.write(layout, report, render)
    if failures:
        removed = bundle_model.remove_stale(layout) if layout.dist else []
        note = f"; removed stale {', '.join(removed)}" if removed else ""
        summary = f"verify failed: {len(failures)} check(s); report {layout.report_md}{note}"
        raise VerificationFailed("\n".join([f"verify: {f}" for f in failures] + [summary]))
    return report
