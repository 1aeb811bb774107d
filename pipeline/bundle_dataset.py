"""The bundle of a dataset-mode model: the same files as the tutorial's, with the model's
signature in the manifest and golden data of its shape. numpy only (no TensorFlow).

The signature (manifest ``signature``) is what the device checks every input against: the
input and output tensors (name, dtype, shape with -1 for the batch), the feature names (C
order), the task and labels, and per feature the **valid** range (refused outside: the
config's ``[runtime]``) and the **observed** range (the training rows' min/max: answered,
but counted, outside it). Golden data: rows the model was verified on, with Keras's outputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from runtime import compat
from runtime import manifest as manifest_mod
from runtime.manifest import FORMAT, sha256_bytes

from . import bundle_model, reference
from .config import canonical_json, config_hash
from .layout import Layout

README = """\
# {name}: model bundle

A {task} model: input {shape} ({n_features} features), output {out_shape}{labels}.
Runs on 64-bit Linux (e.g. Raspberry Pi OS on a Pi 4 or 5) with Python 3.10+.
No TensorFlow, no build step, no internet once installed.

    tar xzf bundle.tar.gz && cd bundle
    python3 -m venv .venv && . .venv/bin/activate
    pip install -r requirements.txt        # onnxruntime and numpy, nothing else
    python -m runtime selfcheck            # hashes, onnxruntime version, golden outputs
    python -m runtime info                 # the signature: features, ranges, labels
    python -m runtime predict --input rows.csv --json

As a service (HTTP on 127.0.0.1:8080; POST /predict {{"inputs": [...]}}, the Open Inference
Protocol v2 under /v2/models/{name}, GET /healthz /info /metrics):

    python -m runtime serve

