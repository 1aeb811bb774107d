"""Verify's report: build/verify/report.json for programs and report.md for people.

``write`` writes both from the report verify assembled; ``versions`` and ``training`` are
two of its parts (the tools that made the models, and what training recorded). One
renderer for every model: the task decides which figures a table shows, nothing else.
"""

from __future__ import annotations

import json
import platform
from typing import Any

from . import fsutil
from .bundle_model import AUTO_TIE
from .engine import MAE_SLACK
from .layout import Layout

NOTES = {
    "onnx-fp32": "the ONNX model (float32)",
    "tflite-fp32": "the TFLite model (float32)",
    "onnx-fp16": "float16 weights, float32 input and output",
    "tflite-fp16": "float16 weights (TFLite's float16 quantization)",
    "onnx-int8-dynamic": "int8 weights; inputs quantized at run time with one scale per batch",
    "onnx-int8-static": "uint8 activations and int8 weights (QDQ, U8S8) after onnxruntime's pre-processing, "
                        "calibrated; the input's own arithmetic (standardization) kept in float32, 7-bit weights "
                        "(x86's int8 dot products without VNNI cannot saturate)",
    "tflite-int8-dynamic": "dynamic-range quantization (int8 weights; for tensors this small, the converter keeps float32)",
    "tflite-int8-full": "full integer: int8 input, output, weights and activations, calibrated",
}


