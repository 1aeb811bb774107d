"""Stage 4, bundle: a verified model -> dist/bundle/ and a byte-reproducible dist/bundle.tar.gz.

The bundle holds model.onnx, golden.json (inputs and the Keras outputs for them),
the runtime/ package with its requirements.txt, a short README, and manifest.json
(sha256 of every file, I/O spec, opset/IR, oldest onnxruntime, tolerances, config and
tool versions) with its own sha256 in manifest.json.sha256.

A release is identified by what it holds: the same model, golden data, runtime code,
requirements and config give the same tarball, byte for byte. Its files carry the date
of the newest commit that touched a file the bundle copies from the source (runtime/),
not the checkout's last commit, so a README-only commit changes nothing a device sees;
SOURCE_DATE_EPOCH overrides it. One choice is not reproducible by nature:
``[bundle] model = "auto"`` (``prefer = "speed"``) picks by a timing that verify measured (the manifest's
``model.chosen_by`` says so), so two builds may bundle different variants.

Which model that is, and which bundle a failed verify removes, are this stage's rules,
kept in bundle_model.py: verify applies them and records the choice in its report.

The manifest carries the model's signature (``runtime.signature.Signature``, built here and
serialized by its ``to_dict``): what the device checks every input against, the input and
output tensors, the feature names, the task and labels, and per feature the valid range
(refused outside: ``[runtime]``) and the observed range (the training rows': answered, but
counted, outside it). Golden data: probe rows verified in the working range, with Keras's
outputs.

With a signing key (SIGNING_KEY), ``run`` signs manifest.json and adds manifest.json.sig
beside it, leaving the manifest's bytes as they are (signing.py).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from runtime import compat
from runtime import manifest as manifest_mod
from runtime import trust
from runtime.manifest import FORMAT, sha256_bytes, sha256_file
from runtime.signature import Signature

from . import bundle_model, fsutil, probes, reference, signing
from .config import canonical_json, config_hash
from .errors import ConfigError, OutputError, StageInputError, StateError, VerificationFailed
from .layout import Layout

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = ROOT / "runtime"
# The files' date in the tarball when neither SOURCE_DATE_EPOCH nor git gives one:
# 2026-01-01 00:00:00 UTC (docs/bundle.md).
DEFAULT_EPOCH = 1767225600
BUNDLE_README = """\
# {name}: model bundle

A {task} model: input {shape} ({features}), output {out_shape}{labels}.
Runs on 64-bit Linux (e.g. Raspberry Pi OS on a Pi 4 or 5) with Python 3.10+.
No TensorFlow, no build step, no internet once installed.

    tar xzf bundle.tar.gz && cd bundle
    python3 -m venv .venv && . .venv/bin/activate
    pip install -r requirements.txt        # onnxruntime and numpy, nothing else
    python -m runtime selfcheck            # hashes, onnxruntime version, golden outputs
    python -m runtime info                 # the signature: features, ranges, labels
    {predict}

From any other directory (a service, a cron job), give Python the runtime folder:

    /path/to/bundle/.venv/bin/python /path/to/bundle/runtime selfcheck

As a service (HTTP on 127.0.0.1:8080; POST /predict {body}, the Open Inference Protocol v2
under /v2/models/{name}, GET /healthz /info /metrics):

    python -m runtime serve

As a systemd service: copy systemd/edge-model.socket and systemd/edge-model.service to
/etc/systemd/system/ (do not edit them here: manifest.json hashes them; use
`systemctl edit` drop-ins), create the user edge-model, point EDGE_BUNDLE at this
folder if it is not /opt/edge-model/current, then
`systemctl daemon-reload && systemctl enable --now edge-model.socket edge-model.service`.