`python -m runtime --help` lists every command. manifest.json records what this bundle is:
the sha256 of every file, the model's signature, its opset and IR version, the oldest
onnxruntime that loads it, and the config and tool versions that made it.
"""


def _finite_or_none(v: float) -> float | None:
    return None if math.isinf(v) else float(v)


def valid_ranges(cfg: dict[str, Any], features: list[str]) -> tuple[list, list]:
    """Per feature (lo, hi): ``[runtime] valid_min``/``valid_max``, overridden by ``[runtime.valid]``."""
    rt = cfg["runtime"]
    per = rt.get("valid") or {}
    lo = [per.get(f, [rt["valid_min"], rt["valid_max"]])[0] for f in features]
    hi = [per.get(f, [rt["valid_min"], rt["valid_max"]])[1] for f in features]
    return lo, hi


def signature(cfg: dict[str, Any], ref: dict[str, np.ndarray], report: dict[str, Any],
              io_spec: dict[str, Any]) -> dict[str, Any]:
    features = [str(f) for f in ref["feature_names"]]
    labels = [str(v) for v in ref["labels"]] or None
    shape = [int(d) for d in ref["input_shape"]]
    lo, hi = valid_ranges(cfg, features)
    out_shape = [int(d) if isinstance(d, int) else -1 for d in io_spec["output"]["shape"]]
    return {
        "task": report["task"],
        "labels": labels,
        "output_kind": report["output_kind"],
        "input": {"name": io_spec["input"]["name"], "dtype": "float32", "shape": [-1, *shape], "features": features},
        "output": {"name": io_spec["output"]["name"], "dtype": "float32", "shape": [-1, *out_shape[1:]],
                   "names": labels or [str(ref["target_name"])]},
        "valid": {"min": [_finite_or_none(v) for v in lo], "max": [_finite_or_none(v) for v in hi]},
        "observed": {"min": [float(v) for v in ref["observed_min"]], "max": [float(v) for v in ref["observed_max"]]},
    }


def golden_rows(cfg: dict[str, Any], ref: dict[str, np.ndarray], lo: list, hi: list) -> np.ndarray:
    """``golden_count`` probe rows within the valid ranges: the edge rows, then evenly over the
    validation rows, then the training and synthetic rows."""
    x = ref["x"].reshape(len(ref["x"]), -1).astype(np.float64)
    ok = np.all((x >= np.asarray(lo, np.float64)) & (x <= np.asarray(hi, np.float64)), axis=1)
    ok &= np.all(np.isfinite(ref["keras_y"].reshape(len(x), -1)), axis=1)
    n = cfg["runtime"]["golden_count"]
    picked: list[int] = []
    for group in ("edge", "validation", "training", "synthetic"):
        idx = np.flatnonzero(ok & reference.in_group(ref, group))
        room = n - len(picked)
        if room <= 0:
            break
        if idx.size > room:
            idx = idx[np.unique(np.linspace(0, idx.size - 1, room).round().astype(int))]
        picked += idx.tolist()
    return np.asarray(picked, np.int64)


def build_files(cfg: dict[str, Any], layout: Layout, report: dict[str, Any], epoch: int, runtime_files, onnx_spec
                ) -> dict[str, bytes]:
    """Every file of the bundle, by relative path, manifest included."""
    chosen = report.get("bundle") or bundle_model.DEFAULT
    model_bytes = (layout.build / chosen["path"]).read_bytes()
    ref = reference.load(layout.reference)
    io_spec, opset, ir = onnx_spec(model_bytes)
    sig = signature(cfg, ref, report, io_spec)
    idx = golden_rows(cfg, ref, [(-math.inf if v is None else v) for v in sig["valid"]["min"]],
                      [(math.inf if v is None else v) for v in sig["valid"]["max"]])
    budget = chosen["budget"]
    golden_spec: dict[str, Any] = {"file": "golden.json"}
    if budget is None:  # float32: Keras's outputs, held to float32 rounding (verify.onnx's tolerances)
        tol = cfg["verify"]["onnx"]
        golden_spec.update(atol=tol["atol"], rtol=tol["rtol"], labels_equal=sig["task"] == "classification")
    else:
        # A reduced-precision variant: Keras's outputs, held to twice the largest difference
        # verify measured between the variant and Keras (an ARM build's int8 kernels may round
        # a step apart); labels are not required equal (the budget allows some disagreement).
        golden_spec.update(atol=max(2 * chosen["parity"]["max_abs_err"], 1e-6), rtol=0.0, labels_equal=False)
    golden = {"inputs": ref["x"][idx].tolist(), "outputs": ref["keras_y"][idx].tolist()}
    name = model_name(cfg)
    files = {
        "model.onnx": model_bytes,
        "golden.json": (json.dumps(golden) + "\n").encode(),
        "README.md": README.format(
            name=name, task=sig["task"], shape=tuple(sig["input"]["shape"][1:]),
            n_features=len(sig["input"]["features"]), out_shape=tuple(sig["output"]["shape"][1:]),
            labels=f", labels {', '.join(sig['labels'])}" if sig["labels"] else "").encode(),
        **runtime_files,
    }
    manifest = {
        "format": FORMAT,
        "model": {
            "file": "model.onnx",
            "name": name,
            **io_spec,
            "opset": opset,
            "ir_version": ir,
            "min_onnxruntime": compat.oldest_onnxruntime(opset, ir),
            "variant": chosen["model"],
            "chosen_by": chosen["why"],
            "budget": budget,
            "measured": {k: _measured(chosen[k]) for k in ("parity", "accuracy") if k in chosen},
        },
        "signature": sig,
        # The scalar model's range keys, which a runtime that predates signatures reads: unbounded here,
        # the signature's per-feature ranges are the ones that hold.
        "valid_input": {"min_celsius": None, "max_celsius": None},
        "golden": golden_spec,
        "files": {n: sha256_bytes(d) for n, d in sorted(files.items())},
        "config": json.loads(canonical_json(_portable(cfg))),
        "config_sha256": config_hash(_portable(cfg)),
        "data_sha256": json.loads(str(ref["data_sha256"])),
        "verify": {
            "task": report["task"],
            "parity_max_ulp": {f: p["max_ulp"] for f, p in report["parity"].items()},
            "parity_max_abs_err": {f: p["max_abs_err"] for f, p in report["parity"].items()},
            "accuracy": {n: {k: a[k] for k in ("accuracy", "mae", "max_err", "rows") if k in a}
                         for n, a in report["accuracy"].items()},
        },
        "tools": report["versions"],
        "source_date_epoch": epoch,
    }
    files.update(manifest_mod.encode(manifest))
    return files


def _measured(v: dict[str, Any]) -> dict[str, Any]:
    """A measurement without its per-batch detail (the report has it)."""
    return {k: x for k, x in v.items() if k not in ("batches", "confusion")}


def model_name(cfg: dict[str, Any]) -> str:
    """``[bundle] name``, else the name of the folder the data file is in (examples/digits -> digits)."""
    return cfg["bundle"].get("name") or Path(cfg["data"]["file"]).parent.name or "model"


def _portable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config with its absolute paths cut to file names, so the bundle does not depend on
    where the project was checked out (two checkouts build the same bytes)."""

    def cut(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        if isinstance(v, str) and v.startswith("/"):
            path, colon, fn = v.rpartition(":") if ".py:" in v else (v, "", "")
            return Path(path).name + colon + fn
        return v

    return cut(cfg)
