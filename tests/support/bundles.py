"""Bundles made or changed by hand, without the pipeline: re-signed files, a one-neuron model
shifted by a known amount, signing keys, and the signature bundles (small ONNX models made with
onnx.helper for every kind of signature); and the byte-compiled runtime/ a device's install
gives an unpacked bundle (``precompile``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tests.support.core import ROOT, sha256_bytes

_compiled: dict[bytes, Path] = {}  # the runtime/ sources' digest: a folder of their .pyc files


def precompile(bundle: Path) -> Path:
    """Byte-compile the unpacked ``bundle``'s runtime/ as the device's install does
    (deploy/roles/edge/files/release.py's ``precompile``: checked-hash .pyc files in
    runtime/__pycache__, which Python uses only while their source's hash matches, so that an
    edited source is compiled afresh). Compiled once per process for each runtime/, kept in a
    folder of this process's, and hard-linked from there after that (nothing to write: a test
    that edits a source makes Python compile it, never write into the .pyc). Each command a test
    starts then begins as it does on the device, instead of compiling the runtime first (~40 ms
    of CPU, half of a `python -m runtime predict`). A file that does not compile is left without
    its .pyc: importing it reports the error, as before. Returns ``bundle``."""
    import atexit
    import compileall
    import py_compile
    import shutil
    import tempfile

    folder = bundle / "runtime"
    sources = sorted(folder.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.name.encode() + b"\0" + p.read_bytes() + b"\0" for p in sources)).digest()
    cache = folder / "__pycache__"
    kept = _compiled.get(digest)
    if kept is None:
        compileall.compile_dir(folder, maxlevels=0, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        kept = Path(tempfile.mkdtemp(prefix="edge-pyc-"))
        atexit.register(shutil.rmtree, kept, ignore_errors=True)
        for pyc in cache.glob("*.pyc") if cache.is_dir() else ():
            shutil.copyfile(pyc, kept / pyc.name)
        _compiled[digest] = kept
        return bundle
    cache.mkdir(exist_ok=True)
    for pyc in kept.iterdir():
        (cache / pyc.name).unlink(missing_ok=True)  # a bundle made again in place: never write into a link
        try:
            os.link(pyc, cache / pyc.name)
        except OSError:  # another file system
            shutil.copyfile(pyc, cache / pyc.name)
    return bundle


def resign(bundle: Path, name: str, data: bytes) -> None:
    """Replace a bundle file and make the manifest's hashes agree with it (a re-signed bad file)."""
    import json

    from runtime import manifest

    (bundle / name).write_bytes(data)
    m = json.loads((bundle / manifest.MANIFEST).read_text())
    m["files"][name] = manifest.sha256_bytes(data)
    for fname, raw in manifest.encode(m).items():
        (bundle / fname).write_bytes(raw)


