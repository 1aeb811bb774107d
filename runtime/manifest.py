"""Read a bundle's manifest and check every file against it. Stdlib only.

``manifest.json`` lists the sha256 of every other file in the bundle; its own sha256 is
in ``manifest.json.sha256`` beside it. Nothing is handed to onnxruntime before its
hash has been checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BundleError

MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
FORMAT = "edge-bundle/1"
_NUM = (int, float)
# What the runner reads from a manifest, and its type (checked once, at load).
REQUIRED = (
    ("model.file", str), ("model.input.name", str), ("model.output.name", str),
    ("model.opset", int), ("model.ir_version", int), ("model.min_onnxruntime", str),
    ("valid_input.min_celsius", (*_NUM, type(None))), ("valid_input.max_celsius", (*_NUM, type(None))),
    ("golden.file", str), ("golden.atol", _NUM), ("golden.rtol", _NUM), ("files", dict),
)


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


def load(bundle: Path) -> dict[str, Any]:
    """Read and hash-check manifest.json (against manifest.json.sha256); return it parsed."""
    bundle = Path(bundle)
    data = _read(bundle / MANIFEST)
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
    for path, kind in REQUIRED:
        value = manifest
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BundleError(f"{MANIFEST} | {path}: expected {kind_name(kind)}, got {value!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise BundleError(f"{MANIFEST} | files: expected file names mapped to sha256 strings")
    return manifest


def kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "a string", int: "an integer", float: "a number", dict: "a table",
                        type(None): "null"}[k] for k in kinds)


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
