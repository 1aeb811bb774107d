"""The device-side runner: a bundle's ONNX model in onnxruntime, checked before it serves.

Imports the stdlib, numpy and onnxruntime only (tests/test_runtime_wall.py holds it to that).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import compat, env
from . import manifest as manifest_mod
from .errors import BundleError, InputError, SetupError

_NUMERIC_KINDS = "iuf"  # signed, unsigned, float; bools, strings and objects are refused
F32_MAX = float(np.finfo(np.float32).max)


def session_options(threads: int = 1):
    """onnxruntime options for a small device: ``threads`` intra-op threads, no spinning.

    A spinning thread pool keeps idle cores busy between calls; on a 4-core Pi that is
    CPU the rest of the device needs, so spinning is off.
    """
    import onnxruntime as ort

    if threads < 1:
        raise InputError(f"--threads: expected an integer >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


class Runner:
    """A verified bundle's model, ready to predict. Use ``Runner.from_bundle(path)``.

    A context manager: leaving the ``with`` block releases the onnxruntime session.
    """

    def __init__(self, bundle: Path, manifest: dict[str, Any], session, threads: int):
        self.bundle = Path(bundle)
        self.manifest = manifest
        self.session = session
        self.threads = threads
        model = manifest["model"]
        self.input_name = model["input"]["name"]
        self.output_name = model["output"]["name"]
        valid = manifest["valid_input"]
        self.min_celsius = -math.inf if valid["min_celsius"] is None else float(valid["min_celsius"])
        self.max_celsius = math.inf if valid["max_celsius"] is None else float(valid["max_celsius"])
        # The same bounds rounded to float32, for float32 input.
        self._min32 = float(np.float32(self.min_celsius))
        self._max32 = float(np.float32(self.max_celsius))
        self._outputs = [self.output_name]

    @classmethod
    def from_bundle(cls, bundle: str | Path | None = None, threads: int = 1) -> "Runner":
        """Check the manifest and model hashes and the onnxruntime version, then load the model.

        Args:
            bundle: the unpacked bundle folder (default: the one this package sits in, or from
                a checkout its dist/bundle).
            threads: onnxruntime intra-op threads (default 1, the device setting).

        Raises:
            SetupError: onnxruntime does not import here (the message says how to fix it).
            BundleError: a file is missing or altered, or this onnxruntime cannot load the model.
        """
        env.require(bundle)
        import onnxruntime as ort

        bundle = manifest_mod.locate(bundle)
        manifest = manifest_mod.load(bundle)
        model = manifest["model"]
        model_bytes = manifest_mod.check_file(bundle, manifest, model["file"])
        check_onnxruntime(ort.__version__, model)
        return cls.from_checked(bundle, manifest, model_bytes, threads)

    @classmethod
    def from_checked(cls, bundle: Path, manifest: dict[str, Any], model_bytes: bytes, threads: int = 1) -> "Runner":
        """Load ``model_bytes``, already checked against ``manifest`` by the caller (``selfcheck``
        hashes every file once and loads the very bytes it hashed: nothing is read twice).

        Raises:
            BundleError: this onnxruntime cannot load the model.
        """
        import onnxruntime as ort

        model = manifest["model"]
        try:
            # On a failed load onnxruntime's Python wrapper prints an "EP Error" banner to
            # stdout, where it would mix with the answers; the exception says it all.
            with contextlib.redirect_stdout(io.StringIO()):
                session = ort.InferenceSession(model_bytes, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            why = " ".join(str(e).split())  # its messages may end in a newline: keep the error one line
            raise BundleError(f"{model['file']} | onnxruntime {ort.__version__} cannot load it: {why}") from None
        return cls(bundle, manifest, session, threads)

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.session = None

    def validate(self, values) -> np.ndarray:
        """Return ``values`` as a float32 array of shape (n, 1), or raise InputError naming the problem.

        Accepts a number, a sequence of numbers, or an array of shape (n,) or (n, 1).
        Float32 input is held to the range bounds rounded to float32, so -273.15 typed as
        float32 is accepted; everything else to the bounds as written.
        """
        t = type(values)
        if t is float or t is int:  # one plain number: no numpy until it is known good
            if self.min_celsius <= values <= self.max_celsius and -F32_MAX <= values <= F32_MAX:
                return np.array([[values]], dtype=np.float32)  # NaN failed the comparisons
            self._refuse([values])
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError) as e:
            raise InputError(f"input: expected numbers, got {_short(values)} ({e})") from None
        if arr.dtype.kind not in _NUMERIC_KINDS:
            raise InputError(f"input: expected numbers, got {_short(values)} (dtype {arr.dtype})")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)
        elif arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise InputError(f"input: expected shape (n,) or (n, 1), got {arr.shape}")
        if arr.dtype == np.float32:
            x, lo, hi = arr, self._min32, self._max32
        else:
            x, lo, hi = None, self.min_celsius, self.max_celsius
        if arr.size == 1:
            v = arr.item()
            ok = lo <= v <= hi and -F32_MAX <= v <= F32_MAX  # NaN fails every comparison
        elif arr.size:
            mn, mx = arr.min(), arr.max()  # NaN propagates into both
            ok = lo <= mn and mx <= hi and -F32_MAX <= mn and mx <= F32_MAX
        else:
            raise InputError("input: empty, expected at least one value")
        if not ok:
            self._refuse(arr.tolist(), lo, hi)
        if x is None:
            x = arr.astype(np.float32)
        return x.reshape(-1, 1)

    def value_problem(self, v: float, lo: float | None = None, hi: float | None = None) -> str | None:
        """Why the number ``v`` is not a valid input, or None when it is (bounds default to the manifest's)."""
        lo = self.min_celsius if lo is None else lo
        hi = self.max_celsius if hi is None else hi
        if math.isnan(v):
            return "expected a number, got NaN"
        if math.isinf(v):
            return "expected a finite number"
        if abs(v) > F32_MAX:
            return "outside float32 range (|x| <= 3.4e38)"
        if not lo <= v <= hi:
            return (f"outside the valid range [{self.min_celsius:g}, {self.max_celsius:g}] degC"
                    + (" (below absolute zero)" if v < lo and self.min_celsius == -273.15 else ""))
        return None

    def _refuse(self, values: list, lo: float | None = None, hi: float | None = None) -> None:
        """Raise InputError for the first bad value in ``values``."""
        for i, v in enumerate(values):
            try:
                problem = self.value_problem(float(v), lo, hi)
            except OverflowError:  # an int beyond any float
                problem = "outside float32 range (|x| <= 3.4e38)"
            if problem:
                shown = "nan" if isinstance(v, float) and math.isnan(v) else repr(v)
                raise InputError(f"input[{i}] = {shown}: {problem}", index=i, problem=problem)
        raise AssertionError("no bad value among the refused input")

    def predict(self, values) -> np.ndarray:
        """Fahrenheit for Celsius ``values``: float32 array of shape (n,).

        Raises:
            InputError: non-numeric, NaN, infinite, empty, wrongly shaped or out-of-range input.
        """
        x = self.validate(values)
        return self.session.run(self._outputs, {self.input_name: x})[0].reshape(-1)

    def predict_unchecked(self, x: np.ndarray) -> np.ndarray:
        """Run a float32 (n, 1) array as is (the golden self-check and benchmarks)."""
        return self.session.run(self._outputs, {self.input_name: x})[0].reshape(-1)


def check_onnxruntime(version: str, model: dict[str, Any]) -> None:
    opset, ir = model["opset"], model["ir_version"]
    if not compat.supports(version, opset, ir):
        raise BundleError(
            f"{model['file']} | needs onnxruntime >= {model['min_onnxruntime']} "
            f"(opset {opset}, IR version {ir}); installed: {version}"
        )


def _short(values: Any, limit: int = 60) -> str:
    text = repr(values)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def selfcheck(bundle: str | Path | None = None, threads: int = 1) -> list[dict[str, Any]]:
    """Run every check of a bundle; return one record per check (``name``, ``ok``, ``detail``).

    Checks, in order, stopping at the first that fails: this Python imports numpy and
    onnxruntime; the manifest's sha256; every file's sha256; onnxruntime can load the model's
    opset and IR version; the model loads; the golden inputs reproduce the golden (Keras)
    outputs within the manifest's tolerances.
    """
    checks, runner = checked(bundle, threads)
    if runner is not None:
        runner.close()
    return checks


def checked(bundle: str | Path | None = None, threads: int = 1) -> tuple[list[dict[str, Any]], Runner | None]:
    """``selfcheck``'s records and the very Runner it checked: open when every check passed
    (the caller closes it), else None. Serving that one instead of loading the bundle again
    leaves no time between the check and the use: each file is read and hashed once, and the
    model is loaded from the bytes that were hashed and answers the golden inputs.
    """
    found: dict[str, Any] = {}

    def python() -> str:
        return env.require(bundle)

    def manifest() -> str:
        found["bundle"] = b = manifest_mod.locate(bundle)
        found["manifest"] = manifest_mod.load(b)
        return f"sha256 matches {manifest_mod.MANIFEST_SUM}"

    def hashes() -> str:
        found["files"] = manifest_mod.check_all(found["bundle"], found["manifest"])
        return f"{len(found['files'])} files match their sha256"

    def version() -> str:
        import onnxruntime as ort

        model = found["manifest"]["model"]
        check_onnxruntime(ort.__version__, model)
        return (f"{ort.__version__} loads opset {model['opset']} / IR {model['ir_version']} "
                f"(needs >= {model['min_onnxruntime']})")

    def load() -> str:
        m = found["manifest"]
        found["runner"] = Runner.from_checked(found["bundle"], m, _checked_bytes(found, m["model"]["file"]), threads)
        return f"{m['model']['file']} loaded ({', '.join(found['runner'].session.get_providers())})"

    def golden() -> str:
        m = found["manifest"]
        return _check_golden(m, _checked_bytes(found, m["golden"]["file"]), found["runner"])

    checks: list[dict[str, Any]] = []
    for name, step in (("python", python), ("manifest", manifest), ("hashes", hashes), ("onnxruntime", version),
                       ("load", load), ("golden", golden)):
        try:
            checks.append({"name": name, "ok": True, "detail": step()})
        except (SetupError, BundleError) as e:
            checks.append({"name": name, "ok": False, "detail": e.message})
            break
    runner = found.get("runner")
    if runner is not None and not all(c["ok"] for c in checks):
        runner.close()
        runner = None
    return checks, runner


def _checked_bytes(found: dict[str, Any], name: str) -> bytes:
    """A file's bytes as the hashes check read them (one not listed fails as check_file says)."""
    if name in found["files"]:
        return found["files"][name]
    return manifest_mod.check_file(found["bundle"], found["manifest"], name)


def _check_golden(manifest: dict[str, Any], golden_bytes: bytes, runner: Runner) -> str:
    g = manifest["golden"]
    data = json.loads(golden_bytes)
    x = np.asarray(data["celsius"], dtype=np.float32).reshape(-1, 1)
    want = np.asarray(data["fahrenheit"], dtype=np.float32).astype(np.float64)
    got = runner.predict_unchecked(x).astype(np.float64)
    atol, rtol = g["atol"], g["rtol"]
    err = np.abs(got - want)
    allowed = atol + rtol * np.abs(want)
    bad = np.flatnonzero(~(err <= allowed))
    if bad.size:
        i = int(bad[np.argmax(err[bad] - allowed[bad])])
        raise BundleError(
            f"{g['file']} | {bad.size} of {x.shape[0]} golden outputs differ: worst at {float(x[i, 0])!r} degC, "
            f"got {got[i]!r}, expected {want[i]!r} (atol {atol:g} + rtol {rtol:g} * |expected|)"
        )
    return f"{x.shape[0]} golden outputs within atol {atol:g} + rtol {rtol:g} (max abs err {err.max():.3g})"
