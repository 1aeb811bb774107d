"""Read a bundle's manifest and check every file against it. Stdlib only.

``manifest.json`` lists the sha256 of every other file in the bundle; its own sha256 is
in ``manifest.json.sha256`` beside it. Nothing is handed to onnxruntime before its
hash has been checked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import BundleError

MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
FORMAT = "edge-bundle/1"
_NUM = (int, float)
# What the runner reads from a manifest, and its type (checked once, at load).
REQUIRED = (
    ("model.file", str), ("model.opset", int), ("model.ir_version", int), ("model.min_onnxruntime", str),
    ("golden.file", str), ("golden.atol", _NUM), ("golden.rtol", _NUM), ("files", dict),
)
# Required of a bundle without a signature (the tutorial's before signatures): its one
# input and output and its valid Celsius range. A signature says all of that itself.
REQUIRED_WITHOUT_SIGNATURE = (
    ("model.input.name", str), ("model.output.name", str),
    ("valid_input.min_celsius", (*_NUM, type(None))), ("valid_input.max_celsius", (*_NUM, type(None))),
)


def legacy_valid_input(lo: float | None, hi: float | None) -> dict[str, float | None]:
    """The manifest's ``valid_input`` table, which a runtime from before signatures reads (the
    range of its one input; None: unbounded). The build side writes it from the signature."""
    return {"min_celsius": lo, "max_celsius": hi}


# Optional, checked when present.
OPTIONAL = (("model.name", str), ("signature", dict), ("golden.labels_equal", bool))
TASKS = ("regression", "classification")
TUTORIAL_NAME = "celsius-to-fahrenheit"  # the model name of a bundle whose manifest has none
OUTPUT_KINDS = ("values", "logits", "probabilities")


try:  # CPython's own sha256: unlike hashlib's OpenSSL, costs no ~4 MB of RSS at start-up
    from _sha256 import sha256 as _sha256  # Python 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _sha256  # Python 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256


HOME = Path(__file__).resolve().parent.parent  # the folder this runtime/ sits in


def locate(bundle: str | Path | None = None) -> Path:
    """The bundle folder to use: ``bundle`` when given, else the folder this runtime/ sits in
    (an unpacked bundle), else that folder's dist/bundle (a checkout after `make all`).

    Raises BundleError when the folder holds no manifest, naming every place looked.
    """
    if bundle is not None:
        bundle = Path(bundle)
        if not (bundle / MANIFEST).exists():
            raise BundleError(f"{bundle} | no {MANIFEST}: expected an unpacked bundle "
                              "(dist/bundle, or pass --bundle DIR)")
        return bundle
    checkout = HOME / "dist" / "bundle"
    for candidate in (HOME, checkout):
        if (candidate / MANIFEST).exists():
            return candidate
    raise BundleError(f"{HOME} | no {MANIFEST} here nor in {checkout}: expected an unpacked bundle "
                      "(or pass --bundle DIR)")


def sha256_bytes(data: bytes) -> str:
    return _sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (wheels and tarballs need not fit in memory)."""
    h = _sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode(manifest: dict[str, Any]) -> dict[str, bytes]:
    """The two files that carry ``manifest``: manifest.json and manifest.json.sha256 (what load reads)."""
    data = (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    return {MANIFEST: data, MANIFEST_SUM: f"{sha256_bytes(data)}  {MANIFEST}\n".encode()}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path.name} | missing from bundle {path.parent}") from None
    except OSError as e:
        raise BundleError(f"{path.name} | cannot read: {e.strerror or e}") from None


def _mismatch(name: str, expected: str, actual: str) -> BundleError:
    return BundleError(f"{name} | sha256 mismatch: expected {expected}, got {actual}")


def read(bundle: Path) -> bytes:
    """The bytes of the bundle's manifest.json, read once: what the signature check and
    ``load`` then see (runtime/trust.py)."""
    return _read(Path(bundle) / MANIFEST)


def load(bundle: Path, data: bytes | None = None) -> dict[str, Any]:
    """Hash-check manifest.json (``data``, its bytes as already read, or read now) against
    manifest.json.sha256; return it parsed."""
    bundle = Path(bundle)
    data = _read(bundle / MANIFEST) if data is None else data
    expected = _read(bundle / MANIFEST_SUM).decode("ascii", "replace").split()
    expected = expected[0] if expected else "(empty file)"
    actual = sha256_bytes(data)
    if actual != expected:
        raise _mismatch(MANIFEST, expected, actual)
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise BundleError(f"{MANIFEST} | not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{MANIFEST} | expected format {FORMAT!r}, got {got!r}")
    _check_types(manifest, REQUIRED)
    for path, kind in OPTIONAL:
        if _get(manifest, path) not in (None, _MISSING):
            _check_types(manifest, ((path, kind),))
    if manifest.get("signature") is None:
        _check_types(manifest, REQUIRED_WITHOUT_SIGNATURE)
    else:
        check_signature(manifest["signature"])
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise BundleError(f"{MANIFEST} | files: expected file names mapped to sha256 strings")
    return manifest


