"""Stage 3, verify: ONNX (onnxruntime) and TFLite (LiteRT) against the Keras reference and the formula.

Reads build/model.onnx, build/model.tflite and build/reference.npz (the probe inputs and
Keras's outputs for them, written by export). Writes build/verify/report.json and
report.md whether it passes or not; a failure exits non-zero with one line naming the
format, the worst input and the error, and removes any stale bundle from dist/.
"""

from __future__ import annotations

import io
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.manifest import sha256_file

from . import fsutil, probes
from .config import config_hash
from .errors import StageInputError, VerificationFailed
from .runners import OnnxRunner, Runner, TFLiteRunner

FORMATS = ("onnx", "tflite")


@dataclass
class Parity:
    """How one format's outputs compare with the reference: ``bool(p)`` is the verdict."""

    passed: bool
    probes: int
    failures: int
    max_ulp: int  # float32 values between output and reference, at worst: the rounding headline
    max_abs_err: float
    mean_abs_err: float
    max_rel_err: float
    mean_rel_err: float
    worst_input: float  # the probe furthest beyond (or closest to) its allowed error
    worst_abs_err: float
    worst_output: float
    worst_reference: float
    atol: float
    rtol: float
    min_atol_to_pass: float  # the smallest atol (with this rtol) that would have passed

    def __bool__(self) -> bool:
        return self.passed


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 steps apart ``a`` and ``b`` are, elementwise (0 when equal; -0.0 equals 0.0).

    Maps each float32's bits to an integer that counts up through the floats in order,
    so the difference counts the representable values between them at any magnitude.
    """

    def ordinal(x: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(ordinal(a) - ordinal(b))


def compare(x: np.ndarray, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> Parity:
    """Elementwise |got - ref| <= atol + rtol * |ref|; equal infinities count as equal, NaN never."""
    ref64 = ref.astype(np.float64)
    got64 = got.astype(np.float64)
    same = ref64 == got64  # also true for equal infinities
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(same, 0.0, np.abs(got64 - ref64))
    abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
    scale = np.where(np.isfinite(ref64), np.abs(ref64), 0.0)
    rel_err = abs_err / np.maximum(scale, np.finfo(np.float32).tiny)
    allowed = atol + rtol * scale
    with np.errstate(invalid="ignore"):
        excess = abs_err - allowed
    worst = int(np.argmax(excess))
    need = float(np.max(abs_err - rtol * scale))
    return Parity(
        passed=bool(np.all(abs_err <= allowed)),
        probes=int(x.size),
        failures=int(np.count_nonzero(abs_err > allowed)),
        max_ulp=int(ulp_distance(got, ref).max()),
        max_abs_err=float(abs_err.max()),
        mean_abs_err=float(abs_err.mean()),
        max_rel_err=float(rel_err.max()),
        mean_rel_err=float(rel_err.mean()),
        worst_input=float(x[worst]),
        worst_abs_err=float(abs_err[worst]),
        worst_output=float(got[worst]),
        worst_reference=float(ref[worst]),
        atol=atol,
        rtol=rtol,
        min_atol_to_pass=max(need, 0.0),
    )


def accuracy(x: np.ndarray, y: np.ndarray, max_mae_f: float) -> dict[str, Any]:
    """MAE and max error in degF of outputs ``y`` against F = 1.8 C + 32."""
    err = np.abs(y.astype(np.float64) - probes.fahrenheit(x))
    worst = int(np.argmax(err))
    mae = float(err.mean())
    return {
        "mae_f": mae,
        "max_err_f": float(err[worst]),
        "worst_input_c": float(x[worst]),
        "points": int(x.size),
        "range_c": [float(x.min()), float(x.max())],
        "max_mae_f": max_mae_f,
        "passed": bool(mae <= max_mae_f),
    }


def load_reference(build: Path) -> dict[str, np.ndarray]:
    path = build / "reference.npz"
    if not path.is_file():
        raise StageInputError(path, "not found", "run `make export` or `python -m pipeline export` first")
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # a damaged zip raises several kinds
        raise StageInputError(path, f"unreadable: {e}", "re-run export") from None


def open_runner(fmt: str, path: Path) -> Runner:
    if not path.is_file():
        raise StageInputError(path, "not found", "run `make export` or `python -m pipeline export` first")
    try:
        return OnnxRunner(path) if fmt == "onnx" else TFLiteRunner(path)
    except ImportError:
        raise  # the runtime itself is missing (not the venv): main() names the package
    except Exception as e:  # the runtimes raise their own types for bad files
        raise VerificationFailed(f"verify: {fmt}: {path} does not load: {e}") from None


def check_format(fmt: str, runner: Runner, ref: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, Any]:
    tol = cfg["verify"][fmt]
    x, keras_y = ref["x"], ref["keras_y"]
    large = cfg["verify"]["large_batch"]
    reps = -(-large // x.size)
    x_large = np.tile(x, reps)[:large]
    y_large = runner.run(x_large)
    runs = {  # name: (inputs, the format's outputs, Keras's outputs)
        "batch_1": (x, runner.run_each(x), keras_y),
        f"batch_{large}": (x_large, y_large, np.tile(keras_y, reps)[:large]),
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
    lo, hi = input_range(cfg)
    in_range = (inputs >= lo) & (inputs <= hi)
    err = np.abs(got[in_range].astype(np.float64) - want[in_range].astype(np.float64))
    result["range_c"] = [lo, hi]
    result["range_max_abs_err"] = float(err.max()) if err.size else 0.0
    return result


def check_variant(name: str, runner: Runner, ref: dict[str, np.ndarray], cfg: dict[str, Any],
                  budget: dict[str, float] | None, size: int, keep: dict[str, np.ndarray]) -> dict[str, Any]:
    """One model against its budget (degF): parity with Keras over the working range (batch 1
    and the large batch), accuracy against the formula at batch 1, speed, size."""
    import time

    x, keras_y = ref["x"], ref["keras_y"]
    lo, hi = input_range(cfg)
    large = cfg["verify"]["large_batch"]
    reps = -(-large // x.size)
    x_large, keras_large = np.tile(x, reps)[:large], np.tile(keras_y, reps)[:large]
    t = time.perf_counter()
    y_large = runner.run(x_large)
    large_s = time.perf_counter() - t
    parity = {}
    y1 = runner.run_each(x)
    keep[name] = y1[grid_mask(ref)]  # the plots' data (verify/variants.npz)
    for label, (xs, ys, ks) in {"batch_1": (x, y1, keras_y),
                                f"batch_{large}": (x_large, y_large, keras_large)}.items():
        sel = (xs >= lo) & (xs <= hi)
        err = np.abs(ys[sel].astype(np.float64) - ks[sel].astype(np.float64))
        err = np.where(np.isnan(err), np.inf, err)
        worst = int(np.argmax(err))
        parity[label] = {"max_abs_err_f": float(err[worst]), "worst_input_c": float(xs[sel][worst])}
    worst_batch = max(parity, key=lambda k: parity[k]["max_abs_err_f"])
    acc_x = ref["accuracy_x"]
    acc = accuracy(acc_x, runner.run_each(acc_x), budget["max_mae_f"] if budget else cfg["verify"]["max_mae_f"])
    one = np.float32([20.0])
    for _ in range(50):  # warm up: first calls pay for allocations and caches
        runner.run(one)
    times = []
    for _ in range(500):  # batch-1 latency in its own runtime, Python call included
        t = time.perf_counter()
        runner.run(one)
        times.append(time.perf_counter() - t)
    out = {
        "size_bytes": size,
        "parity": {"range_c": [lo, hi], "max_abs_err_f": parity[worst_batch]["max_abs_err_f"],
                   "worst_input_c": parity[worst_batch]["worst_input_c"], "worst_batch": worst_batch, **parity},
        "accuracy": {k: acc[k] for k in ("mae_f", "max_err_f", "worst_input_c", "points", "range_c")},
        "speed": {"p50_batch_1_us": float(np.median(times) * 1e6), "values_per_s_large_batch": large / large_s},
        "budget": budget,
    }
    if budget is not None:
        reasons = []
        if out["parity"]["max_abs_err_f"] > budget["parity_f"]:
            p = out["parity"]
            reasons.append(f"parity {p['max_abs_err_f']:.4g} degF > {budget['parity_f']:g} "
                           f"(at {p['worst_input_c']:.6g} degC, {p['worst_batch'].replace('_', ' ')})")
        if acc["mae_f"] > budget["max_mae_f"]:
            reasons.append(f"MAE {acc['mae_f']:.4g} degF > {budget['max_mae_f']:g}")
        if acc["max_err_f"] > budget["max_err_f"]:
            reasons.append(f"max error {acc['max_err_f']:.4g} degF > {budget['max_err_f']:g} "
                           f"(at {acc['worst_input_c']:.6g} degC)")
        out["passed"] = not reasons
        out["reason"] = "; ".join(reasons)
    return out


def grid_mask(ref: dict[str, np.ndarray]) -> np.ndarray:
    return ref["group"] == list(ref["group_names"]).index("grid")


def check_variants(cfg: dict[str, Any], build: Path, ref: dict[str, np.ndarray], runners: dict[str, Runner],
                   paths: dict[str, Path]) -> dict[str, Any]:
    """Every model: the float32 ones (no budget: their checks are the ulp-level ones above) and
    each variant in build/variants/index.json against its budget; 'not built' ones with the reason."""
    import json

    from export import variants as V

    index_path = build / "variants" / "index.json"
    try:
        index = json.loads(index_path.read_text())["variants"]
    except (OSError, ValueError, KeyError):
        raise StageInputError(index_path, "not found or unreadable", "run `make export` first") from None
    keep: dict[str, np.ndarray] = {}
    out = {f"{fmt}-fp32": check_variant(f"{fmt}-fp32", runners[fmt], ref, cfg, None, paths[fmt].stat().st_size, keep)
           for fmt in FORMATS}
    for name, entry in index.items():
        budget = cfg["variants"].get(name)
        if budget is None:
            continue  # built under an older config; make reruns export
        if not entry["built"]:
            out[name] = {"built": False, "passed": False, "reason": f"not built: {entry['reason']}", "budget": budget}
            continue
        path = build / "variants" / entry["file"]
        runner = open_runner(V.fmt(name), path)
        out[name] = {"built": True, **check_variant(name, runner, ref, cfg, budget, path.stat().st_size, keep)}
    sel = grid_mask(ref)
    buf = io.BytesIO()
    np.savez(buf, x=ref["x"][sel], keras=ref["keras_y"][sel], **keep)
    fsutil.write_bytes(build / "verify" / "variants.npz", buf.getvalue())
    return out


AUTO_TIE = 1.10  # batch-1 latencies within 10 % of the fastest count as a tie (timing noise)


def choose_bundle_model(cfg: dict[str, Any], variants: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The model the bundle ships (bundle.model), and a failure line if it cannot be that one."""
    want = cfg["bundle"]["model"]
    ok = {n: v for n, v in variants.items() if n.startswith("onnx-") and v.get("parity")
          and (v.get("budget") is None or v["passed"])}
    if want == "auto":
        fastest = min(v["speed"]["p50_batch_1_us"] for v in ok.values())
        ties = sorted(n for n, v in ok.items() if v["speed"]["p50_batch_1_us"] <= fastest * AUTO_TIE)
        name = min(ties, key=lambda n: (ok[n]["size_bytes"], n))
        why = (f"auto: among the ONNX models within budget ({', '.join(sorted(ok))}), the fastest at batch 1 "
               f"({fastest:.2f} us), ties within {AUTO_TIE - 1:.0%} ({', '.join(ties)}) broken by the smaller file")
    elif want in ok:
        name, why = want, "bundle.model"
    else:
        v = variants.get(want, {})
        reason = v.get("reason") or "not verified"
        return None, (f"bundle.model {want}: {reason}; choose another model or change its budget "
                      f"([variants.{want}])")
    v = ok[name]
    return {"model": name, "why": why, "path": "model.onnx" if name == "onnx-fp32" else f"variants/{name}.onnx",
            "budget": v.get("budget"), "parity": v["parity"], "accuracy": v["accuracy"], "speed": v["speed"],
            "size_bytes": v["size_bytes"]}, ""