def write(layout: Layout, report: dict[str, Any]) -> None:
    fsutil.write_json(layout.report_json, report)
    fsutil.write_text(layout.report_md, render_markdown(report))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def training(layout: Layout) -> dict[str, Any]:
    """What train recorded that the report shows (empty if history.json is missing or unreadable)."""
    try:
        h = json.loads(layout.history.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(h, dict):
        return {}
    keep = ("came_trained", "source", "epochs", "batch_size", "final_loss", "loss_name", "rows", "parameters",
            "metric", "train_seconds", "least_squares", "steps", "batch_norm")
    out = {k: h[k] for k in keep if k in h}
    scores = h.get(h.get("metric", ""), [])  # the training rows' metric, as fit measured it (training mode)
    if isinstance(scores, list) and scores:
        out["final_train_score"] = scores[-1]
    return out


def snr(v: float | None) -> str:
    return "exact" if v is None else f"{v:.1f} dB"


def span(r: dict[str, Any]) -> str:
    """The working range as a message shows it: 'lo..hi' for one feature, else per feature."""
    if r["probes"]["range"] is None:  # one output of a model of several inputs (render_tensors)
        return "each input's working range"
    lo, hi = r["probes"]["range"]
    if len(lo) == 1:
        return f"{lo[0]:g}..{hi[0]:g}"
    return "each feature's working range"


def headline(r: dict[str, Any]) -> str:
    """The verify line's figures: parity at each output's scale, the working range's largest
    error, and accuracy on the validation rows."""
    if r.get("task") == "tensors":
        return "; ".join(f"output {o!r}: {headline(s)}" for o, s in r["outputs"].items())
    p, a = r["parity"], r["accuracy"]
    classifier = r["task"] == "classification"
    parts = ["vs Keras at the output's scale: " + ", ".join(
        f"{f} {x['range']['scale_ulp']:.3g} ulp (SNR {snr(x['range']['snr_db'])})" for f, x in p.items())]
    parts[0] += f"; max abs err over {span(r)}: " + ", ".join(f"{f} {x['range']['max_abs_err']:.3g}" for f, x in p.items())
    if classifier:
        parts[0] += "; top-1 agreement " + ", ".join(f"{f} {x['top1_agreement']:.2%}" for f, x in p.items())
    rows = a["keras"]["rows"]
    score = (lambda x: f"{x['accuracy']:.2%}") if classifier else (lambda x: f"MAE {x['mae']:.4g}")
    parts.append(f"on {rows} validation rows: " + ", ".join(f"{n} {score(x)}" for n, x in a.items()))
    if r.get("baseline"):
        parts[-1] += f", {baseline_text(r['baseline'], classifier)}"
    return "; ".join(parts)


def baseline_label(b: dict[str, Any], classifier: bool) -> str:
    """"baseline (majority class 'a')" or "baseline (training median 3.2)"."""
    if classifier:
        return f"baseline (majority class '{b['label']}')"
    if "targets" in b:
        return f"baseline ({b['kind']})"
    return f"baseline ({b['kind']} {b['value']:.4g})"


def baseline_text(b: dict[str, Any], classifier: bool) -> str:
    """The baseline and its score: "baseline (majority class 'a') 50.00%", "... MAE 4.1"."""
    return f"{baseline_label(b, classifier)} " + (f"{b['accuracy']:.2%}" if classifier else f"MAE {b['mae']:.4g}")


def _result(v: dict[str, Any]) -> str:
    if v.get("budget") is None:
        return "float32 checks" if v.get("passed") else "FAIL"
    return "pass" if v["passed"] else f"FAIL: {v['reason']}"


def _budget(b: dict[str, Any] | None, classifier: bool, keras: dict[str, Any]) -> str:
    if b is None:
        return "float32 tolerances"
    if classifier:
        return f"drop <= {b['max_accuracy_drop'] * 100:g}, agreement >= {b['min_agreement']:.0%}"
    several = len(keras.get("targets") or {}) > 1
    parts = [f"parity <= {b['parity']:g}"] if b.get("parity") is not None else []
    parts.append(f"MAE <= {b['max_mae']:g}" if b.get("max_mae") is not None
                 else f"MAE <= {MAE_SLACK:g}x Keras's" + ("" if several else f" ({MAE_SLACK * keras['mae']:.4g})"))
    if b.get("max_err") is not None:
        parts.append(f"max error <= {b['max_err']:g}")
    return ", ".join(parts) + (", per target" if several else "")


def graph_pass_lines(gp: dict[str, Any] | None) -> list[str]:
    """The ONNX graph pass (export/onnx_fuse.py): nodes before and after, and each rewrite's count."""
    if not gp:
        return []
    done = ", ".join(f"{what} {n}" for what, n in gp["rewrites"].items()) or "nothing to rewrite"
    ops = sorted(set(gp["ops_before"]) | set(gp["ops_after"]))
    changed = [op for op in ops if gp["ops_before"].get(op, 0) != gp["ops_after"].get(op, 0)]
    lines = ["", "## The ONNX graph pass", "",
             f"After tf2onnx, export rewrote the graph of model.onnx (and of the ONNX variants built from it): "
             f"{gp['nodes_before']:,} nodes before, {gp['nodes_after']:,} after; {done}. The float32 parity above "
             "is measured on the rewritten graph."]
    if changed:
        lines += ["", "| op type | before | after |", "|---|---|---|"]
        lines += [f"| {op} | {gp['ops_before'].get(op, 0)} | {gp['ops_after'].get(op, 0)} |" for op in changed]
    return lines


# CPU flags of integer dot-product instructions, where int8 kernels gain over float32: x86's
# VNNI (AVX-512 or AVX) and ARM's dot product (the Pi 5's Cortex-A76 has it, the Pi 4's A72 not).
DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "asimddp")


