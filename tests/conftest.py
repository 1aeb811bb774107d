"""Shared fixtures: the real pipeline, run once per session into a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.manifest import sha256_bytes, sha256_file  # noqa: F401 - the tests' one sha256

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs"
# Seconds: the one bound on every wait for observed progress (a line, a file, a socket, a
# state). Only a hang reaches it; no verdict depends on it, so a slow machine only waits longer.
FAILSAFE = 600.0


# The suite runs as a fresh machine would, whatever the caller's shell holds: no signing key
# for the bundles it builds, no trusted keys for the bundles it runs. Tests that want them
# pass them explicitly.
for _name in ("SIGNING_KEY", "EDGE_TRUSTED_KEYS", "EDGE_SSH_KEYGEN"):
    os.environ.pop(_name, None)


def wait_until(what: str, predicate, poll: float = 0.01, failsafe: float = FAILSAFE):
    """Poll an observed state until ``predicate()`` is truthy and return that value.

    ``what`` names the state in the failure, raised only if ``failsafe`` seconds pass first
    (a hang, never a slow machine's verdict).
    """
    deadline = time.monotonic() + failsafe
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"failsafe: still waiting for {what} after {failsafe:g} s")
        time.sleep(poll)


def edited(text: str, *pairs: tuple[str, str]) -> str:
    """``text`` with each ``(old, new)`` replaced; fails loudly unless ``old`` occurs exactly once
    (a preset edited since the test was written must not make the edit a silent no-op)."""
    for old, new in pairs:
        n = text.count(old)
        assert n == 1, f"expected {old!r} exactly once in the text to edit, found it {n} times"
        text = text.replace(old, new)
    return text


# The files the presets name by relative path: their data and their oracle.
PRESET_FILES = ("celsius.csv", "fahrenheit.py")


def preset_with(dest: Path, *pairs: tuple[str, str], preset: str = "default") -> Path:
    """Write configs/<preset>.toml, edited by ``pairs`` (see ``edited``), to ``dest``, with the
    files it names beside it (``PRESET_FILES``); return ``dest``."""
    dest.write_text(edited((PRESETS / f"{preset}.toml").read_text(), *pairs))
    for name in PRESET_FILES:
        if not (dest.parent / name).exists():
            shutil.copyfile(PRESETS / name, dest.parent / name)
    return dest


def run_module(module: str, *args: str, cwd: Path = ROOT, stdin: bytes | None = None, env=None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` (bytes out) with the repo on the path."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, input=stdin, capture_output=True,
        env=e, timeout=timeout,
    )


def pipeline(*args: str, **kw) -> subprocess.CompletedProcess:
    return run_module("pipeline", *args, **kw)


class Built:
    """Paths of one real pipeline run."""

    def __init__(self, root: Path, config: Path):
        self.root, self.config = root, config
        self.build, self.dist = root / "build", root / "dist"

    def args(self, stage: str) -> list[str]:
        return [stage, "--config", str(self.config), "--build", str(self.build), "--dist", str(self.dist)]

    def run(self, stage: str, **kw) -> subprocess.CompletedProcess:
        return pipeline(*self.args(stage), **kw)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    """The default config through all four stages (train, export, verify, bundle)."""
    b = Built(tmp_path_factory.mktemp("default"), PRESETS / "default.toml")
    r = b.run("all")
    assert r.returncode == 0, r.stderr.decode()
    return b


@pytest.fixture(scope="session")
def bundle_tarball(request) -> Path:
    """The bundle under test: $RUNTIME_TEST_BUNDLE (make runtime-check), else a fresh pipeline run's."""
    given = os.environ.get("RUNTIME_TEST_BUNDLE")
    if given:
        return Path(given).resolve()
    return request.getfixturevalue("built").dist / "bundle.tar.gz"


class Checkout:
    """A copy of the source tree as a git repository of its own, to commit in (a test never
    commits in the real one); ``bundle`` runs the bundle stage from it on a copy of a build."""

    def __init__(self, dest: Path, date: int = 1_700_000_000):
        import shutil

        self.src = dest
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for d in ("pipeline", "export", "runtime", "configs"):
            shutil.copytree(ROOT / d, dest / d, ignore=ignore)
        (dest / "README.md").write_text("# a checkout\n")
        self.git("init", "-q")
        self.git("add", "-A")
        self.commit("first", date)

    def git(self, *args: str, date: int = 0) -> None:
        who = {f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER")
               for k, v in (("NAME", "test"), ("EMAIL", "test@example.com"), ("DATE", f"@{date} +0000"))}
        subprocess.run(["git", "-C", str(self.src), *args], check=True, capture_output=True,
                       env={**os.environ, **who})

    def commit(self, message: str, date: int, edits: dict[str, str] | None = None) -> None:
        """Commit ``edits`` ({relative path: text appended}), or nothing at all (an empty commit)."""
        for name, text in (edits or {}).items():
            with open(self.src / name, "a") as f:
                f.write(text)
        self.git("commit", "-q", "-a", "--allow-empty", "-m", message, date=date)

    def bundle(self, built: "Built", dest: Path) -> Path:
        """The bundle stage, run from this checkout on a copy of ``built``'s build (the same verified
        model: only the checkout differs); SOURCE_DATE_EPOCH unset. Returns the tarball."""
        import shutil

        shutil.copytree(built.build, dest / "build")
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        r = subprocess.run([sys.executable, "-m", "pipeline", "bundle", "--config", str(built.config),
                            "--build", str(dest / "build"), "--dist", str(dest / "dist")],
                           cwd=self.src, capture_output=True, env={**env, "PYTHONPATH": str(self.src)}, timeout=600)
        assert r.returncode == 0, r.stderr.decode()
        return dest / "dist" / "bundle.tar.gz"


@pytest.fixture
def bundle(tmp_path, bundle_tarball) -> Path:
    """A freshly unpacked copy of the bundle (tests may damage it)."""
    import tarfile

    with tarfile.open(bundle_tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "bundle"


@pytest.fixture
def runner(bundle):
    """A ``runtime.Runner`` on the test's bundle, closed at the end."""
    from runtime import Runner

    with Runner.from_bundle(bundle) as r:
        yield r


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The one `error:` line a failed command must print on stderr (and no traceback)."""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert b"Traceback" not in r.stderr
    return lines[0]


def runtime_cli(bundle: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`python -m runtime ...` run from inside the bundle, with the bundle's own runtime/."""
    return run_module("runtime", *args, cwd=bundle, stdin=stdin, env={"PYTHONPATH": ""})


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


class Server:
    """A real `python -m runtime serve` process; ``url`` once it said where it listens."""

    def __init__(self, bundle: Path, *args: str, env: dict | None = None, pass_fds=(), cwd: Path | None = None):
        e = {**os.environ, "PYTHONPATH": "", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", "--bundle", str(bundle), *args],
            cwd=cwd or bundle, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=pass_fds,
        )
        self.log: list[str] = []
        self.where = self.wait_for("serving model ").rsplit(" on ", 1)[1].split(" (")[0]
        host, _, port = self.where.rpartition(":")
        self.host, self.port = host, int(port) if port.isdigit() else None
        self.url = f"http://{self.where}" if self.port else None

    def wait_for(self, text: str) -> str:
        """Read the server's log until a line holding ``text`` (observed progress); fail if it exits first."""
        for raw in self.proc.stderr:
            line = raw.decode().rstrip("\n")
            self.log.append(line)
            if text in line:
                return line
        self.proc.wait(timeout=60)
        raise AssertionError(f"serve exited ({self.proc.returncode}) before {text!r}: {self.log}")

    def stop(self, sig=None) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        rest = self.proc.stderr.read().decode()
        self.log += rest.splitlines()
        return self.proc.wait(timeout=120)


@pytest.fixture
def serve(bundle):
    """Start servers on the test's bundle (``serve(*args)``, ephemeral port by default); all stopped at the end."""
    started = []

    def start(*args: str, bundle_dir: Path | None = None, **kw) -> Server:
        if not any(a in ("--port", "--unix") for a in args) and "pass_fds" not in kw:
            args = (*args, "--port", "0")
        s = Server(bundle_dir or bundle, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


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
    shutil.copystat(ROOT / "runtime", dest / "runtime")
    return dest


def sig_compute(kind: str):
    """The numpy function the ``kind`` bundle's model computes (float32)."""
    return _sig_model(kind)[3]


@pytest.fixture
def tabular_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "tabular", "tabular")


@pytest.fixture
def image_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "image", "image")


@pytest.fixture
def regression_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "regression", "regression")