_MISSING = object()


def _get(doc: dict[str, Any], path: str) -> Any:
    """The value at the dotted ``path``; _MISSING when a key on the way is absent."""
    value: Any = doc
    for key in path.split("."):
        value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
    return value


def _check_types(doc: dict[str, Any], spec) -> None:
    for path, kind in spec:
        value = _get(doc, path)
        if value is _MISSING:
            raise BundleError(f"{MANIFEST} | {path}: expected {kind_name(kind)}, got None")  # as a JSON null reads
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise BundleError(f"{MANIFEST} | {path}: expected {kind_name(kind)}, got {_short(value)}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad(path: str, expected: str, value: Any) -> BundleError:
    return BundleError(f"{MANIFEST} | signature.{path}: expected {expected}, got {_short(value)}")


def _is_num(v: Any) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool)


def check_signature(sig: dict[str, Any]) -> None:
    """Check the shape of ``manifest["signature"]`` (docs/bundle.md); raise one BundleError
    line naming the first key that is wrong. Called by ``load``. A signature with ``inputs``
    (or ``outputs``), lists of tensors, is a model of several inputs or outputs (``check_multi``)."""
    if "inputs" in sig or "outputs" in sig:
        return check_multi(sig)
    if sig.get("task") not in TASKS:
        raise _bad("task", " or ".join(map(repr, TASKS)), sig.get("task"))
    if sig.get("output_kind", "values") not in OUTPUT_KINDS:
        raise _bad("output_kind", " or ".join(map(repr, OUTPUT_KINDS)), sig.get("output_kind"))
    labels = sig.get("labels")
    if labels is not None and not (isinstance(labels, list) and labels and all(isinstance(v, str) for v in labels)):
        raise _bad("labels", "a list of strings or null", labels)
    sizes = {}
    for side in ("input", "output"):
        t = sig.get(side)
        if not isinstance(t, dict):
            raise _bad(side, "a table", t)
        if not isinstance(t.get("name"), str):
            raise _bad(f"{side}.name", "a string", t.get("name"))
        if t.get("dtype", "float32") != "float32":
            raise _bad(f"{side}.dtype", "'float32'", t.get("dtype"))
        shape = t.get("shape")
        if not (isinstance(shape, list) and len(shape) >= 2 and all(type(d) is int for d in shape)
                and all(d >= 1 for d in shape[1:])):
            raise _bad(f"{side}.shape", "a list of integers, batch first (-1), then sizes >= 1", shape)
        sizes[side] = math.prod(shape[1:])
        names = t.get("features" if side == "input" else "names")
        key = f"{side}.{'features' if side == 'input' else 'names'}"
        if names is None and side == "output":
            continue
        if not (isinstance(names, list) and all(isinstance(v, str) for v in names)):
            raise _bad(key, "a list of strings", names)
        if len(names) != sizes[side]:
            raise _bad(key, f"{sizes[side]} names (the product of shape {shape[1:]})", len(names))
    if sig["task"] == "classification":
        names = labels or sig["output"].get("names")
        if names is None or len(names) != sizes["output"]:
            raise _bad("labels", f"{sizes['output']} labels for a classification (one per output)", labels)
    n = sizes["input"]
    for rng, nullable in (("valid", True), ("observed", False)):
        r = sig.get(rng)
        if r is None and rng == "observed":
            continue
        if not isinstance(r, dict):
            raise _bad(rng, "a table with min and max", r)
        for end in ("min", "max"):
            v = r.get(end)
            if not (isinstance(v, list) and len(v) == n and all(_is_num(x) or (nullable and x is None) for x in v)):
                what = "number or null" if nullable else "number"
                raise _bad(f"{rng}.{end}", f"a list of {n} values (a {what} per feature)", v)


def _check_shape(path: str, shape: Any) -> int:
    """The number of values one example of ``shape`` (batch first) holds; BundleError if it is not a shape."""
    if not (isinstance(shape, list) and len(shape) >= 2 and all(type(d) is int for d in shape)
            and all(d >= 1 for d in shape[1:])):
        raise _bad(path, "a list of integers, batch first (-1), then sizes >= 1", shape)
    return math.prod(shape[1:])


def _check_ranges(t: dict[str, Any], where: str, n: int) -> None:
    """The per-feature valid range (null: unbounded) and observed range (or null) of a table ``t``."""
    for rng, nullable in (("valid", True), ("observed", False)):
        r = t.get(rng)
        if r is None and rng == "observed":
            continue
        if not isinstance(r, dict):
            raise _bad(f"{where}{rng}", "a table with min and max", r)
        for end in ("min", "max"):
            v = r.get(end)
            if not (isinstance(v, list) and len(v) == n and all(_is_num(x) or (nullable and x is None) for x in v)):
                what = "number or null" if nullable else "number"
                raise _bad(f"{where}{rng}.{end}", f"a list of {n} values (a {what} per feature)", v)


