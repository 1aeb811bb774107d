"""The device-side runner: a bundle's ONNX model in onnxruntime, checked before it serves.

Imports the stdlib, numpy and onnxruntime only (tests/runtime/test_runtime_wall.py holds it to that).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import compat, env, trust
from . import manifest as manifest_mod
from .errors import BundleError, InputError, SetupError
from .signature import F32_MAX, NUMERIC_KINDS, Checker, MultiSignature, Signature


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


def check_io(session, sig: Signature | MultiSignature, file: str) -> None:
    """The loaded model takes and gives what the signature says: one float input and one float
    output, named as it names them, of its shapes (the batch free); else one BundleError line.
    onnxruntime loads a model whose shapes were altered: it would fail only when asked.
    A ``MultiSignature``: every input and output it lists, by name, in whatever order the
    model lists them."""
    if sig.multi:
        return _check_io_multi(session, sig, file)
    for side, got, name, shape in (("input", session.get_inputs(), sig.input_name, sig.shape),
                                   ("output", session.get_outputs(), sig.output_name, sig.output_shape)):
        want = [-1, *shape]
        if len(got) != 1 or got[0].name != name:
            raise BundleError(f"{file} | its {side}s are {[t.name for t in got]}, the signature says [{name!r}]")
        dims = list(got[0].shape)
        ok = len(dims) == len(want) and all(not isinstance(d, int) or w == -1 or d == w for d, w in zip(dims, want))
        if not ok or got[0].type != "tensor(float)":
            raise BundleError(f"{file} | {side} {name}: {got[0].type} of shape {dims}, the signature says "
                              f"tensor(float) of shape {want} (-1: the batch)")


def _check_io_multi(session, sig: MultiSignature, file: str) -> None:
    for side, got, specs in (("input", session.get_inputs(), sig.inputs), ("output", session.get_outputs(), sig.outputs)):
        have = {t.name: t for t in got}
        names = [t.name for t in specs]
        if set(have) != set(names) or len(got) != len(names):
            raise BundleError(f"{file} | its {side}s are {sorted(have)}, the signature says {sorted(names)}")
        for spec in specs:
            t, want = have[spec.name], [-1, *spec.shape]
            dims = list(t.shape)
            ok = len(dims) == len(want) and all(not isinstance(d, int) or w == -1 or d == w for d, w in zip(dims, want))
            if not ok or t.type != "tensor(float)":
                raise BundleError(f"{file} | {side} {spec.name}: {t.type} of shape {dims}, the signature says "
                                  f"tensor(float) of shape {want} (-1: the batch)")


def _run_of(session):
    """The call that runs ``session``: ``run(output_names, feed, run_options)``.

    For onnxruntime's own ``InferenceSession``, the C++ session's ``run`` beneath its Python
    ``run``, which before each call checks that every input is fed, that no OrtValue comes
    from another device, and graph-capture options, and on failure retries on a fallback
    provider: about 5 us a call, a sixth of the digits model's whole call at batch 1. The runner
    feeds exactly the inputs ``check_io`` found at load, as numpy arrays, on the CPU provider
    alone, so none of those can apply. Anything else (a wrapper around a session) is called
    through its own ``run``.
    """
    import onnxruntime as ort

    inner = getattr(session, "_sess", None) if type(session) is ort.InferenceSession else None
    return session.run if inner is None else inner.run


class Runner:
    """A verified bundle's model, ready to predict. Use ``Runner.from_bundle(path)``.

    What one example is comes from the manifest's signature (``self.signature``). A model
    of one value in and one value out (the tutorial's, and every bundle made before
    signatures) takes the scalar fast path: ``predict`` takes numbers and returns (n,).
    Any other takes a batch (n, *shape) or one example (*shape) and returns what Keras
    returns. A model of several inputs or outputs (``self.multi``; docs/runtime.md) takes and
    gives dicts of arrays by tensor name. A context manager: leaving the ``with`` block
    releases the onnxruntime session.
    """

    def __init__(self, bundle: Path, manifest: dict[str, Any], session, threads: int,
                 origin: trust.Origin | None = None):
        self.bundle = Path(bundle)
        self.manifest = manifest
        self.origin = origin  # who signed the bundle, and whether this device trusts them
        self.session = session
        self.threads = threads
        self.signature = sig = Signature.of(manifest)
        check_io(session, sig, manifest["model"]["file"])
        self.multi = sig.multi
        if sig.multi:
            self._init_multi(sig)
            return
        self.checker = Checker(sig)
        self.name = sig.model_name
        self.scalar = sig.scalar
        self.labels = sig.labels
        self.input_name = sig.input_name
        self.output_name = sig.output_name
        self.min_celsius = float(sig.valid_min[0])  # the scalar path's bounds (its one feature's)
        self.max_celsius = float(sig.valid_max[0])
        # The same bounds rounded to float32, for float32 input.
        self._min32 = float(np.float32(self.min_celsius))
        self._max32 = float(np.float32(self.max_celsius))
        # The unit is the data's, not the model's: a feature named celsius holds degrees Celsius
        # whichever model takes it (the tutorial's, every bundle made before signatures), so its
        # range messages say degC and, at -273.15, "below absolute zero". No other name says
        # what its unit is; its messages give none. (Its request and answer names come from the
        # signature: Signature.named_scalar.)
        self._unit = " degC" if sig.features == ["celsius"] else ""
        self._outputs = [self.output_name]
        if not self.scalar:  # bound once here: the scalar path pays nothing for the choice
            self.predict = self._predict_examples
            self.validate = self._validate_examples
            self.predict_unchecked = self._run

    def _init_multi(self, sig: MultiSignature) -> None:
        """A model of several inputs or outputs: every method takes and gives dicts by tensor name."""
        self.name = sig.model_name
        self.scalar = False
        self.checker = None  # one per input: ``checkers``
        self.checkers = {t.name: Checker(t) for t in sig.inputs}
        self.labels = None  # per output: ``output_labels``
        self.output_labels = {t.name: t.labels for t in sig.outputs}
        self.input_name = self.output_name = None
        self._outputs = sig.output_tensor_names
        self.predict = self._predict_multi
        self.validate = self._validate_multi
        self.predict_unchecked = self._run_multi
        self.examples = self._examples_multi
        self.answer = self._answer_multi
        self.labels_of = self._labels_of_multi
        self.outside_observed = self._outside_observed_multi

    @classmethod
    def from_bundle(cls, bundle: str | Path | None = None, threads: int = 1,
                    trusted_keys: str | Path | None = None) -> "Runner":
        """Check the signature (when this device trusts keys), the manifest and model hashes
        and the onnxruntime version, then load the model.

        Args:
            bundle: the unpacked bundle folder (default: the one this package sits in, or from
                a checkout its dist/bundle).
            threads: onnxruntime intra-op threads (default 1, the device setting).
            trusted_keys: a trusted-keys file (default: $EDGE_TRUSTED_KEYS, else
                /etc/edge-model/trusted_keys when it exists, else none: unsigned bundles load).

        Raises:
            SetupError: onnxruntime does not import here (the message says how to fix it).
            TrustError: the bundle's origin is refused (unsigned, untrusted key, or its manifest
                changed after signing; ``exit_code`` 6, 7, 8), or the trusted keys are unreadable.
            BundleError: a file is missing or altered, or this onnxruntime cannot load the model.
        """
        env.require(bundle)
        import onnxruntime as ort

        bundle = manifest_mod.locate(bundle)
        data = manifest_mod.read(bundle)
        origin = trust.check(bundle, data, trust.configured(trusted_keys))  # before any sha256 is believed
        manifest = manifest_mod.load(bundle, data)
        model = manifest["model"]
        model_bytes = manifest_mod.check_file(bundle, manifest, model["file"])
        check_onnxruntime(ort.__version__, model)
        return cls.from_checked(bundle, manifest, model_bytes, threads, origin)

    @classmethod
    def from_checked(cls, bundle: Path, manifest: dict[str, Any], model_bytes: bytes, threads: int = 1,
                     origin: trust.Origin | None = None) -> "Runner":
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
        return cls(bundle, manifest, session, threads, origin)

    @property
    def session(self):
        """The onnxruntime session (None once closed); setting it also rebinds what runs it."""
        return self._session

    @session.setter
    def session(self, session) -> None:
        self._session = session
        self._session_run = None if session is None else _run_of(session)

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.session = None

    def validate(self, values) -> np.ndarray:
        """Return ``values`` as a float32 array of shape (n, 1), or raise InputError naming the problem.

        (A non-scalar model: the float32 batch (n, *shape); see ``examples``.)
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
        if arr.dtype.kind not in NUMERIC_KINDS:
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
            return (f"outside the valid range [{self.min_celsius:g}, {self.max_celsius:g}]{self._unit}"
                    + (" (below absolute zero)" if v < lo and self.min_celsius == -273.15 and self._unit else ""))
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
        """The model's answer for ``values``, as float32.

        A scalar model (the tutorial's): a number, a list or an array (n,) or (n, 1) in,
        shape (n,) out. Any other model: a batch (n, *shape) in gives (n, *output shape),
        one example (*shape) gives (*output shape): what Keras returns.

        Raises:
            InputError: non-numeric, NaN, infinite, empty, wrongly shaped or out-of-range input.
        """
        x = self.validate(values)
        return self._session_run(self._outputs, {self.input_name: x}, None)[0].reshape(-1)

    def predict_unchecked(self, x: np.ndarray) -> np.ndarray:
        """Run a float32 (n, 1) array as is (the golden self-check and benchmarks); a
        non-scalar model: a float32 batch (n, *shape), its output as the model gives it."""
        return self._session_run(self._outputs, {self.input_name: x}, None)[0].reshape(-1)

    def examples(self, values) -> tuple[np.ndarray, bool]:
        """``values`` as the model's float32 batch (n, *shape), and whether it was one example.

        A scalar model takes what ``validate`` takes (a number or a list is a batch).
        Raises InputError as ``predict`` does.
        """
        if self.scalar:
            return self.validate(values), False
        return self.checker.examples(values)

    def _validate_examples(self, values) -> np.ndarray:
        return self.checker.examples(values)[0]

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._session_run(self._outputs, {self.input_name: x}, None)[0]

    def _predict_examples(self, values) -> np.ndarray:
        x, single = self.checker.examples(values)
        y = self._session_run(self._outputs, {self.input_name: x}, None)[0]
        return y[0] if single else y

    def answer(self, values) -> tuple[np.ndarray, np.ndarray, bool]:
        """(the validated float32 batch x, the model's output for it (n, *output shape), whether
        ``values`` was one example): for callers that also count x or name the labels."""
        x, single = self.examples(values)
        y = self._session_run(self._outputs, {self.input_name: x}, None)[0]
        return x, y.reshape(x.shape[0], *self.signature.output_shape), single

    def labels_of(self, y) -> list[str]:
        """The label of each example's output in ``y`` (a batch (n, *output shape), or one
        example's output): the name of its largest value. Classification only.

        Raises InputError: the model is not a classification, or ``y`` has the wrong size.
        """
        if self.labels is None:
            raise InputError(f"labels: model {self.name!r} is a {self.signature.task}; only a classification has labels")
        y = np.asarray(y)
        k = len(self.labels)
        if y.size == 0 or y.size % k:
            raise InputError(f"labels: expected outputs of {k} values each, got shape {y.shape}")
        return [self.labels[i] for i in y.reshape(-1, k).argmax(axis=1).tolist()]

    def outside_observed(self, values) -> np.ndarray:
        """Per feature (in signature order), how many of ``values``' numbers lie outside the
        training rows' observed range: int64 (features,); zeros when the bundle records none.

        ``values`` is what ``predict`` takes (validated the same way, InputError alike).
        """
        return self.checker.outside_observed(self.examples(values)[0])


    # --- a model of several inputs or outputs (``self.multi``), bound by name -----------------

    def _examples_multi(self, values) -> tuple[dict[str, np.ndarray], bool]:
        """``values`` (a dict of arrays by input name; a model of one input also takes its array
        alone) as the model's float32 batches (n, *shape) by input name, all of one n, and
        whether every input was one example (*shape).

        Raises InputError naming the input: a missing or unknown name, batches of different
        sizes, and each input's own problems (``Checker.examples``), prefixed ``input 'name'``.
        """
        sig = self.signature
        names = sig.input_names
        if not isinstance(values, dict):
            if len(names) == 1:
                values = {names[0]: values}
            else:
                raise InputError(f"input: expected a dict of arrays by input name ({_names(names)}), "
                                 f"got {type(values).__name__}")
        unknown = [k for k in values if k not in self.checkers]
        if unknown:
            raise InputError(f"input {unknown[0]!r}: not an input of the model; it takes {_names(names)}")
        missing = [k for k in names if k not in values]
        if missing:
            raise InputError(f"input {missing[0]!r}: missing; the model takes {_names(names)}")
        x, singles = {}, []
        for name in names:
            try:
                x[name], single = self.checkers[name].examples(values[name])
            except InputError as e:
                raise InputError(f"input {name!r}{e.message[len('input'):]}", e.index, e.problem) from None
            singles.append(single)
        sizes = {name: b.shape[0] for name, b in x.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{k!r} {v}" for k, v in sizes.items())
            raise InputError(f"input: expected one batch size for every input, got {shown} examples")
        return x, all(singles)

    def _validate_multi(self, values) -> dict[str, np.ndarray]:
        return self._examples_multi(values)[0]

    def _run_multi(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run float32 batches by input name as they are; the outputs by name, as the model gives them."""
        return dict(zip(self._outputs, self._session_run(self._outputs, x, None)))

    def _predict_multi(self, values) -> dict[str, np.ndarray]:
        """A model of several inputs or outputs: ``{input name: batch (n, *shape) or one example
        (*shape)}`` in, ``{output name: float32 (n, *output shape), or (*output shape) when every
        input was one example}`` out (a dict even for a model of one output)."""
        x, y, single = self._answer_multi(values)
        return {k: v[0] for k, v in y.items()} if single else y

    def _answer_multi(self, values) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], bool]:
        x, single = self._examples_multi(values)
        n = next(iter(x.values())).shape[0]
        y = self._run_multi(x)
        return x, {t.name: y[t.name].reshape(n, *t.shape) for t in self.signature.outputs}, single

    def _labels_of_multi(self, y, output: str | None = None) -> list[str]:
        """The label of each example in ``y``, the output ``output``'s values (a batch, or one
        example's). Raises InputError: no such output, or it is not a classification."""
        labels = self.output_labels.get(output)
        if output not in self.output_labels:
            raise InputError(f"labels: expected the name of an output ({_names(self._outputs)}), got {output!r}")
        if labels is None:
            task = self.signature.output(output).task
            raise InputError(f"labels: output {output!r} is a {task}; only a classification has labels")
        y = np.asarray(y)
        k = len(labels)
        if y.size == 0 or y.size % k:
            raise InputError(f"labels: expected outputs of {k} values each, got shape {y.shape}")
        return [labels[i] for i in y.reshape(-1, k).argmax(axis=1).tolist()]

    def _outside_observed_multi(self, values) -> dict[str, np.ndarray]:
        """Per input, per feature, how many values lie outside the observed range (zeros for an
        input whose range the bundle does not record)."""
        x = self._examples_multi(values)[0]
        return {name: self.checkers[name].outside_observed(b) for name, b in x.items()}


def _names(names: list[str]) -> str:
    return ", ".join(map(repr, names))


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


_TOLERANCE = "(atol {atol:g} + rtol {rtol:g} * |expected|)"


def selfcheck(bundle: str | Path | None = None, threads: int = 1,
              trusted_keys: str | Path | None = None) -> list[dict[str, Any]]:
    """Run every check of a bundle; return one record per check (``name``, ``ok``, ``detail``;
    a failed one also ``exit_code``, what `python -m runtime selfcheck` exits with).

    Checks, in order, stopping at the first that fails: this Python imports numpy and
    onnxruntime; the signature, against the trusted keys (``trusted_keys``, else
    $EDGE_TRUSTED_KEYS, else /etc/edge-model/trusted_keys; with none it passes and says the
    bundle is unverified in origin); the manifest's sha256; every file's sha256; onnxruntime
    can load the model's opset and IR version; the model loads; the golden inputs reproduce
    the golden (Keras) outputs within the manifest's tolerances.
    """
    checks, runner = checked(bundle, threads, trusted_keys)
    if runner is not None:
        runner.close()
    return checks


def checked(bundle: str | Path | None = None, threads: int = 1,
            trusted_keys: str | Path | None = None) -> tuple[list[dict[str, Any]], Runner | None]:
    """``selfcheck``'s records and the very Runner it checked: open when every check passed
    (the caller closes it), else None. Serving that one instead of loading the bundle again
    leaves no time between the check and the use: each file is read and hashed once, and the
    model is loaded from the bytes that were hashed and answers the golden inputs.
    """
    found: dict[str, Any] = {}

    def python() -> str:
        return env.require(bundle)

    def signature() -> str:
        found["bundle"] = b = manifest_mod.locate(bundle)
        found["data"] = manifest_mod.read(b)
        found["origin"] = origin = trust.check(b, found["data"], trust.configured(trusted_keys))
        return origin.detail

    def manifest() -> str:
        found["manifest"] = manifest_mod.load(found["bundle"], found["data"])
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
        found["runner"] = Runner.from_checked(found["bundle"], m, _checked_bytes(found, m["model"]["file"]), threads,
                                              found["origin"])
        return f"{m['model']['file']} loaded ({', '.join(found['runner'].session.get_providers())})"

    def golden() -> str:
        m = found["manifest"]
        return _check_golden(m, _checked_bytes(found, m["golden"]["file"]), found["runner"])

    checks: list[dict[str, Any]] = []
    for name, step in (("python", python), ("signature", signature), ("manifest", manifest), ("hashes", hashes),
                       ("onnxruntime", version), ("load", load), ("golden", golden)):
        try:
            checks.append({"name": name, "ok": True, "detail": step()})
        except (SetupError, BundleError) as e:
            checks.append({"name": name, "ok": False, "detail": e.message, "exit_code": e.exit_code})
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
    try:
        data = json.loads(golden_bytes)
    except ValueError as e:
        raise BundleError(f"{g['file']} | not valid JSON: {e}") from None
    if runner.multi:
        return _check_golden_multi(g, data, runner)
    if isinstance(data, dict) and "inputs" in data:
        return _check_golden_examples(g, data, runner)
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


def _check_golden_examples(g: dict[str, Any], data: dict[str, Any], runner: Runner) -> str:
    """A signature bundle's golden data: {"inputs": batch, "outputs": batch}, nested lists."""
    sig = runner.signature
    try:
        x = np.asarray(data["inputs"], dtype=np.float32)
        want = np.asarray(data["outputs"], dtype=np.float32)
    except (KeyError, ValueError, TypeError) as e:
        raise BundleError(f"{g['file']} | expected inputs and outputs as nested lists of numbers ({e})") from None
    if x.ndim == len(sig.shape) and sig.shape == (1,):
        x = x.reshape(-1, 1)
    if x.shape[1:] != sig.shape or not x.shape[0]:
        raise BundleError(f"{g['file']} | inputs: expected shape (n, {', '.join(map(str, sig.shape))}), got {x.shape}")
    got = runner.session.run(runner._outputs, {runner.input_name: x})[0].astype(np.float64)
    n = x.shape[0]
    if want.size != got.size:
        raise BundleError(f"{g['file']} | outputs: expected {got.size} values ({n} x {sig.output_shape}), "
                          f"got shape {want.shape}")
    got, want = got.reshape(n, -1), want.reshape(n, -1).astype(np.float64)
    atol, rtol = g["atol"], g["rtol"]
    err = _golden_within(g["file"], got, want, atol, rtol)
    detail = f"{n} golden examples, {err.size} outputs within atol {atol:g} + rtol {rtol:g} (max abs err {err.max():.3g})"
    if g.get("labels_equal"):
        if runner.labels is None:
            raise BundleError(f"{g['file']} | labels_equal is set but the model is not a classification")
        _golden_labels(g["file"], got, want, runner.labels)
        detail += f", {n} labels equal"
    return detail


def _golden_within(file: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float, what: str = "") -> np.ndarray:
    """|got - want| (n, k), float64; BundleError naming the worst value beyond atol + rtol * |want|
    (``what``: "output 'name': " before the line's figures, for a model of several outputs)."""
    err = np.abs(got - want)
    allowed = atol + rtol * np.abs(want)
    bad = ~(err <= allowed)
    if bad.any():
        excess = np.where(bad, err - allowed, -np.inf)
        i, k = np.unravel_index(int(np.argmax(np.where(np.isnan(excess), np.inf, excess))), bad.shape)
        raise BundleError(
            f"{file} | {what}{int(bad.sum())} of {bad.size} golden outputs differ: worst at input[{i}] "
            f"output[{k}], got {got[i, k]!r}, expected {want[i, k]!r} {_TOLERANCE.format(atol=atol, rtol=rtol)}"
        )
    return err


def _golden_labels(file: str, got: np.ndarray, want: np.ndarray, labels: list[str], what: str = "") -> None:
    """BundleError naming the first golden example whose label (its largest output) differs."""
    got_l, want_l = got.argmax(axis=1), want.argmax(axis=1)
    differ = np.flatnonzero(got_l != want_l)
    if differ.size:
        i = int(differ[0])
        raise BundleError(f"{file} | {what}{differ.size} of {len(got)} golden labels differ: first at input[{i}], "
                          f"got {labels[got_l[i]]!r}, expected {labels[want_l[i]]!r}")


def _check_golden_multi(g: dict[str, Any], data: Any, runner: Runner) -> str:
    """A model of several inputs or outputs: {"inputs": {name: batch}, "outputs": {name: batch}},
    nested lists; every output held to the tolerances, its failure line naming it."""
    sig = runner.signature
    file = g["file"]
    if not (isinstance(data, dict) and isinstance(data.get("inputs"), dict) and isinstance(data.get("outputs"), dict)):
        raise BundleError(f"{file} | expected {{\"inputs\": {{name: batch}}, \"outputs\": {{name: batch}}}} "
                          "for a model of several inputs or outputs")
    for side, names in (("inputs", sig.input_names), ("outputs", sig.output_tensor_names)):
        if set(data[side]) != set(names):
            raise BundleError(f"{file} | {side}: expected {sorted(names)}, got {sorted(data[side])}")
    x = {}
    try:
        for t in sig.inputs:
            x[t.name] = np.asarray(data["inputs"][t.name], dtype=np.float32)
        want_all = {t.name: np.asarray(data["outputs"][t.name], dtype=np.float32) for t in sig.outputs}
    except (ValueError, TypeError) as e:
        raise BundleError(f"{file} | expected inputs and outputs as nested lists of numbers ({e})") from None
    n = next(iter(x.values())).shape[0] if next(iter(x.values())).ndim else 0
    for t in sig.inputs:
        if x[t.name].shape != (n, *t.shape) or not n:
            raise BundleError(f"{file} | inputs.{t.name}: expected shape (n, {', '.join(map(str, t.shape))}) "
                              f"with n the same for every input, got {x[t.name].shape}")
    got_all = runner._run_multi(x)
    atol, rtol = g["atol"], g["rtol"]
    max_err, total = 0.0, 0
    for t in sig.outputs:
        got = got_all[t.name].astype(np.float64).reshape(n, -1)
        want = want_all[t.name]
        if want.size != got.size:
            raise BundleError(f"{file} | outputs.{t.name}: expected {got.size} values ({n} x {t.shape}), "
                              f"got shape {want.shape}")
        want = want.reshape(n, -1).astype(np.float64)
        err = _golden_within(file, got, want, atol, rtol, f"output {t.name!r}: ")
        max_err, total = max(max_err, float(err.max())), total + err.size
        if g.get("labels_equal") and t.labels is not None:
            _golden_labels(file, got, want, t.labels, f"output {t.name!r}: ")
    detail = (f"{n} golden examples, {total} outputs of {len(sig.outputs)} tensors within atol {atol:g} + "
              f"rtol {rtol:g} (max abs err {max_err:.3g})")
    if g.get("labels_equal"):
        classified = [t.name for t in sig.outputs if t.labels is not None]
        if not classified:
            raise BundleError(f"{file} | labels_equal is set but no output is a classification")
        detail += f", labels equal ({', '.join(classified)})"
    return detail