`python -m runtime --help` lists every command. manifest.json records what this bundle is:
the sha256 of every file, the model's signature, its opset and IR version, the oldest
onnxruntime that loads it, and the config and tool versions that made it.
"""


def _runtime_sources() -> dict[str, Path]:
    """What the bundle copies from the source tree, by its name in the bundle: the runner
    (runtime/*.py), its requirements.txt and the systemd units (systemd/)."""
    files = {f"runtime/{p.name}": p for p in sorted(RUNTIME_DIR.glob("*.py"))}
    files["requirements.txt"] = RUNTIME_DIR / "requirements.txt"
    files.update({f"systemd/{p.name}": p for p in sorted((RUNTIME_DIR / "systemd").glob("edge-model.*"))})
    return files


def _runtime_files() -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in _runtime_sources().items()}


# Which probe groups the golden rows come from, first to last: the small, sharp groups whole
# (float extremes catch a device that flushes subnormals, overflows or rounds differently at the
# extremes), then evenly over the larger ones. The seeded random rows add nothing the grid lacks.
GOLDEN_GROUPS = ("extremes", "edge", "training", "grid", "validation", "synthetic")


def golden_rows(cfg: dict[str, Any], ref: dict[str, np.ndarray], sig: Signature, extremes: bool) -> np.ndarray:
    """``golden_count`` probe rows within the working range and the valid range, with finite outputs;
    with ``extremes``, the float extremes within the valid range too (a float32 model's golden
    data: its tolerance holds at any magnitude; a variant's budget holds over the working range)."""
    x = ref["x"].reshape(len(ref["x"]), -1).astype(np.float64)
    ok = np.all((x >= sig.valid_min) & (x <= sig.valid_max), axis=1)
    ok &= np.all(np.isfinite(ref["keras_y"].reshape(len(x), -1)), axis=1)
    ok &= reference.in_range(ref) | (reference.in_group(ref, "extremes") & extremes)
    return _pick(cfg, ref, ok)


def golden_tensor_rows(cfg: dict[str, Any], ref: dict[str, np.ndarray], sig, extremes: bool) -> np.ndarray:
    """``golden_rows`` for a model of several inputs or outputs (reference.tensor_arrays): rows
    valid, and within the working range, in every input, with finite values in every output."""
    ok = np.ones(len(ref["group"]), bool)
    for spec in sig.inputs:
        x = ref[f"x/{spec.name}"].reshape(len(ok), -1).astype(np.float64)
        ok &= np.all((x >= spec.valid_min) & (x <= spec.valid_max), axis=1)
    for spec in sig.outputs:
        ok &= np.all(np.isfinite(ref[f"keras_y/{spec.name}"].reshape(len(ok), -1)), axis=1)
    view = reference.output_view(ref, sig.outputs[0].name)
    ok &= reference.in_range(view) | (reference.in_group(view, "extremes") & extremes)
    return _pick(cfg, view, ok)


def _pick(cfg: dict[str, Any], ref: dict[str, np.ndarray], ok: np.ndarray) -> np.ndarray:
    """``golden_count`` of the rows ``ok`` holds, group by group in GOLDEN_GROUPS' order."""
    n = cfg["runtime"]["golden_count"]
    picked: list[int] = []
    for group in GOLDEN_GROUPS:
        idx = np.flatnonzero(ok & reference.in_group(ref, group))
        room = n - len(picked)
        if room <= 0:
            break
        if idx.size > room:
            idx = idx[np.unique(np.linspace(0, idx.size - 1, room).round().astype(int))]
        picked += idx.tolist()
    return np.asarray(picked, np.int64)


def check_report(layout: Layout, cfg: dict[str, Any]) -> dict[str, Any]:
    """The verify report, if it passed and speaks for the model files that are there now."""
    path = layout.report_json
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise StageInputError(path, "not found", "run `make verify` first") from None
    except (OSError, ValueError) as e:
        raise StageInputError(path, f"unreadable: {e}", "re-run `make verify`") from None
    if not report.get("passed"):
        raise VerificationFailed(f"{path}: verification failed, refusing to bundle ({'; '.join(report.get('failures', []))})")
    if report.get("config_sha256") != config_hash(cfg):
        raise StateError(f"{path}: made with another config than the current one; re-run `make verify`")
    for f in report.get("files", {}).values():
        p = layout.build / f["path"]
        actual = sha256_file(p) if p.is_file() else "(missing)"
        if actual != f["sha256"]:
            raise StateError(
                f"{p}: changed since it was verified (sha256 {actual}, verified {f['sha256']}); re-run `make verify`"
            )
    return report


def signature(cfg: dict[str, Any], ref: dict[str, np.ndarray], report: dict[str, Any],
              io_spec: dict[str, Any]) -> Signature:
    """The model's signature, from the data (reference.npz), the config and the exported model."""
    features = [str(f) for f in ref["feature_names"]]
    labels = [str(v) for v in ref["labels"]] or None
    lo, hi = probes.valid_ranges(cfg, features)
    out_shape = [int(d) if isinstance(d, int) else -1 for d in io_spec["output"]["shape"]]
    try:
        return Signature.build(
            model_name=cfg["bundle"]["name"], task=report["task"], output_kind=report["output_kind"], labels=labels,
            input_name=io_spec["input"]["name"], output_name=io_spec["output"]["name"],
            shape=tuple(int(d) for d in ref["input_shape"]), output_shape=tuple(out_shape[1:]), features=features,
            output_names=labels or [str(t) for t in ref["target_names"]], valid_min=lo.tolist(), valid_max=hi.tolist(),
            observed_min=ref["observed_min"].tolist(), observed_max=ref["observed_max"].tolist())
    except ValueError as e:
        raise StateError(f"model.onnx: its signature does not hold ({e}); re-run `make export`") from None


def tensor_signature(cfg: dict[str, Any], ref: dict[str, np.ndarray], report: dict[str, Any]):
    """The signature of a model of several inputs or outputs: every tensor, by name."""
    from runtime.signature import MultiSignature

    inputs = []
    for name in (str(n) for n in ref["input_names"]):
        features = [str(f) for f in ref[f"feature_names/{name}"]]
        lo, hi = probes.valid_ranges(cfg, features)
        inputs.append({"name": name, "shape": tuple(int(d) for d in ref[f"input_shape/{name}"]), "features": features,
                       "valid_min": lo.tolist(), "valid_max": hi.tolist(),
                       "observed_min": ref[f"observed_min/{name}"].tolist(),
                       "observed_max": ref[f"observed_max/{name}"].tolist()})
    outputs = []
    for name in (str(n) for n in ref["output_names"]):  # the model's order (the report's JSON sorts its keys)
        section = report["outputs"][name]
        labels = [str(v) for v in ref[f"labels/{name}"]] or None
        names = labels or [str(t) for t in ref[f"target_names/{name}"]]
        outputs.append({"name": name, "shape": (len(names),), "names": names, "task": section["task"],
                        "output_kind": section["output_kind"], "labels": labels})
    try:
        return MultiSignature.build(model_name=cfg["bundle"]["name"], inputs=inputs, outputs=outputs)
    except ValueError as e:
        raise StateError(f"model.onnx: its signature does not hold ({e}); re-run `make export`") from None


def build_tensor_files(cfg: dict[str, Any], layout: Layout, report: dict[str, Any], chosen: dict[str, Any],
                       model_bytes: bytes, ref: dict[str, np.ndarray], epoch: int) -> dict[str, bytes]:
    """``build_files`` for a model of several inputs or outputs: the signature lists every tensor,
    the golden data holds each input's rows and each output's Keras values by name, and what
    verify measured is recorded per output."""
    sig = tensor_signature(cfg, ref, report)
    sig_dict = sig.to_dict()
    idx = golden_tensor_rows(cfg, ref, sig, extremes=chosen["budget"] is None)
    golden_spec = _golden_spec(cfg, chosen, any(o.task == "classification" for o in sig.outputs),
                               lambda: max(p["range"]["max_abs_err"] for p in chosen["parity"].values()))
    golden = {"inputs": {i.name: ref[f"x/{i.name}"][idx].tolist() for i in sig.inputs},
              "outputs": {o.name: ref[f"keras_y/{o.name}"][idx].tolist() for o in sig.outputs}}
    name = cfg["bundle"]["name"]
    io_spec, opset, ir = _onnx_spec(model_bytes)
    inputs = ", ".join(f"{i.name} {tuple(i.shape)}" for i in sig.inputs)
    files = {
        "model.onnx": model_bytes,
        "golden.json": (json.dumps(golden) + "\n").encode(),
        "README.md": BUNDLE_README.format(
            name=name, task=f"{len(sig.inputs)}-input, {len(sig.outputs)}-output", shape=inputs,
            features="each bound by name", labels="",
            out_shape=", ".join(f"{o.name} ({o.task}: {', '.join(o.labels or o.names or [])})" for o in sig.outputs),
            predict="python -m runtime predict --input rows.npz --json   # one array per input, by name",
            body='{"inputs": {"<input name>": [...], ...}}').encode(),
        **_runtime_files(),
    }
    measured = {k: {o: _measured(v) for o, v in chosen[k].items()} for k in ("parity", "accuracy") if k in chosen}
    verify = {"task": "tensors", "outputs": {o: _figures(r) for o, r in report["outputs"].items()}}
    files.update(_manifest(cfg, ref, report, chosen, files, io_spec, opset, ir, measured, sig_dict,
                           manifest_mod.legacy_valid_input(None, None), golden_spec, verify, epoch))
    return files


def _golden_spec(cfg: dict[str, Any], chosen: dict[str, Any], classification: bool, measured) -> dict[str, Any]:
    """golden.json's entry in the manifest: its tolerances for the chosen model (``measured()``:
    the largest difference verify measured between a variant and Keras over the working range)."""
    spec: dict[str, Any] = {"file": "golden.json"}
    budget = chosen["budget"]
    if budget is None:  # float32: Keras's outputs, held to float32 rounding (verify.onnx's tolerances)
        tol = cfg["verify"]["onnx"]
        spec.update(atol=tol["atol"], rtol=tol["rtol"], labels_equal=classification)
    else:
        # A reduced-precision variant: Keras's outputs, held to its parity budget if it has one,
        # else to twice the largest difference verify measured between it and Keras over the
        # working range (an ARM build's int8 or fp16 kernels may round a step apart and still
        # hold what was verified); labels are not required equal (the budget allows some
        # disagreement).
        atol = budget["parity"] if budget.get("parity") is not None else max(2 * measured(), 1e-6)
        spec.update(atol=atol, rtol=0.0, labels_equal=False)
    return spec


def _figures(r: dict[str, Any]) -> dict[str, Any]:
    """What verify measured, as its report (or one output's section of it) leads with it."""
    return {
        "task": r["task"],
        "parity_max_ulp": {f: p["max_ulp"] for f, p in r["parity"].items()},
        "parity_scale_ulp": {f: p["range"]["scale_ulp"] for f, p in r["parity"].items()},
        "parity_snr_db": {f: p["range"]["snr_db"] for f, p in r["parity"].items()},
        "parity_range_max_abs_err": {f: p["range"]["max_abs_err"] for f, p in r["parity"].items()},
        "accuracy": {n: {k: a[k] for k in ("accuracy", "mae", "max_err", "rows") if k in a}
                     for n, a in r["accuracy"].items()},
    }


def _manifest(cfg: dict[str, Any], ref: dict[str, np.ndarray], report: dict[str, Any], chosen: dict[str, Any],
              files: dict[str, bytes], io_spec: dict[str, Any], opset: int, ir: int, measured: dict[str, Any],
              sig_dict: dict[str, Any], valid_input: dict[str, Any], golden_spec: dict[str, Any],
              verify: dict[str, Any], epoch: int) -> dict[str, bytes]:
    """manifest.json (and its .sha256) for the bundle's ``files``."""
    manifest = {
        "format": FORMAT,
        "model": {
            "file": "model.onnx",
            "name": cfg["bundle"]["name"],
            **io_spec,
            "opset": opset,
            "ir_version": ir,
            "min_onnxruntime": compat.oldest_onnxruntime(opset, ir),
            "variant": chosen["model"],
            "chosen_by": chosen["why"],
            "budget": chosen["budget"],
            "measured": measured,
        },
        "signature": sig_dict,
        "valid_input": valid_input,
        "golden": golden_spec,
        "files": {n: sha256_bytes(d) for n, d in sorted(files.items())},
        "config": json.loads(canonical_json(_portable(cfg))),
        "config_sha256": config_hash(_portable(cfg)),
        "data_sha256": json.loads(str(ref["data_sha256"])),
        "verify": verify,
        "tools": report["versions"],
        "source_date_epoch": epoch,  # the files' date in the tarball
    }
    return manifest_mod.encode(manifest)


def build_files(cfg: dict[str, Any], layout: Layout, report: dict[str, Any], epoch: int = DEFAULT_EPOCH
                ) -> dict[str, bytes]:
    """Every file of the bundle, by relative path, manifest included."""
    chosen = report.get("bundle") or bundle_model.DEFAULT
    model_bytes = (layout.build / chosen["path"]).read_bytes()
    ref = reference.load(layout.reference)
    if report.get("task") == "tensors":
        return build_tensor_files(cfg, layout, report, chosen, model_bytes, ref, epoch)
    spec, opset, ir = _onnx_spec(model_bytes)
    io_spec = {"input": spec["inputs"][0], "output": spec["outputs"][0]}
    sig = signature(cfg, ref, report, io_spec)
    sig_dict = sig.to_dict()
    idx = golden_rows(cfg, ref, sig, extremes=chosen["budget"] is None)
    golden_spec = _golden_spec(cfg, chosen, sig.task == "classification",
                               lambda: chosen["parity"]["range"]["max_abs_err"])
    golden = {"inputs": ref["x"][idx].tolist(), "outputs": ref["keras_y"][idx].tolist()}
    name = cfg["bundle"]["name"]
    shape = tuple(sig_dict["input"]["shape"][1:])
    one = sig.size == 1 and math.prod(sig.output_shape) == 1
    files = {
        "model.onnx": model_bytes,
        "golden.json": (json.dumps(golden) + "\n").encode(),
        "README.md": BUNDLE_README.format(
            name=name, task=sig.task, shape=shape,
            features=", ".join(sig.features) if sig.size <= 4 else f"{sig.size} features",
            out_shape=tuple(sig_dict["output"]["shape"][1:]),
            labels=f", labels {', '.join(sig.labels)}" if sig.labels else "",
            predict=(f"python -m runtime predict 1 2.5       # {sig.features[0]} -> {sig.output_names[0]}" if one
                     else "python -m runtime predict --input rows.csv --json"),
            body=(f'{{"{sig.features[0]}": [...]}} or {{"inputs": [...]}}' if one else '{"inputs": [...]}'),
        ).encode(),
        **_runtime_files(),
    }
    lo, hi = sig_dict["valid"]["min"], sig_dict["valid"]["max"]
    # The one-value model's range keys, which a runtime that predates signatures reads: its one
    # feature's valid range; unbounded for any other model (the signature's ranges hold).
    valid_input = manifest_mod.legacy_valid_input(lo[0] if one else None, hi[0] if one else None)
    measured = {k: _measured(chosen[k]) for k in ("parity", "accuracy") if k in chosen}
    files.update(_manifest(cfg, ref, report, chosen, files, io_spec, opset, ir, measured, sig_dict, valid_input,
                           golden_spec, _figures(report), epoch))
    return files


def _measured(v: dict[str, Any]) -> dict[str, Any]:
    """A measurement without its per-batch and per-group detail (the report has it)."""
    return {k: x for k, x in v.items() if k not in ("batches", "groups", "confusion", "recall")}


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


def _onnx_spec(model_bytes: bytes) -> tuple[dict[str, Any], int, int]:
    import onnx

    from export.onnx_export import describe

    try:
        d = describe(onnx.load_from_string(model_bytes))
    except Exception as e:  # protobuf's DecodeError and friends
        raise StateError(f"model.onnx: not a readable ONNX model ({e}); re-run `make export`") from None
    return {"inputs": d["inputs"], "outputs": d["outputs"]}, d["opset_imports"]["ai.onnx"], d["ir_version"]


def source_date_epoch() -> int:
    """The date the bundle's files carry, by the reproducible-builds convention.

    ``SOURCE_DATE_EPOCH`` when set; else the time of the newest commit that touched a file
    the bundle copies from the source (``_runtime_sources``); else DEFAULT_EPOCH (no git,
    or none of them committed). Commits elsewhere (docs, tests, the pipeline) leave it,
    and so the release's sha256, unchanged; an unpacked bundle's files are dated when
    their source was, not 1 January 1970.
    """
    given = os.environ.get("SOURCE_DATE_EPOCH")
    if given is not None:
        if not given.strip().isdigit():
            raise ConfigError(None, "SOURCE_DATE_EPOCH", f"expected a whole number of seconds since 1970, got {given!r}")
        return int(given)
    paths = [str(p.relative_to(ROOT)) for p in _runtime_sources().values()]
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct", "--", *paths],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):  # no git here
        return DEFAULT_EPOCH
    out = r.stdout.strip()
    return int(out) if r.returncode == 0 and out.isdigit() else DEFAULT_EPOCH


def tarball(files: dict[str, bytes], top: str = "bundle", mtime: int = DEFAULT_EPOCH) -> bytes:
    """A gzipped tar of ``files`` under ``top/``: sorted, dated ``mtime``, no owners or names that vary."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(top, n).parent) for n in files} | {top})
        entries = [(d, None) for d in dirs] + [(f"{top}/{n}", files[n]) for n in sorted(files)]
        for name, data in sorted(entries):
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def write_folder(files: dict[str, bytes], dest: Path) -> None:
    """Write ``files`` into a fresh folder beside ``dest``, then swap it in for ``dest``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=fsutil.temp_prefix(dest.name), dir=dest.parent))
    except OSError as e:
        raise OutputError(e.filename or dest, e.strerror or str(e)) from None
    try:
        for name, data in files.items():
            fsutil.write_bytes(tmp / name, data)
        try:
            tmp.chmod(0o755)
            old = None
            if dest.exists():
                old = Path(tempfile.mkdtemp(prefix=fsutil.temp_prefix(dest.name + ".old"), dir=dest.parent))
                dest.replace(old / dest.name)
            tmp.replace(dest)
        except OSError as e:
            raise OutputError(dest, e.strerror or str(e)) from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(cfg: dict[str, Any], layout: Layout, key: signing.SigningKey | None = None) -> dict[str, Any]:
    """Build the bundle's files, sign the manifest with ``key`` (verified before anything is
    written; None: unsigned), then write DIST/bundle/ and the tarball, and record in
    BUILD/signing.txt how it was signed."""
    report = check_report(layout, cfg)
    epoch = source_date_epoch()
    files = build_files(cfg, layout, report, epoch)
    if key is not None:  # beside the manifest, not in it: the signed bytes are the unsigned build's
        files[trust.SIGNATURE] = signing.sign(key, files[manifest_mod.MANIFEST])
    blob = tarball(files, mtime=epoch)
    signing.record(layout.build, key)  # before the bundle, so that make finds the bundle newer
    write_folder(files, layout.bundle_dir)
    fsutil.write_bytes(layout.tarball, blob)
    return {
        "tarball": str(layout.tarball),
        "folder": str(layout.bundle_dir),
        "bytes": len(blob),
        "sha256": sha256_bytes(blob),
        "files": len(files),
        "model": (report.get("bundle") or bundle_model.DEFAULT)["model"],
        "signed_by": key.public.name if key is not None else None,
    }
