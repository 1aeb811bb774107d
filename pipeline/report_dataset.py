"""report.md in dataset mode: parity with Keras, accuracy on the validation rows, the variants.

The JSON report (report.json) holds every figure; this renders the ones a person reads.
"""

from __future__ import annotations

from typing import Any

from .report import VARIANT_NOTES
from .verify_dataset import MAE_SLACK

NOTES = {
    "onnx-fp32": "the float32 ONNX model (what the device runs unless [bundle] model says otherwise)",
    "tflite-fp32": "the float32 TFLite model",
    "onnx-int8-static": "int8 weights (7-bit range) and activations (QDQ), calibrated on training rows; the "
                        "input's standardization stays float32",
    "tflite-int8-dynamic": "dynamic-range quantization (int8 weights, float activations)",
    "tflite-int8-full": "full integer: int8 input (one scale for every raw feature), output and weights, calibrated",
}


def _result(v: dict[str, Any]) -> str:
    if v.get("budget") is None:
        return "reference"
    return "pass" if v["passed"] else f"FAIL: {v['reason']}"


def render_markdown(r: dict[str, Any]) -> str:
    task = r["task"]
    lines = ["# Verification report", "", f"**Result: {'PASSED' if r['passed'] else 'FAILED'}**", ""]
    lines += [f"- FAIL: {f}" for f in r["failures"]]
    if r["failures"]:
        lines.append("")
    t = r.get("training") or {}
    if t.get("came_trained"):
        lines += [f"The model came trained (`{t.get('source')}`): no training ran; the data verified it.", ""]
    lines += ["## Parity with Keras (the reference)", ""]
    groups = next(iter(r["parity"].values()))["groups"]
    lines += [
        "Probe rows: " + ", ".join(f"{n} {g}" for g, n in groups.items()) + " (synthetic: seeded, uniform within "
        "each feature's observed range; edge: every feature at its minimum, maximum and 0), at batch 1 and in a "
        "large batch. Pass: |x - keras| <= atol + rtol * |keras| on every output value"
        + ("; and the same top-1 class on every row (exact ties aside)." if task == "classification" else "."),
        "",
        "| format | max ulp | max abs err | worst row | " + ("top-1 agreement | max prob. diff | "
                                                             if task == "classification" else "") + "result |",
        "|---|---|---|---|" + ("---|---|" if task == "classification" else "") + "---|",
    ]
    for fmt, p in r["parity"].items():
        extra = f"{p['top1_agreement']:.2%} | {p['max_prob_diff']:.3g} | " if task == "classification" else ""
        lines.append(f"| {fmt} | {p['max_ulp']:,} | {p['max_abs_err']:.3g} | {p['worst_row']} | {extra}"
                     f"{'pass' if p['passed'] else 'FAIL'} |")
    lines += ["", "## Accuracy on the validation rows", ""]
    acc = r["accuracy"]
    rows = next(iter(acc.values()))["rows"]
    lines += [f"{rows} held-out rows (never trained on).", "", "| model | " +
              ("accuracy |" if task == "classification" else "MAE | max error |"),
              "|---|" + ("---|" if task == "classification" else "---|---|")]
    for name, a in acc.items():
        lines.append(f"| {name} | {a['accuracy']:.2%} |" if task == "classification"
                     else f"| {name} | {a['mae']:.4g} | {a['max_err']:.4g} |")
    if task == "classification":
        k = acc["keras"]
        labels = k["labels"]
        lines += ["", "Per-class recall (Keras): " + ", ".join(
            f"{lab} {rec:.0%}" if rec is not None else f"{lab} -" for lab, rec in k["recall"].items()), "",
                  "Confusion matrix (Keras; rows: true class, columns: predicted; "
                  "[picture](variants-error.png)):", "",
                  "| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for lab, row in zip(labels, k["confusion"]):
            lines.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    else:
        lines += ["", "[Error against the target, per validation row](variants-error.png)."]
    lines += ["", "## Models and reduced-precision variants", "",
              "Each model on the same rows; speed in its own runtime (onnxruntime or LiteRT, one thread, "
              "Python call included); [accuracy against size](variants-ulp.png).", "",
              "| model | bytes | " + ("accuracy | drop (points) | top-1 agreement" if task == "classification"
                                    else "MAE | parity vs Keras") + " | batch 1 p50 (us) | budget | result |",
              "|---|---|---|---|---|---|---|" + ("---|" if task == "classification" else "")]
    keras_acc = acc["keras"]
    for name, v in sorted(r["variants"].items(), key=lambda nv: (nv[1].get("size_bytes", 1 << 62), nv[0])):
        if not v.get("built", True):
            lines.append(f"| {name} | - | - | - | - | - |{' - |' if task == 'classification' else ''} {v['reason']} |")
            continue
        a, p, b = v["accuracy"], v["parity"], v.get("budget")
        if task == "classification":
            drop = (keras_acc["accuracy"] - a["accuracy"]) * 100
            figs = f"{a['accuracy']:.2%} | {drop:.2f} | {p['top1_agreement']:.2%}"
            budget = f"drop <= {b['max_accuracy_drop'] * 100:g}, agreement >= {b['min_agreement']:.0%}" if b else "float checks"
        else:
            figs = f"{a['mae']:.4g} | {p['max_abs_err']:.3g}"
            parts = [f"parity <= {b['parity']:g}"] if b and b.get("parity") is not None else []
            if b:
                parts.append(f"MAE <= {b['max_mae']:g}" if b.get("max_mae") is not None
                             else f"MAE <= {MAE_SLACK:g}x Keras's ({MAE_SLACK * keras_acc['mae']:.4g})")
            budget = ", ".join(parts) if b else "float checks"
        lines.append(f"| {name} | {v['size_bytes']:,} | {figs} | {v['speed']['p50_batch_1_us']:.1f} | {budget} | "
                     f"{_result(v)} |")
    lines += ["", "What each is:", ""] + [f"- {n}: {NOTES.get(n) or VARIANT_NOTES.get(n, '')}" for n in r["variants"]]
    chosen = r.get("bundle")
    if chosen:
        lines += ["", f"The bundle ships **{chosen['model']}** ({chosen['why']})."]
    if t and not t.get("came_trained"):
        lines += ["", "## Training", "", f"{t.get('epochs')} epochs of batch {t.get('batch_size')} on "
                  f"{t.get('rows', {}).get('train')} rows, {t.get('parameters')} parameters, final loss "
                  f"{t.get('final_loss', float('nan')):.6g}, {t.get('train_seconds', 0):.1f} s "
                  "([curve](../train/loss.png))."]
    lines += ["", "## Files", ""]
    lines += [f"- {name}: `{f['path']}` (in the build folder) sha256 `{f['sha256']}`" for name, f in r["files"].items()]
    lines.append(f"- config sha256 `{r['config_sha256']}`")
    lines += ["", "## Versions", ""] + [f"- {k} {v}" for k, v in r["versions"].items()]
    return "\n".join(lines) + "\n"