def keypair(folder: Path, name: str = "signing", comment: str | None = None) -> Path:
    """A fresh ed25519 signing key without a passphrase, as `make keys` makes one:
    folder/name (mode 0600) and folder/name.pub. Returns the private key's path."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment or f"test key {name}", "-f", str(key)],
                   check=True, capture_output=True, timeout=60)
    return key


def sign(bundle: Path, key: Path) -> None:
    """Sign an unpacked bundle's manifest.json with ``key`` as the build does (ssh-keygen -Y
    sign, namespace edge-bundle), writing manifest.json.sig beside it."""
    from runtime import trust

    data = (bundle / "manifest.json").read_bytes()
    r = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", trust.NAMESPACE], input=data,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    (bundle / trust.SIGNATURE).write_bytes(r.stdout)


def trusted_keys(path: Path, *keys: Path) -> Path:
    """A trusted-keys file at ``path`` listing the public keys (KEY.pub) of ``keys``, with a comment line."""
    lines = ["# trusted by the tests"] + [Path(f"{k}.pub").read_text().strip() for k in keys]
    path.write_text("\n".join(lines) + "\n")
    return path


def shifted_bundle(bundle: Path, dest: Path, delta: float = 1.0) -> Path:
    """A copy of ``bundle`` (a one-neuron model's) whose output bias is moved by ``delta``, re-signed
    throughout (model, golden data, manifest): a second valid model with known answers.

    Edits the bias's four float32 bytes in the ONNX file directly, so it needs no onnx
    package (the runtime-check venvs have none).
    """
    import json
    import shutil
    import struct

    import numpy as np

    from runtime import Runner

    shutil.copytree(bundle, dest)
    with Runner.from_bundle(dest) as r:
        bias = r.predict(np.float32([0.0]))[0]  # a one-neuron model: f(0) is the bias
    model = (dest / "model.onnx").read_bytes()
    old, new = struct.pack("<f", bias), struct.pack("<f", np.float32(bias + np.float32(delta)))
    assert model.count(old) == 1, "the bias's bytes are not unique in model.onnx"
    resign(dest, "model.onnx", model.replace(old, new))
    g = json.loads((dest / "golden.json").read_text())
    with Runner.from_bundle(dest) as r:
        g["outputs"] = r.predict(np.float32(g["inputs"])).tolist()
    resign(dest, "golden.json", json.dumps(g).encode())
    return dest


# --- signature bundles (issue 17, the device for any signature): built by hand, no pipeline ---
# Small ONNX models made with onnx.helper, manifests written with runtime.manifest.encode,
# the repo's runtime/ copied in (as the bundle stage does), every file listed with its sha256.

WINE_FEATURES = ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
                 "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
                 "od280_od315", "proline"]


def _sig_model(kind: str):
    """(ONNX model bytes, input shape, output shape, the numpy function it computes) for ``kind``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng({"tabular": 1, "image": 2, "regression": 3, "scalar": 4}[kind])
    if kind == "image":
        shape, n_in, n_out = (8, 8, 1), 64, 10
    elif kind == "tabular":
        shape, n_in, n_out = (13,), 13, 3
    elif kind == "scalar":
        shape, n_in, n_out = (1,), 1, 1
    else:
        shape, n_in, n_out = (4,), 4, 1
    w = rng.normal(size=(n_in, n_out)).astype(np.float32)
    b = rng.normal(size=(n_out,)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = []
    flat = "inputs"
    if kind == "image":
        inits.append(numpy_helper.from_array(np.array([-1, n_in], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["inputs", "flat_shape"], ["flat"]))
        flat = "flat"
    nodes += [helper.make_node("MatMul", [flat, "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["outputs"])]
    graph = helper.make_graph(
        nodes, f"{kind}-model",
        [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["N", n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)

    def compute(x):
        return (np.asarray(x, np.float32).reshape(-1, n_in) @ w + b).astype(np.float32)

    return model.SerializeToString(), shape, (n_out,), compute


def signature_bundle(dest: Path, kind: str, **changes) -> Path:
    """An unpacked bundle in ``dest`` of ``kind`` "tabular" (13 wine features -> 3 logits, labels
    a/b/c, alcohol valid in [0, 100]), "image" (8x8x1 -> 10 logits, labels "0".."9", pixels valid
    in [0, 16]), "regression" (4 features -> 1 value, unbounded) or "scalar" (one feature, volts,
    valid from 0 up, observed 0..10 -> one value named lux: a one-feature model that is not the
    tutorial's). ``changes``: signature keys replaced, and ``golden`` to replace golden.json's
    document. Returns ``dest``."""
    import json
    import shutil

    import numpy as np

    from runtime import compat, manifest

    model_bytes, shape, out_shape, compute = _sig_model(kind)
    n_feat = int(np.prod(shape))
    if kind == "image":
        features = [f"x[{i},{j},0]" for i in range(8) for j in range(8)]
        labels = [str(i) for i in range(10)]
        valid = {"min": [0.0] * n_feat, "max": [16.0] * n_feat}
        observed = {"min": [0.0] * n_feat, "max": [15.0] * n_feat}
        name, task = "digits", "classification"
    elif kind == "scalar":
        features, labels = ["volts"], None
        valid = {"min": [0.0], "max": [None]}
        observed = {"min": [0.0], "max": [10.0]}
        name, task = "volts-to-lux", "regression"
    elif kind == "tabular":
        features, labels = list(WINE_FEATURES), ["a", "b", "c"]
        valid = {"min": [0.0] + [None] * 12, "max": [100.0] + [None] * 12}
        observed = {"min": [11.0] + [0.0] * 12, "max": [15.0] + [1000.0] * 12}
        name, task = "wine", "classification"
    else:
        features, labels = ["a", "b", "c", "d"], None
        valid = {"min": [None] * 4, "max": [None] * 4}
        observed = {"min": [-1.0] * 4, "max": [1.0] * 4}
        name, task = "plain-regression", "regression"
    out_names = labels or (["lux"] if kind == "scalar" else ["y"])
    signature = {
        "task": task, "labels": labels, "output_kind": "logits" if labels else "values",
        "input": {"name": "inputs", "dtype": "float32", "shape": [-1, *shape], "features": features},
        "output": {"name": "outputs", "dtype": "float32", "shape": [-1, *out_shape], "names": out_names},
        "valid": valid, "observed": observed,
    }
    golden_doc = changes.pop("golden", None)
    signature.update(changes)
    rng = np.random.default_rng(7)
    lo = np.array(observed["min"], np.float32)
    hi = np.array(observed["max"], np.float32)
    x = (lo + (hi - lo) * rng.random((16, n_feat), dtype=np.float32)).astype(np.float32).reshape(16, *shape)
    if golden_doc is None:
        golden_doc = {"inputs": x.tolist(), "outputs": compute(x).tolist()}
    dest.mkdir(parents=True, exist_ok=True)
    files = {"model.onnx": model_bytes, "golden.json": (json.dumps(golden_doc) + "\n").encode()}
    for p in sorted((ROOT / "runtime").glob("*.py")):
        files[f"runtime/{p.name}"] = p.read_bytes()
    files["requirements.txt"] = (ROOT / "runtime" / "requirements.txt").read_bytes()
    golden = {"file": "golden.json", "atol": 1e-4, "rtol": 1e-4}
    if labels:
        golden["labels_equal"] = True
    m = {
        "format": manifest.FORMAT,
        "model": {"file": "model.onnx", "name": name, "opset": 17, "ir_version": 8,
                  "min_onnxruntime": compat.oldest_onnxruntime(17, 8),
                  "input": {"name": "inputs", "shape": ["N", *shape], "type": "tensor(float)"},
                  "output": {"name": "outputs", "shape": ["N", *out_shape], "type": "tensor(float)"}},
        "signature": signature,
        "golden": golden,
        "files": {n: sha256_bytes(d) for n, d in sorted(files.items())},
    }
    files.update(manifest.encode(m))
    for n, d in files.items():
        (dest / n).parent.mkdir(parents=True, exist_ok=True)
        (dest / n).write_bytes(d)
    precompile(dest)
    shutil.copystat(ROOT / "runtime", dest / "runtime")
    return dest


def sig_compute(kind: str):
    """The numpy function the ``kind`` bundle's model computes (float32)."""
    return _sig_model(kind)[3]


# --- a model of two inputs and two outputs (issue 27: several tensors, bound by name) -----------

MULTI_INPUTS = {"image": (4, 4, 1), "readings": (3,)}
MULTI_OUTPUTS = {"kind": (3,), "level": (1,)}
MULTI_LABELS = ["a", "b", "c"]
READINGS = ["t", "p", "h"]


def _multi_weights():
    import numpy as np

    rng = np.random.default_rng(27)
    return {"w_img": rng.normal(size=(16, 3)).astype(np.float32),
            "w_read": (rng.normal(size=(3, 3)) * 0.001).astype(np.float32),
            "b_kind": rng.normal(size=(3,)).astype(np.float32),
            "v_img": rng.normal(size=(16, 1)).astype(np.float32),
            "v_read": (rng.normal(size=(3, 1)) * 0.001).astype(np.float32),
            "c_level": np.float32([0.5])}


def multi_compute(image, readings) -> dict:
    """What the multi bundle's model computes, in numpy (float64, then float32): ``kind``, the
    softmax over 3 classes of the flattened image and the readings times their weights plus a
    bias; ``level``, a linear function of the same."""
    import numpy as np

    w = {k: v.astype(np.float64) for k, v in _multi_weights().items()}
    flat = np.asarray(image, np.float32).astype(np.float64).reshape(-1, 16)
    r = np.asarray(readings, np.float32).astype(np.float64).reshape(-1, 3)
    logits = flat @ w["w_img"] + r @ w["w_read"] + w["b_kind"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    kind = e / e.sum(axis=1, keepdims=True)
    level = flat @ w["v_img"] + r @ w["v_read"] + w["c_level"]
    return {"kind": kind.astype(np.float32), "level": level.astype(np.float32)}


def multi_model(input_names=("image", "readings")) -> bytes:
    """The ONNX model ``multi_compute`` describes. Its graph lists its inputs and outputs in the
    other order than the signature does (readings, image; level, kind): only names bind them.
    ``input_names``: the two inputs' tensor names (another to make a model the signature does not fit)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    image, readings = input_names
    w = _multi_weights()
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([-1, 16], np.int64), "flat_shape"))
    nodes = [
        helper.make_node("Reshape", [image, "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w_img"], ["k1"]),
        helper.make_node("MatMul", [readings, "w_read"], ["k2"]),
        helper.make_node("Add", ["k1", "k2"], ["k3"]),
        helper.make_node("Add", ["k3", "b_kind"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["kind"], axis=1),
        helper.make_node("MatMul", ["flat", "v_img"], ["l1"]),
        helper.make_node("MatMul", [readings, "v_read"], ["l2"]),
        helper.make_node("Add", ["l1", "l2"], ["l3"]),
        helper.make_node("Add", ["l3", "c_level"], ["level"]),
    ]
    graph = helper.make_graph(
        nodes, "multi-model",
        [helper.make_tensor_value_info(readings, TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info(image, TensorProto.FLOAT, ["N", 4, 4, 1])],
        [helper.make_tensor_value_info("level", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("kind", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def multi_signature() -> dict:
    """The manifest's signature table of the multi bundle (the form with ``inputs`` and ``outputs``):
    pixels valid in [0, 1]; readings t valid in [-50, 60], p and h unbounded."""
    pixels = [f"image[{i},{j},0]" for i in range(4) for j in range(4)]
    return {
        "inputs": [
            {"name": "image", "dtype": "float32", "shape": [-1, 4, 4, 1], "features": pixels,
             "valid": {"min": [0.0] * 16, "max": [1.0] * 16}, "observed": {"min": [0.0] * 16, "max": [1.0] * 16}},
            {"name": "readings", "dtype": "float32", "shape": [-1, 3], "features": list(READINGS),
             "valid": {"min": [-50.0, None, None], "max": [60.0, None, None]},
             "observed": {"min": [-10.0, 900.0, 0.0], "max": [40.0, 1100.0, 100.0]}},
        ],
        "outputs": [
            {"name": "kind", "dtype": "float32", "shape": [-1, 3], "names": list(MULTI_LABELS),
             "task": "classification", "output_kind": "probabilities", "labels": None},
            {"name": "level", "dtype": "float32", "shape": [-1, 1], "names": ["level"], "task": "regression",
             "output_kind": "values", "labels": None},
        ],
    }


def multi_examples(n: int = 12, seed: int = 7) -> dict:
    """``n`` valid examples for the multi bundle, within the observed ranges: float32 by input name."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lo, hi = np.float32([-10, 900, 0]), np.float32([40, 1100, 100])
    return {"image": rng.random((n, 4, 4, 1), dtype=np.float32),
            "readings": (lo + (hi - lo) * rng.random((n, 3), dtype=np.float32)).astype(np.float32)}


def multi_bundle(dest: Path, model: bytes | None = None, **changes) -> Path:
    """An unpacked bundle in ``dest`` of the two-input, two-output model (``multi_model``), named
    "multi", its golden data computed by ``multi_compute`` (numpy, not onnxruntime). ``changes``:
    signature keys replaced, ``golden`` to replace golden.json's document, ``labels_equal``
    (default true); ``model``: other model bytes. Returns ``dest``."""
    import json
    import shutil

    from runtime import compat, manifest

    signature = multi_signature()
    golden_doc = changes.pop("golden", None)
    labels_equal = changes.pop("labels_equal", True)
    signature.update(changes)
    if golden_doc is None:
        x = multi_examples()
        y = multi_compute(x["image"], x["readings"])
        golden_doc = {"inputs": {k: v.tolist() for k, v in x.items()}, "outputs": {k: v.tolist() for k, v in y.items()}}
    files = {"model.onnx": model or multi_model(), "golden.json": (json.dumps(golden_doc) + "\n").encode()}
    for p in sorted((ROOT / "runtime").glob("*.py")):
        files[f"runtime/{p.name}"] = p.read_bytes()
    files["requirements.txt"] = (ROOT / "runtime" / "requirements.txt").read_bytes()
    # atol/rtol: onnxruntime's float32 MatMul and Softmax against numpy's float64 of the same math
    # differ by a few float32 ulps (~1e-6 here at values up to ~10).
    golden = {"file": "golden.json", "atol": 1e-4, "rtol": 1e-4, "labels_equal": labels_equal}
    m = {
        "format": manifest.FORMAT,
        "model": {"file": "model.onnx", "name": "multi", "opset": 17, "ir_version": 8,
                  "min_onnxruntime": compat.oldest_onnxruntime(17, 8)},
        "signature": signature,
        "golden": golden,
        "files": {n: sha256_bytes(d) for n, d in sorted(files.items())},
    }
    files.update(manifest.encode(m))
    dest.mkdir(parents=True, exist_ok=True)
    for n, d in files.items():
        (dest / n).parent.mkdir(parents=True, exist_ok=True)
        (dest / n).write_bytes(d)
    precompile(dest)
    shutil.copystat(ROOT / "runtime", dest / "runtime")
    return dest
