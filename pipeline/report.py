"""Verify's report: build/verify/report.json for programs and report.md for people.

``write`` writes both from the report verify assembled; ``versions`` and ``training`` are
two of its parts (the tools that made the models, and what training learned).
"""

from __future__ import annotations

import json
import platform
from typing import Any

from . import fsutil
from .layout import Layout

VARIANT_NOTES = {
    "onnx-fp32": "today's ONNX model (float32)",
    "tflite-fp32": "today's TFLite model (float32)",
    "onnx-fp16": "float16 weights, float32 input and output",
    "tflite-fp16": "float16 weights (TFLite's float16 quantization)",
    "onnx-int8-dynamic": "int8 weights; inputs quantized at run time with one scale per batch",
    "onnx-int8-static": "int8 weights and activations (QDQ), calibrated",
    "tflite-int8-dynamic": "dynamic-range quantization (for tensors this small, the converter keeps float32)",
    "tflite-int8-full": "full integer: int8 input, output and weights, calibrated",
}


def write(layout: Layout, report: dict[str, Any], render=None) -> None:
    fsutil.write_json(layout.report_json, report)
    fsutil.write_text(layout.report_md, (render or render_markdown)(report))


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
    return {k: h[k] for k in ("steps", "final_loss", "weights", "prediction_at_100c", "least_squares") if k in h}