@pytest.fixture
def scalar_bundle(tmp_path) -> Path:
    return signature_bundle(tmp_path / "scalar", "scalar")


@pytest.fixture
def serve_bundle():
    """Start servers on any bundle folder (``serve_bundle(dir, *args)``, ephemeral port); all stopped at the end."""
    started = []

    def start(bundle_dir: Path, *args: str, **kw) -> Server:
        if not any(a in ("--port", "--unix") for a in args):
            args = (*args, "--port", "0")
        s = Server(bundle_dir, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
# --- end of signature bundles ---


# --- the shipped examples, each built once per session ------------------------------------------

@pytest.fixture(scope="session")
def example_build(tmp_path_factory):
    """``example_build(name)``: (build, dist) of `make all CONFIG=examples/<name>/edge.toml`,
    made once per session and shared: copy it (``copied_build``) before changing anything."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in made:
            base = tmp_path_factory.mktemp(f"example-{name}")
            r = subprocess.run(["make", "--no-print-directory", "all", f"CONFIG={ROOT / 'examples' / name / 'edge.toml'}",
                                f"BUILD={base / 'build'}", f"DIST={base / 'dist'}"], cwd=ROOT, capture_output=True,
                               text=True, timeout=1800)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            made[name] = base / "build", base / "dist"
        return made[name]

    return get


def copied_build(source: tuple[Path, Path], dest: Path, extra_config: str = "") -> tuple[Path, Path]:
    """A copy of a build and its dist under ``dest``; ``extra_config`` appended to the build's
    config.toml (its relative paths still resolve: config.origin is copied beside it)."""
    build, dist = dest / "build", dest / "dist"
    shutil.copytree(source[0], build)
    shutil.copytree(source[1], dist)
    if extra_config:
        with open(build / "config.toml", "a") as f:
            f.write("\n" + extra_config)
    return build, dist


# The minimal dataset-mode config (#17): a complete, valid config as it stands.
MINIMAL = """\
[data]
file = "data.csv"           # a CSV with a header row
target = "label"
validation = 0.2

[task]
kind = "classification"

[model]
builder = "model.py:build"
"""


# The session's systemd test host (tests/systemd_host.py), one boot shared by every module
# that asks for it. Imported last: that module imports FAILSAFE and wait_until from here.
from systemd_host import systemd_host  # noqa: E402,F401 - a fixture