def cpu(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """The machine verify timed on: its architecture and which integer dot-product flags it has."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            words = set(f.read().split())
    except OSError:
        words = set()
    return {"machine": platform.machine(), "dot_product": [f for f in DOT_PRODUCT_FLAGS if f in words]}


SLOWER = AUTO_TIE  # a time ratio above this is slower, not timing noise: the margin auto's ties use


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def speed_lines(r: dict[str, Any]) -> list[str]:
    """What the time-against-float32 column means on this machine, and the verdict for int8."""
    c = r.get("cpu") or {}
    dot = c.get("dot_product")
    has = (f"with integer dot-product instructions ({', '.join(dot)})" if dot else
           "without integer dot-product instructions (no VNNI, no asimddp)") if dot is not None else "of unknown flags"
    lines = ["", f"Time against float32 (the same format's float32 model, in the same runtime and process, blocks "
             f"of calls alternating; below 1x is faster) was measured on this machine, {c.get('machine', '?')} {has}: "
             "an estimate, not a check."]
    slower = sorted(n for n, v in r["variants"].items() if "int8" in n and (v.get("speed") or {}).get("vs_fp32")
                    and min(v["speed"]["vs_fp32"].values()) > SLOWER)
    if slower:
        lines[-1] += (f" More than {SLOWER - 1:.0%} slower than float32 here at every batch measured: "
                      f"{', '.join(slower)}.")
    lines[-1] += (" int8 pays on CPUs with integer dot-product instructions (x86 VNNI; the Raspberry Pi 5's "
                  "Cortex-A76) on models whose arithmetic outweighs the quantize and dequantize steps, and often "
                  "does not on a Cortex-A72 (Raspberry Pi 4): measure on the device (`python -m runtime bench`).")
    return lines


def _head(r: dict[str, Any]) -> list[str]:
    """The title, the result, each failure and warning, and whether the model came trained."""
    lines = ["# Verification report", "", f"**Result: {'PASSED' if r['passed'] else 'FAILED'}**", ""]
    lines += [f"- FAIL: {f}" for f in r["failures"]]
    lines += [f"- WARNING: {w}" for w in r.get("warnings", [])]
    if r["failures"] or r.get("warnings"):
        lines.append("")
    t = r.get("training") or {}
    if t.get("came_trained"):
        lines += [f"The model came trained (`{t.get('source')}`): no training ran; the data verified it.", ""]
    return lines


def render_tensors(r: dict[str, Any]) -> str:
    """The report of a model of several inputs or outputs: one output's sections after another."""
    shapes = lambda d: ", ".join(f"`{n}` {tuple(v['shape'])}" for n, v in d.items())  # noqa: E731
    lines = _head(r) + [
        f"The model takes the inputs {shapes(r['inputs'])} and gives the outputs "
        + ", ".join(f"`{o}` ({s['task']})" for o, s in r["outputs"].items())
        + ". Every model was fed by input name and read by output name; each output is judged on its own, in its "
          "task's terms, below. A variant passes when every output is within its budget."]
    for o, section in r["outputs"].items():
        lines += ["", *(line.replace("## ", f"## Output `{o}`: ", 1) if line.startswith("## ") else line
                        for line in _figures(section))]
    lines += _tail(r)
    return "\n".join(lines) + "\n"


def render_markdown(r: dict[str, Any]) -> str:
    if r.get("task") == "tensors":
        return render_tensors(r)
    return "\n".join(_head(r) + _figures(r) + _tail(r)) + "\n"


def _figures(r: dict[str, Any]) -> list[str]:
    """Parity with Keras, accuracy on the validation rows, and the models and variants, of one output."""
    classifier = r["task"] == "classification"
    lines: list[str] = []
    pr = r["probes"]
    lines += [
        "## Parity with Keras (the reference)", "",
        "Every model ran once over the probe rows (" + ", ".join(f"{g} {n:,}" for g, n in pr["groups"].items())
        + f"; pipeline/probes.py says what each group is), one row at a time and tiled to a batch of "
        f"{pr['large_batch']:,}. The float32 formats pass when |x - keras| <= atol + rtol * |keras| on every "
        "output value" + (", and the top-1 class is Keras's on every row (exact ties aside)." if classifier else "."),
        "",
        f"Measured against each output's own scale over the working range ({span(r)}, {pr['range_rows']:,} rows): "
        "the largest error in float32 steps at the output's largest magnitude (ulps near zero measure nothing) "
        "and the signal-to-noise ratio; the elementwise ulp count over every probe is beside them.",
        "",
        "| format | ulp at scale | SNR | max abs err (range) | max ulp (elementwise) | max abs err (all) | "
        + ("top-1 agreement | max prob. diff | " if classifier else "") + "failing values | result |",
        "|---|---|---|---|---|---|" + ("---|---|" if classifier else "") + "---|---|",
    ]
    for fmt, p in r["parity"].items():
        extra = f"{p['top1_agreement']:.2%} | {p['max_prob_diff']:.3g} | " if classifier else ""
        lines.append(f"| {fmt} | {p['range']['scale_ulp']:.3g} | {snr(p['range']['snr_db'])} | "
                     f"{p['range']['max_abs_err']:.3g} | {p['max_ulp']:,} | {p['max_abs_err']:.3g} | {extra}"
                     f"{p['failures']:,} of {p['probes']:,} (atol {p['atol']:g}, rtol {p['rtol']:g}; smallest atol "
                     f"that passes {p['min_atol_to_pass']:.3g}) | {'pass' if p['passed'] else 'FAIL'} |")
    lines += ["", "Per probe group (batch 1): " + "; ".join(
        f"{fmt}: " + ", ".join(f"{g} {x['max_ulp']:,} ulp / {x['max_abs_err']:.3g}" for g, x in p["groups"].items())
        for fmt, p in r["parity"].items()) + "."]
    acc = r["accuracy"]
    k = acc["keras"]
    oracle = k.get("oracle_rows") or 0
    targets = [] if classifier else list(k.get("targets") or {})
    several = len(targets) > 1  # a regression of several targets: each one's figures beside the whole's
    per = "".join(f" MAE {t} | max error {t} |" for t in targets) if several else ""
    lines += ["", "## Accuracy on the validation rows", "",
              f"{k['rows']:,} rows never trained on" + (f", {oracle:,} of them labelled by the oracle "
                                                        "(verify.oracle)" if oracle else "") + "."
              + (" MAE and max error are over every target's values, then per target, each in its own units; "
                 "the checks hold each target to its own." if several else ""), "",
              "| model | " + ("accuracy |" if classifier else "MAE | max error |") + per,
              "|---|" + ("---|" if classifier else "---|---|") + "---|---|" * len(targets) * several]
    for name, a in acc.items():
        figs = "".join(f" {a['targets'][t]['mae']:.4g} | {a['targets'][t]['max_err']:.4g} |" for t in targets
                       ) if several else ""
        lines.append(f"| {name} | {a['accuracy']:.2%} |" if classifier
                     else f"| {name} | {a['mae']:.4g} | {a['max_err']:.4g} |{figs}")
    b = r.get("baseline")
    if b:
        figs = "".join(f" {b['targets'][t]['mae']:.4g} | - |" for t in targets) if several else ""
        lines.append(f"| {baseline_label(b, classifier)} | {b['accuracy']:.2%} |" if classifier
                     else f"| {baseline_label(b, classifier)} | {b['mae']:.4g} | - |{figs}")
        need = "remove at least {:.0%} of its error".format(b["margin"]) + (" on each target" if several else "")

        def mean_or_median(x: dict[str, Any]) -> str:
            return (f"the training mean ({x['mean']['value']:.4g}, MAE {x['mean']['mae']:.4g}) or median "
                    f"({x['median']['value']:.4g}, MAE {x['median']['mae']:.4g})")

        how = ("the class most training rows have" if classifier else
               "per target " + "; ".join(f"{t!r} {mean_or_median(x)}" for t, x in b["targets"].items())
               + ", whichever scores better" if several else f"{mean_or_median(b)}, whichever scores better")
        verdict = ("Keras beats it" if b["beaten"] else "Keras does **not** beat it"
                   + (" (a warning: verify.baseline = \"warn\")" if b["check"] == "warn" else ""))
        lines += ["", f"The baseline always predicts {how}; a model must {need} (verify.baseline_margin). {verdict}."]
    if classifier:
        labels = k["labels"]
        lines += ["", "Per-class recall (Keras): " + ", ".join(
            f"{lab} {rec:.0%}" if rec is not None else f"{lab} -" for lab, rec in k["recall"].items()), "",
                  "Confusion matrix (Keras; rows: true class, columns: predicted):", "",
                  "| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for lab, row in zip(labels, k["confusion"]):
            lines.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    if r.get("plots", True):  # of a model of several outputs, the first output's (render_tensors)
        lines += ["", "Plots: [" + ("the float32 ONNX model's confusion matrix" if classifier else
                                   "every model's error per validation row") + "](validation.png), "
                  "[accuracy against size](accuracy-vs-size.png)."]
    lines += ["", "## Models and reduced-precision variants", "",
              "Each model on the same rows; speed in its own runtime (onnxruntime or LiteRT, one thread, "
              "Python call included); parity is the largest |model - Keras| over the working range.", "",
              "| model | bytes | " + ("accuracy | drop (points) | top-1 agreement" if classifier
                                    else "MAE | max error | parity vs Keras")
              + " | SNR | batch 1 p50 (us) | time vs float32 (batch 1 / 32) | budget | result |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in sorted(r["variants"].items(), key=lambda nv: (nv[1].get("size_bytes", 1 << 62), nv[0])):
        if not v.get("built", True):
            lines.append(f"| {name} | - | - | - | - | - | - | - | "
                         f"{_budget(v.get('budget'), classifier, k)} | {v['reason']} |")
            continue
        a, p = v["accuracy"], v["parity"]
        if classifier:
            figs = (f"{a['accuracy']:.2%} | {(k['accuracy'] - a['accuracy']) * 100:.2f} | "
                    f"{p['top1_agreement']:.2%}")
        else:
            figs = f"{a['mae']:.4g} | {a['max_err']:.4g} | {p['range']['max_abs_err']:.3g}"
        rel = v["speed"].get("vs_fp32") or {}
        lines.append(f"| {name} | {v['size_bytes']:,} | {figs} | {snr(p['range']['snr_db'])} | "
                     f"{v['speed']['p50_batch_1_us']:.1f} | {_ratio(rel.get('batch_1'))} / "
                     f"{_ratio(max((x for b, x in rel.items() if b != 'batch_1'), default=None))} | "
                     f"{_budget(v.get('budget'), classifier, k)} | {_result(v)} |")
    return lines + (speed_lines(r) if r.get("plots", True) else [])  # once: a model of several outputs' first


def _tail(r: dict[str, Any]) -> list[str]:
    """What each variant is, the graph pass, the bundle's choice, training, files and versions."""
    t = r.get("training") or {}
    lines = ["", "What each is:", ""] + [f"- {n}: {NOTES.get(n, '')}" for n in r["variants"]]
    lines += graph_pass_lines(r.get("graph_pass"))
    chosen = r.get("bundle")
    if chosen:
        lines += ["", f"The bundle ships **{chosen['model']}** ({chosen['why']})."]
    if t and not t.get("came_trained"):
        batch = "the full batch" if t.get("batch_size") == "all" else f"batch {t.get('batch_size')}"
        ls = t.get("least_squares") or {}
        best = (f"; the least-squares line through the training rows scores {ls['loss']:.6g}"
                if ls.get("loss") is not None else "")
        lines += ["", "## Training", "", f"{t.get('epochs')} epochs of {batch} on {t.get('rows', {}).get('train')} "
                  f"rows, {t.get('parameters')} parameters, final loss {t.get('final_loss', float('nan')):.6g}{best}; "
                  f"{t.get('train_seconds', 0):.1f} s ([curve](../train/loss.png))."]
    lines += ["", "## Files", ""]
    lines += [f"- {name}: `{f['path']}` (in the build folder) sha256 `{f['sha256']}`" for name, f in r["files"].items()]
    lines.append(f"- config sha256 `{r['config_sha256']}`")
    lines += ["", "## Versions", ""] + [f"- {k} {v}" for k, v in r["versions"].items()]
    return lines