def render_variants(variants: dict[str, Any]) -> list[str]:
    """The variants table, smallest file first."""
    if not variants:
        return []
    any_v = next(v for v in variants.values() if v.get("parity"))
    lo, hi = any_v["parity"]["range_c"]
    a = any_v["accuracy"]
    lines = [
        "",
        "## Reduced-precision variants",
        "",
        f"Each model against Keras (max |model - Keras| over {lo:g}..{hi:g} degC, at batch 1 and at the large "
        f"batch, whichever is worse) and against F = 1.8 C + 32 (the held-out grid, "
        f"{a['range_c'][0]:g}..{a['range_c'][1]:g} degC, at batch 1), with its speed in its own runtime "
        "(onnxruntime or LiteRT, one thread, Python call included) and its budget in degF "
        "(MAE / max error / parity). The float32 models are held to the ulp-level checks above instead.",
        "",
        "| model | bytes | parity vs Keras (degF, at degC) | MAE (degF) | max error (degF, at degC) | "
        "batch 1 p50 (us) | values/s, large batch | budget | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    built = sorted(((n, v) for n, v in variants.items() if v.get("parity")), key=lambda nv: (nv[1]["size_bytes"], nv[0]))
    for name, v in built:
        p, acc, sp, b = v["parity"], v["accuracy"], v["speed"], v.get("budget")
        budget = f"{b['max_mae_f']:g} / {b['max_err_f']:g} / {b['parity_f']:g}" if b else "ulp checks"
        result = "reference" if b is None else ("pass" if v["passed"] else f"FAIL: {v['reason']}")
        lines.append(
            f"| {name} | {v['size_bytes']:,} | {p['max_abs_err_f']:.3g} ({p['worst_input_c']:.6g}) | {acc['mae_f']:.4f} | "
            f"{acc['max_err_f']:.4f} ({acc['worst_input_c']:g}) | {sp['p50_batch_1_us']:.1f} | "
            f"{sp['values_per_s_large_batch']:,.0f} | {budget} | {result} |")
    for name, v in variants.items():
        if not v.get("built", True):
            lines.append(f"| {name} | - | - | - | - | - | - | - | {v['reason']} |")
    lines += ["", "What each is:", ""]
    lines += [f"- {n}: {VARIANT_NOTES.get(n, '')}" for n in variants]
    lines += ["", "Plots (drawn by `make all` / `python -m pipeline plot`): [error against the formula, per model]"
              "(variants-error.png), [float models' distance from Keras in ulps](variants-ulp.png)."]
    return lines


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Verification report",
        "",
        f"**Result: {'PASSED' if r['passed'] else 'FAILED'}**",
        "",
    ]
    for f in r["failures"]:
        lines.append(f"- FAIL: {f}")
    if r["failures"]:
        lines.append("")
    lines += [
        "## Parity with Keras (the reference)",
        "",
        "Every probe (training inputs, grid, float edge cases, seeded random values) at batch 1 "
        "and tiled to a large batch. Pass: |x - keras| <= atol + rtol * |keras| on every probe.",
        "",
    ]
    any_p = next(iter(r["parity"].values()))
    lo, hi = any_p["range_c"]
    lines += [
        f"The headline: how many float32 steps (ulps) the output is from Keras's at worst, and the "
        f"largest error in degF over the working range {lo:g}..{hi:g} degC.",
        "",
        f"| format | max ulp | max abs err, {lo:g}..{hi:g} degC (degF) | failing probes | result |",
        "|---|---|---|---|---|",
    ]
    for fmt, p in r["parity"].items():
        lines.append(
            f"| {fmt} | {p['max_ulp']:,} | {p['range_max_abs_err']:.3g} | {p['failures']:,} of {p['probes']:,} | "
            f"{'pass' if p['passed'] else 'FAIL'} |"
        )
    lines += [
        "",
        "Details over all probes, including huge inputs (|x| up to ~1e30), where one ulp of the "
        "output is itself huge (2^-23 of it), so the absolute error there can be large:",
        "",
        "| format | max abs err | mean abs err | max rel err | worst input (degC) | atol | rtol | smallest atol that passes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fmt, p in r["parity"].items():
        lines.append(
            f"| {fmt} | {p['max_abs_err']:.3g} | {p['mean_abs_err']:.3g} | "
            f"{p['max_rel_err']:.3g} | {p['worst_input']:.9g} | {p['atol']:g} | {p['rtol']:g} | "
            f"{p['min_atol_to_pass']:.3g} |"
        )
    lines += [
        "",
        "## Accuracy against F = 1.8 C + 32",
        "",
    ]
    any_acc = next(iter(r["accuracy"].values()))
    lines += [
        f"Held-out grid: {any_acc['points']} midpoints over {any_acc['range_c'][0]:g}..{any_acc['range_c'][1]:g} degC "
        "(no training input).",
        "",
        "| format | MAE (degF) | max error (degF) | worst input (degC) | allowed MAE | result |",
        "|---|---|---|---|---|---|",
    ]
    for fmt, a in r["accuracy"].items():
        lines.append(
            f"| {fmt} | {a['mae_f']:.4f} | {a['max_err_f']:.4f} | {a['worst_input_c']:g} | "
            f"{a['max_mae_f']:g} | {'pass' if a['passed'] else 'FAIL'} |"
        )
    lines += render_variants(r.get("variants") or {})
    t = r.get("training") or {}
    if t:
        ls = t["least_squares"]
        lines += ["", "## Training", "", f"Steps: {t['steps']}, final loss {t['final_loss']:.6g}.", ""]
        lines += ["| | w | b | prediction at 100 degC |", "|---|---|---|---|"]
        if len(t["weights"]) == 1:
            w = t["weights"][0]
            lines.append(
                f"| learned | {w['kernel'][0][0]:.6f} | {w['bias'][0]:.6f} | {t['prediction_at_100c']:.4f} |"
            )
        else:
            lines.append(f"| learned ({len(t['weights'])} layers) | - | - | {t['prediction_at_100c']:.4f} |")
        lines.append(f"| closed-form optimum of the data | {ls['w']:.6f} | {ls['b']:.6f} | {ls['prediction_at_100c']:.4f} |")
        lines.append("| exact formula | 1.8 | 32 | 212 |")
    lines += ["", "## Files", ""]
    for name, f in r["files"].items():
        lines.append(f"- {name}: `{f['path']}` (in the build folder) sha256 `{f['sha256']}`")
    lines.append(f"- config sha256 `{r['config_sha256']}`")
    lines += ["", "## Versions", ""]
    lines += [f"- {k} {v}" for k, v in r["versions"].items()]
    return "\n".join(lines) + "\n"
