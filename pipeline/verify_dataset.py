"""Verify in dataset mode: every format against Keras, and every model against the held-out rows.

The tutorial's verify (verify.py) judges against a formula; here the reference is labelled
data. For each model (ONNX and TFLite in float32, and each reduced-precision variant):

- parity with Keras on the training rows, the validation rows, seeded synthetic rows within
  each feature's observed range and the edge rows (probes.dataset_probes), at batch 1 and at
  ``verify.large_batch``: ulps and max abs error per output; for classification also top-1
  agreement (exact ties aside) and the largest probability difference;
- accuracy on the validation rows only, in the task's terms: regression MAE and max error in
  the target's units; classification accuracy, per-class recall and the confusion matrix.

The float32 formats are held to ``verify.onnx``/``verify.tflite`` tolerances and 100 % top-1
agreement; the variants to their budgets in ``[variants.<name>]`` (regression: parity and MAE
in target units; classification: accuracy drop against the float model and top-1 agreement).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from export import variants as V

from . import fsutil, reference
from .errors import StageInputError
from .layout import Layout
from .names import FORMATS
from .numerics import compare
from .runners import Runner, open_runner
from .variant_checks import batch_1_p50_us

# A regression variant without a max_mae of its own: at most this times Keras's MAE on the
# validation rows (the target's units are the user's; the float model's MAE is their scale).
MAE_SLACK = 1.05
TIE = 1e-6  # Keras's top two outputs closer than this: either label is right (an exact tie)


def softmax(y: np.ndarray) -> np.ndarray:
    z = y.astype(np.float64) - y.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probabilities(y: np.ndarray, kind: str) -> np.ndarray:
    return softmax(y) if kind == "logits" else y.astype(np.float64)


def agreement(keras_y: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement with Keras, ties (Keras's top two within TIE) counted as agreeing."""
    k1, g1 = keras_y.argmax(axis=1), got.argmax(axis=1)
    top2 = np.sort(keras_y, axis=1)[:, -2:] if keras_y.shape[1] > 1 else np.zeros((len(keras_y), 2))
    tie = (top2[:, 1] - top2[:, 0]) <= TIE
    same = (k1 == g1) | tie
    bad = np.flatnonzero(~same)
    return {"rows": int(len(same)), "agree": int(same.sum()), "fraction": float(same.mean()),
            "ties": int(tie.sum()), "first_disagreement_row": int(bad[0]) if bad.size else None}