def check_multi(sig: dict[str, Any]) -> None:
    """``check_signature`` for a model of several inputs or outputs: ``inputs`` and ``outputs``,
    each a non-empty list of tensor tables, their names unique within each list; an input has
    its features and its own valid and observed ranges, an output its task, output kind and
    labels (docs/bundle.md)."""
    for side in ("inputs", "outputs"):
        tensors = sig.get(side)
        if not (isinstance(tensors, list) and tensors):
            raise _bad(side, "a non-empty list of tensor tables", tensors)
        seen: set[str] = set()
        for i, t in enumerate(tensors):
            where = f"{side}[{i}]"
            if not isinstance(t, dict):
                raise _bad(where, "a table", t)
            name = t.get("name")
            if not (isinstance(name, str) and name):
                raise _bad(f"{where}.name", "a non-empty string", name)
            if name in seen:
                raise _bad(f"{where}.name", f"a name unique among the {side}", name)
            seen.add(name)
            if t.get("dtype", "float32") != "float32":
                raise _bad(f"{where}.dtype", "'float32'", t.get("dtype"))
            size = _check_shape(f"{where}.shape", t.get("shape"))
            key = "features" if side == "inputs" else "names"
            names = t.get(key)
            if names is not None or side == "inputs":
                if not (isinstance(names, list) and all(isinstance(v, str) for v in names)):
                    raise _bad(f"{where}.{key}", "a list of strings", names)
                if len(names) != size:
                    raise _bad(f"{where}.{key}", f"{size} names (the product of shape {t['shape'][1:]})", len(names))
            if side == "inputs":
                _check_ranges(t, f"{where}.", size)
                continue
            if t.get("task") not in TASKS:
                raise _bad(f"{where}.task", " or ".join(map(repr, TASKS)), t.get("task"))
            if t.get("output_kind", "values") not in OUTPUT_KINDS:
                raise _bad(f"{where}.output_kind", " or ".join(map(repr, OUTPUT_KINDS)), t.get("output_kind"))
            labels = t.get("labels")
            if labels is not None and not (isinstance(labels, list) and labels
                                           and all(isinstance(v, str) for v in labels)):
                raise _bad(f"{where}.labels", "a list of strings or null", labels)
            if t["task"] == "classification" and len(labels or names or []) != size:
                raise _bad(f"{where}.labels", f"{size} labels for a classification (one per output value)", labels)


def kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "a string", int: "an integer", float: "a number", dict: "a table",
                        bool: "true or false", type(None): "null"}[k] for k in kinds)


def check_file(bundle: Path, manifest: dict[str, Any], name: str) -> bytes:
    """Return the bytes of bundle file ``name`` after checking them against the manifest."""
    files = manifest.get("files", {})
    if name not in files:
        raise BundleError(f"{name} | not listed in {MANIFEST}")
    data = _read(Path(bundle) / name)
    actual = sha256_bytes(data)
    if actual != files[name]:
        raise _mismatch(name, files[name], actual)
    return data


def check_all(bundle: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Check every file the manifest lists; return their bytes by name."""
    return {name: check_file(bundle, manifest, name) for name in sorted(manifest.get("files", {}))}


def signature_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What `info` and GET /info show of a loaded manifest's model: its name and signature
    (the tutorial's implied one for a bundle made before signatures). Stdlib only."""
    sig = manifest.get("signature")
    name = manifest["model"].get("name") or TUTORIAL_NAME
    if sig is not None and "inputs" in sig:
        return {"model_name": name, "declared": True, "multi": True,
                "inputs": [_input_summary(t) for t in sig["inputs"]],
                "outputs": [{"name": t["name"], "shape": t["shape"], "task": t["task"],
                             "output_kind": t.get("output_kind", "values"),
                             "labels": t.get("labels") or (t.get("names") if t["task"] == "classification" else None)}
                            for t in sig["outputs"]]}
    if sig is None:
        return {"model_name": name, "declared": False, "task": "regression", "output_kind": "values",
                "labels": None, "input": {"name": manifest["model"]["input"]["name"], "shape": [-1, 1],
                                          "features": 1, "names": ["celsius"]},
                "output": {"name": manifest["model"]["output"]["name"], "shape": [-1, 1]}}
    inp, out = sig["input"], sig["output"]
    labels = sig.get("labels") or (out.get("names") if sig["task"] == "classification" else None)
    return {"model_name": name, "declared": True, "task": sig["task"], "output_kind": sig.get("output_kind", "values"),
            "labels": labels, "input": _input_summary(inp), "output": {"name": out["name"], "shape": out["shape"]}}


def _input_summary(inp: dict[str, Any]) -> dict[str, Any]:
    """An input tensor as the summary shows it: name, shape, feature count and names (a long list cut)."""
    features = inp["features"]
    return {"name": inp["name"], "shape": inp["shape"], "features": len(features),
            "names": features if len(features) <= 32 else [*features[:3], "...", *features[-3:]]}