def input_range(cfg: dict[str, Any]) -> tuple[float, float]:
    """The working range: the probe grid's span, within the valid input range."""
    v, rt = cfg["verify"], cfg["runtime"]
    return max(v["grid_min"], rt["valid_min_celsius"]), min(v["grid_max"], rt["valid_max_celsius"])


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


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run(cfg: dict[str, Any], build: Path, dist: Path | None = None) -> dict[str, Any]:
    """Verify, write the report, and raise VerificationFailed (after writing it) on any breach."""
    build = Path(build)
    ref = load_reference(build)
    paths = {"onnx": build / "model.onnx", "tflite": build / "model.tflite"}
    runners = {fmt: open_runner(fmt, paths[fmt]) for fmt in FORMATS}
    max_mae = cfg["verify"]["max_mae_f"]
    acc_x = ref["accuracy_x"]
    parity = {fmt: check_format(fmt, runners[fmt], ref, cfg) for fmt in FORMATS}
    acc = {"keras": accuracy(acc_x, ref["keras_accuracy_y"], max_mae)}
    for fmt in FORMATS:
        acc[fmt] = accuracy(acc_x, runners[fmt].run(acc_x), max_mae)

    variants = check_variants(cfg, build, ref, runners, paths)
    failures = [parity_failure(fmt, p) for fmt, p in parity.items() if not p["passed"]]
    chosen, problem = choose_bundle_model(cfg, variants)
    failures += [accuracy_failure(fmt, a) for fmt, a in acc.items() if not a["passed"]]
    failures += [problem] if problem else []
    history = _read_history(build)
    files = {name: {"path": p.name, "sha256": sha256_file(p)} for name, p in paths.items()}
    if chosen and chosen["model"] != "onnx-fp32":
        files["bundle_model"] = {"path": chosen["path"], "sha256": sha256_file(build / chosen["path"])}
    report = {
        "passed": not failures,
        "failures": failures,
        "parity": parity,
        "accuracy": acc,
        "variants": variants,
        "training": history,
        "bundle": chosen,
        # Paths relative to the build folder, so a report still speaks for a copied build.
        "files": files,
        "keras_sha256": str(ref["keras_sha256"]),
        "config_sha256": config_hash(cfg),
        "versions": versions(),
    }
    fsutil.write_json(build / "verify" / "report.json", report)
    fsutil.write_text(build / "verify" / "report.md", render_markdown(report))
    if failures:
        removed = remove_stale_bundle(dist) if dist else []
        note = f"; removed stale {', '.join(removed)}" if removed else ""
        summary = f"verify failed: {len(failures)} check(s); report {build / 'verify' / 'report.md'}{note}"
        raise VerificationFailed("\n".join([f"verify: {f}" for f in failures] + [summary]))
    return report


def _read_history(build: Path) -> dict[str, Any]:
    import json

    try:
        h = json.loads((build / "train" / "history.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: h[k] for k in ("steps", "final_loss", "weights", "prediction_at_100c", "least_squares") if k in h}


def remove_stale_bundle(dist: Path) -> list[str]:
    import shutil

    removed = []
    for p in (Path(dist) / "bundle.tar.gz", Path(dist) / "bundle"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p))
        elif p.exists():
            p.unlink()
            removed.append(str(p))
    return removed


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