def task_accuracy(task: str, labels: list[str] | None, y_true: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The validation rows' accuracy in the task's terms."""
    if task == "regression":
        err = np.abs(y.reshape(len(y), -1)[:, 0].astype(np.float64) - y_true.astype(np.float64))
        worst = int(np.argmax(err))
        return {"rows": int(len(err)), "mae": float(err.mean()), "max_err": float(err[worst]), "worst_row": worst}
    pred = y.argmax(axis=1)
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true.astype(np.int64), pred), 1)
    support = cm.sum(axis=1)
    recall = {labels[i]: (float(cm[i, i] / support[i]) if support[i] else None) for i in range(k)}
    return {"rows": int(len(pred)), "accuracy": float((pred == y_true).mean()), "recall": recall,
            "confusion": cm.tolist(), "labels": list(labels)}


def accuracy_failure(name: str, acc: dict[str, Any], v: dict[str, Any]) -> str | None:
    if "mae" in acc and v.get("max_mae") is not None and acc["mae"] > v["max_mae"]:
        return (f"{name} accuracy: MAE {acc['mae']:.4g} on {acc['rows']} validation rows (allowed {v['max_mae']:g}); "
                f"worst {acc['max_err']:.4g} at validation row {acc['worst_row']}")
    if "accuracy" in acc and v.get("min_accuracy") is not None and acc["accuracy"] < v["min_accuracy"]:
        return (f"{name} accuracy: {acc['accuracy']:.2%} on {acc['rows']} validation rows "
                f"(required {v['min_accuracy']:.2%})")
    return None


class Context:
    """What every model is measured against: the reference, the task, the large batch."""

    def __init__(self, cfg: dict[str, Any], ref: dict[str, np.ndarray], history: dict[str, Any], labels):
        self.cfg = cfg
        self.ref = ref
        self.x, self.keras_y = ref["x"], ref["keras_y"]
        self.task = history.get("task", "regression")
        self.kind = history.get("output_kind", "values")
        self.labels = labels
        self.large = cfg["verify"]["large_batch"]
        self.val = reference.in_group(ref, "validation")
        self.y_val = ref["y_val"]
        self.keras_acc = task_accuracy(self.task, labels, self.y_val, self.keras_y[self.val])


def measure(ctx: Context, runner: Runner, tol: dict[str, float] | None) -> dict[str, Any]:
    """One model's outputs at batch 1 and the large batch, against Keras's and the labels."""
    x, ky = ctx.x, ctx.keras_y
    y1 = runner.run_each(x)
    xl = tiled_rows(x, ctx.large)
    t = time.perf_counter()
    yl = runner.run(xl)
    large_s = time.perf_counter() - t
    kl = tiled_rows(ky, ctx.large)
    rows = np.arange(len(x))
    batches = {}
    for label, (got, want, idx) in {"batch_1": (y1, ky, rows),
                                    f"batch_{ctx.large}": (yl, kl, tiled_rows(rows, ctx.large))}.items():
        per_value_row = np.repeat(idx, want[0].size).astype(np.float64)
        atol, rtol = (tol["atol"], tol["rtol"]) if tol else (np.inf, 0.0)
        b = asdict(compare(per_value_row, want.reshape(-1), got.reshape(-1), atol, rtol))
        b["worst_row"] = int(b.pop("worst_input"))
        if tol is None:  # a variant: held to its budget, not to float32 tolerances
            b.update(atol=None, rtol=None, passed=True, failures=0, min_atol_to_pass=None)
        if ctx.task == "classification":
            b["top1"] = agreement(want, got)
            b["max_prob_diff"] = float(np.abs(probabilities(got, ctx.kind) - probabilities(want, ctx.kind)).max())
        batches[label] = b
    worst = max(batches, key=lambda k: batches[k]["max_abs_err"])
    parity = {k: batches[worst][k] for k in ("max_ulp", "max_abs_err", "worst_row")}
    parity.update(worst_batch=worst, passed=all(b["passed"] for b in batches.values()), batches=batches,
                  rows=int(len(x)), groups={str(g): int((ctx.ref["group"] == i).sum())
                                            for i, g in enumerate(ctx.ref["group_names"])})
    if ctx.task == "classification":
        parity["top1_agreement"] = min(b["top1"]["fraction"] for b in batches.values())
        parity["max_prob_diff"] = max(b["max_prob_diff"] for b in batches.values())
    return {"parity": parity, "accuracy": task_accuracy(ctx.task, ctx.labels, ctx.y_val, y1[ctx.val]),
            "speed": {"p50_batch_1_us": batch_1_p50_us(runner, x[:1]), "rows_per_s_large_batch": ctx.large / large_s},
            "val_outputs": y1[ctx.val]}


def tiled_rows(x: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``x`` repeated end to end, cut to ``n`` rows."""
    reps = -(-n // len(x))
    return np.concatenate([x] * reps)[:n] if reps > 1 else x[:n]


def float_failures(name: str, m: dict[str, Any], ctx: Context) -> list[str]:
    out, p = [], m["parity"]
    if not p["passed"]:
        b = p["batches"][p["worst_batch"]]
        out.append(f"{name} parity: {b['failures']:,} of {b['probes']:,} output values beyond atol {b['atol']:g} + "
                   f"rtol {b['rtol']:g} * |Keras| ({p['worst_batch'].replace('_', ' ')}); worst at probe row "
                   f"{b['worst_row']}: {b['worst_output']:.6g} vs Keras {b['worst_reference']:.6g} "
                   f"(off by {b['worst_abs_err']:.3g}; {b['max_ulp']:,} ulp at most)")
    if ctx.task == "classification" and p["top1_agreement"] < 1.0:
        b = min(p["batches"].values(), key=lambda b: b["top1"]["fraction"])
        out.append(f"{name} top-1 agreement with Keras: {b['top1']['agree']} of {b['top1']['rows']} rows "
                   f"(expected all, exact ties aside; first disagreement at probe row {b['top1']['first_disagreement_row']})")
    return out


def over_budget(m: dict[str, Any], budget: dict[str, Any], ctx: Context) -> list[str]:
    """One short reason per figure beyond the variant's budget."""
    reasons = []
    acc, p = m["accuracy"], m["parity"]
    if ctx.task == "classification":
        drop = ctx.keras_acc["accuracy"] - acc["accuracy"]
        m["accuracy_drop"] = drop
        if drop > budget["max_accuracy_drop"] + 1e-12:
            reasons.append(f"accuracy {acc['accuracy']:.2%} is {drop * 100:.2f} points below Keras's "
                           f"{ctx.keras_acc['accuracy']:.2%} (allowed {budget['max_accuracy_drop'] * 100:g})")
        if p["top1_agreement"] < budget["min_agreement"]:
            reasons.append(f"top-1 agreement with Keras {p['top1_agreement']:.2%} < {budget['min_agreement']:.2%}")
    else:
        if budget.get("parity") is not None and p["max_abs_err"] > budget["parity"]:
            reasons.append(f"parity {p['max_abs_err']:.4g} > {budget['parity']:g} (at probe row {p['worst_row']}, "
                           f"{p['worst_batch'].replace('_', ' ')})")
        allowed = budget["max_mae"] if budget.get("max_mae") is not None else MAE_SLACK * ctx.keras_acc["mae"]
        if acc["mae"] > allowed:
            reasons.append(f"MAE {acc['mae']:.4g} > {allowed:.4g}" + ("" if budget.get("max_mae") is not None
                                                                       else f" ({MAE_SLACK:g}x Keras's)"))
    return reasons


def run(cfg: dict[str, Any], layout: Layout, labels) -> dict[str, Any]:
    """Every model's measurements, and the failure lines of the float32 formats.

    Returns {"formats": {fmt: measurement}, "accuracy": {"keras": .., fmt: ..}, "variants": {...},
    "failures": [...]}; variants.npz holds the validation rows' outputs for the plots."""
    ref = reference.load(layout.reference)
    if "y_val" not in ref:
        raise StageInputError(layout.reference, "made in the tutorial mode", "re-run `make export`")
    try:
        history = json.loads(layout.history.read_text())
    except (OSError, ValueError):
        raise StageInputError(layout.history, "not found or unreadable", "run `make train` first") from None
    ctx = Context(cfg, ref, history, labels)
    failures: list[str] = []
    formats = {}
    for fmt in FORMATS:
        runner = open_runner(fmt, layout.model(fmt))
        m = measure(ctx, runner, cfg["verify"][fmt])
        m.update(size_bytes=layout.model(fmt).stat().st_size, budget=None, passed=m["parity"]["passed"])
        formats[f"{fmt}-fp32"] = m
        failures += float_failures(fmt, m, ctx)
    accuracy = {"keras": ctx.keras_acc, **{n: m["accuracy"] for n, m in formats.items()}}
    for name, acc in accuracy.items():
        line = accuracy_failure(name, acc, cfg["verify"])
        if line:
            failures.append(line)
    try:
        index = json.loads(layout.variants_index.read_text())["variants"]
    except (OSError, ValueError, KeyError):
        raise StageInputError(layout.variants_index, "not found or unreadable", "run `make export` first") from None
    variants = dict(formats)
    for name, entry in index.items():
        budget = cfg["variants"].get(name)
        if not isinstance(budget, dict):
            continue
        if not entry["built"]:
            variants[name] = {"built": False, "passed": False, "reason": f"not built: {entry['reason']}",
                              "budget": budget}
            continue
        path = layout.variants_dir / entry["file"]
        m = measure(ctx, open_runner(V.fmt(name), path), None)
        m.update(built=True, size_bytes=path.stat().st_size, budget=budget)
        reasons = over_budget(m, budget, ctx)
        m["passed"], m["reason"] = not reasons, "; ".join(reasons)
        variants[name] = m
    plot_data(layout, ctx, variants)
    for m in variants.values():
        m.pop("val_outputs", None)
    return {"task": ctx.task, "output_kind": ctx.kind, "formats": formats, "accuracy": accuracy,
            "variants": variants, "failures": failures, "history": history}


def plot_data(layout: Layout, ctx: Context, variants: dict[str, Any]) -> None:
    """build/verify/variants.npz in dataset mode: what the plots draw (variantplot.py)."""
    built = [n for n, m in variants.items() if "accuracy" in m]
    metric = "accuracy" if ctx.task == "classification" else "mae"
    arrays = {"mode": np.array("dataset"), "task": np.array(ctx.task), "names": np.array(built),
              "size_bytes": np.array([variants[n]["size_bytes"] for n in built]),
              "score": np.array([variants[n]["accuracy"][metric] for n in built]),
              "keras_score": np.array(ctx.keras_acc[metric]), "y_val": ctx.y_val}
    onnx = variants["onnx-fp32"]
    if ctx.task == "classification":
        arrays["confusion"] = np.array(onnx["accuracy"]["confusion"])
        arrays["labels"] = np.array(ctx.labels)
    else:
        arrays["pred_val"] = onnx["val_outputs"].reshape(len(ctx.y_val), -1)[:, 0]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    fsutil.write_bytes(layout.variants_npz, buf.getvalue())
