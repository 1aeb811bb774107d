"""The model's signature: what one example is, what the model answers, and what is refused.

Read from ``manifest["signature"]`` (its shape is checked by ``manifest.check_signature``;
docs/bundle.md) or, for a bundle made before signatures, the tutorial's implied one: one
Celsius value in, one Fahrenheit value out, the valid range from ``valid_input``.
This module owns that table's form: ``Signature.to_dict`` writes it, ``Signature.from_dict``
reads it, and ``Signature.build`` is what the build side describes a model with.
stdlib + numpy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from operator import le
from typing import Any

import numpy as np

from .errors import BundleError, InputError
from .manifest import MANIFEST, TUTORIAL_NAME, check_signature, signature_summary

F32_MAX = float(np.finfo(np.float32).max)
_F32 = np.dtype(np.float32)
SMALL = 1024  # values: one example up to this size is checked in Python lists (``Checker.examples``)
NUMERIC_KINDS = "iuf"  # signed, unsigned, float; bools, strings and objects are refused
# Keys of the predict request and answers beside a named scalar model's two names: POST
# /predict's {"inputs": ...} and its answer's "model", `predict --json`'s "outside_observed".
RESERVED_KEYS = ("inputs", "model", "outside_observed")


def _bounds(values: list, default: float) -> np.ndarray:
    return np.array([default if v is None else float(v) for v in values], dtype=np.float64)


def _written(bounds: np.ndarray) -> list[float | None]:
    """Per-feature bounds as the manifest writes them: floats, null where unbounded."""
    return [None if math.isinf(v) else v for v in bounds.tolist()]


def _listed(values: Any) -> Any:
    """A sequence the build side passes (a list, tuple or numpy array) as a plain list, numpy
    scalars made Python's; anything else as it is, for ``check_signature`` to refuse."""
    if isinstance(values, np.ndarray):
        return values.tolist()
    if isinstance(values, (list, tuple)):
        return [v.item() if isinstance(v, np.generic) else v for v in values]
    return values


def _number_list(values: Any, unbounded: float | None = None) -> Any:
    """Per-feature numbers as the manifest writes them: floats, and ``unbounded`` (-inf for a
    valid min, inf for a max) as null; anything else as it is, for the checks to refuse."""
    values = _listed(values)
    if not isinstance(values, list):
        return values
    return [None if unbounded is not None and v == unbounded
            else float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]


def _unwritable(d: dict[str, Any]) -> str | None:
    """What ``check_signature`` lets through in ``d`` but ``to_dict`` could not write back as
    given (JSON has no NaN nor infinity, and a null bound means unbounded): the message, or None."""
    if d["task"] != "classification" and d["labels"] is not None:
        return f"{MANIFEST} | signature.labels: expected null for a {d['task']}, got {short(d['labels'])}"
    d = {**d, "features": d["input"]["features"]}
    return _unwritable_ranges(d)


def _unwritable_ranges(t: dict[str, Any], where: str = "") -> str | None:
    """A valid or observed bound of the table ``t`` (with ``features``) that JSON cannot hold: the message, or None."""
    features = t["features"]
    for rng, end in (("valid", "min"), ("valid", "max"), ("observed", "min"), ("observed", "max")):
        values = (t[rng] or {}).get(end) or []
        for j, v in enumerate(values):
            if v is not None and not math.isfinite(v):
                what = "a finite number" if rng == "observed" else f"a finite number or {'-' if end == 'min' else ''}inf"
                return (f"{MANIFEST} | signature.{where}{rng}.{end}: expected {what} per feature, "
                        f"got {v!r} for {features[j]!r}")
    return None


def short(values: Any, limit: int = 60) -> str:
    text = repr(values)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number_text(v: float | int, f32: bool = False) -> str:
    """A value as a message shows it: 120 for 120 or 120.0, the shortest repr otherwise."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    if f32 and isinstance(v, float) and math.isfinite(v):
        return str(np.float32(v))  # the shortest text that reads back to that float32
    return repr(v)


def shape_text(shape: tuple[int, ...], batch: bool = False) -> str:
    dims = (["n"] if batch else []) + [str(d) for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


@dataclass(frozen=True, eq=False)
class Signature:
    """One example's shape and feature names, the output's, the task and labels, and the
    per-feature valid (refused outside) and observed (counted outside) ranges."""

    model_name: str
    task: str  # "regression" or "classification"
    output_kind: str  # "values", "logits" or "probabilities"
    labels: list[str] | None  # classification: one name per output, in index order
    input_name: str
    output_name: str
    shape: tuple[int, ...]  # one example, without the batch dimension
    output_shape: tuple[int, ...]
    features: list[str]  # prod(shape) names, C order
    output_names: list[str] | None
    valid_min: np.ndarray  # float64 (features,), -inf where unbounded
    valid_max: np.ndarray
    # float64 (features,), the manifest's numbers exactly (``Checker`` rounds them to float32,
    # the input's type, to compare); None when the bundle records none.
    observed_min: np.ndarray | None
    observed_max: np.ndarray | None
    declared: bool  # the manifest has a signature (False: a bundle made before them)
    summary: dict[str, Any]  # what `info` and GET /info show (manifest.signature_summary)

    multi = False  # one input and one output (``MultiSignature``: several, bound by name)

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> "Signature | MultiSignature":
        """The signature of a loaded manifest: a ``MultiSignature`` when its table lists
        ``inputs`` (a model of several inputs or outputs), else a ``Signature``."""
        model = manifest["model"]
        name = model.get("name") or TUTORIAL_NAME
        sig = manifest.get("signature")
        if sig is not None and "inputs" in sig:
            return MultiSignature.from_dict(sig, name)
        if sig is None:
            v = manifest["valid_input"]
            return cls(name, "regression", "values", None, model["input"]["name"], model["output"]["name"],
                       (1,), (1,), ["celsius"], ["fahrenheit"], _bounds([v["min_celsius"]], -math.inf),
                       _bounds([v["max_celsius"]], math.inf), None, None, False, signature_summary(manifest))
        return cls.from_dict(sig, name)

    @classmethod
    def from_dict(cls, d: dict[str, Any], model_name: str) -> "Signature":
        """The signature that a manifest's ``signature`` table ``d`` describes (one that
        ``manifest.check_signature`` passed), of the model named ``model_name``: the inverse of
        ``to_dict``. A classification without ``labels`` takes its output names as labels; a
        regression has none.
        """
        inp, out = d["input"], d["output"]
        task = d["task"]
        labels = d.get("labels")
        if task == "classification" and labels is None:
            labels = out.get("names")
        names = out.get("names")
        observed = d.get("observed")
        return cls(
            model_name, task, d.get("output_kind", "values"), list(labels) if task == "classification" else None,
            inp["name"], out["name"], tuple(inp["shape"][1:]), tuple(out["shape"][1:]), list(inp["features"]),
            None if names is None else list(names), _bounds(d["valid"]["min"], -math.inf),
            _bounds(d["valid"]["max"], math.inf),
            None if observed is None else np.array(observed["min"], np.float64),
            None if observed is None else np.array(observed["max"], np.float64),
            True, signature_summary({"model": {"name": model_name}, "signature": d}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``signature`` table for this signature, as bundles write it (docs/bundle.md),
        in plain JSON types: task, labels, output_kind, input and output (name, dtype, shape with
        the batch dimension -1 first, the feature and output names), the valid range per feature
        (null where unbounded) and the observed one (null when unknown). ``from_dict`` reads it
        back to an equal Signature.
        """
        return {
            "task": self.task,
            "labels": None if self.labels is None else list(self.labels),
            "output_kind": self.output_kind,
            "input": {"name": self.input_name, "dtype": "float32", "shape": [-1, *self.shape],
                      "features": list(self.features)},
            "output": {"name": self.output_name, "dtype": "float32", "shape": [-1, *self.output_shape],
                       "names": None if self.output_names is None else list(self.output_names)},
            "valid": {"min": _written(self.valid_min), "max": _written(self.valid_max)},
            "observed": None if self.observed_min is None else {
                "min": [float(v) for v in self.observed_min.tolist()],
                "max": [float(v) for v in self.observed_max.tolist()]},
        }

    @classmethod
    def build(cls, *, model_name: str, task: str, output_kind: str, labels, input_name: str, output_name: str,
              shape, output_shape, features, output_names, valid_min, valid_max, observed_min=None,
              observed_max=None) -> "Signature":
        """A model's signature as the build side describes it, checked as a device will check
        its ``to_dict()`` in the manifest (``manifest.check_signature``).

        Args:
            model_name: the model's name (the manifest's ``model.name``), not empty.
            task: "regression" or "classification"; output_kind: "values", "logits" or "probabilities".
            labels: a classification's class names, one per output in index order (None: its
                output names); None for a regression.
            input_name, output_name: the ONNX model's input and output tensors.
            shape, output_shape: one example's input and output shape, without the batch dimension.
            features: prod(shape) names, C order; output_names: prod(output_shape) names, or None.
            valid_min, valid_max: per feature, the range outside which input is refused (floats;
                -inf and inf where unbounded).
            observed_min, observed_max: per feature, the training rows' range (finite floats),
                or None (default) when unknown.

        Raises:
            ValueError: one line naming the first key that is wrong: ``check_signature``'s message,
                or a value the manifest cannot hold (NaN, an infinite observed bound, a min of inf,
                a max of -inf, labels for a regression, an empty model name).
        """
        if not (isinstance(model_name, str) and model_name):
            raise ValueError(f"{MANIFEST} | model.name: expected a non-empty string, got {short(model_name)}")

        def batched(dims: Any) -> Any:
            dims = _listed(dims)
            return [-1, *dims] if isinstance(dims, list) else dims

        d = {
            "task": task, "labels": _listed(labels), "output_kind": output_kind,
            "input": {"name": input_name, "dtype": "float32", "shape": batched(shape), "features": _listed(features)},
            "output": {"name": output_name, "dtype": "float32", "shape": batched(output_shape),
                       "names": _listed(output_names)},
            "valid": {"min": _number_list(valid_min, -math.inf), "max": _number_list(valid_max, math.inf)},
            "observed": None if observed_min is None and observed_max is None else {
                "min": _number_list(observed_min), "max": _number_list(observed_max)},
        }
        try:
            check_signature(d)
        except BundleError as e:
            raise ValueError(e.message) from None
        problem = _unwritable(d)
        if problem:
            raise ValueError(problem)
        return cls.from_dict(d, model_name)

    @property
    def scalar(self) -> bool:
        """One value in, one value out (the tutorial's model, or any such): the scalar fast path."""
        return self.shape == (1,) and self.output_shape == (1,)

    @property
    def named_scalar(self) -> bool:
        """A scalar model whose one feature and one output are named (the tutorial's: celsius,
        fahrenheit): over HTTP it also takes ``{"<feature>": number | [numbers]}`` and answers
        ``{"<output name>": [...], "model": ...}``, and `predict --json` prints the same two names.

        Not when those names would collide with the keys the requests and answers use
        themselves, or with each other: such a model takes ``{"inputs": ...}`` only.
        """
        if not self.scalar or not self.output_names:
            return False
        feature, output = self.features[0], self.output_names[0]
        return feature != output and feature not in RESERVED_KEYS and output not in RESERVED_KEYS

    @property
    def size(self) -> int:
        return len(self.features)


@dataclass(frozen=True, eq=False)
class InputSpec:
    """One input tensor of a ``MultiSignature``: what ``Checker`` reads off a ``Signature``
    (shape, features, size, the valid and observed ranges), under the tensor's name."""

    name: str
    shape: tuple[int, ...]  # one example, without the batch dimension
    features: list[str]  # prod(shape) names, C order
    valid_min: np.ndarray  # float64 (features,), -inf where unbounded
    valid_max: np.ndarray
    observed_min: np.ndarray | None  # float64 (features,), or None when unknown
    observed_max: np.ndarray | None

    @property
    def size(self) -> int:
        return len(self.features)

    @classmethod
    def from_dict(cls, t: dict[str, Any]) -> "InputSpec":
        observed = t.get("observed")
        return cls(t["name"], tuple(t["shape"][1:]), list(t["features"]), _bounds(t["valid"]["min"], -math.inf),
                   _bounds(t["valid"]["max"], math.inf),
                   None if observed is None else np.array(observed["min"], np.float64),
                   None if observed is None else np.array(observed["max"], np.float64))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": "float32", "shape": [-1, *self.shape], "features": list(self.features),
                "valid": {"min": _written(self.valid_min), "max": _written(self.valid_max)},
                "observed": None if self.observed_min is None else {
                    "min": [float(v) for v in self.observed_min.tolist()],
                    "max": [float(v) for v in self.observed_max.tolist()]}}


@dataclass(frozen=True, eq=False)
class OutputSpec:
    """One output tensor of a ``MultiSignature``: its shape, value names, task and labels."""

    name: str
    shape: tuple[int, ...]  # one example's, without the batch dimension
    names: list[str] | None  # prod(shape) names, or None
    task: str  # "regression" or "classification"
    output_kind: str  # "values", "logits" or "probabilities"
    labels: list[str] | None  # a classification's: one per value (its names when the table has none)

    @classmethod
    def from_dict(cls, t: dict[str, Any]) -> "OutputSpec":
        task, names = t["task"], t.get("names")
        labels = (t.get("labels") or names) if task == "classification" else None
        return cls(t["name"], tuple(t["shape"][1:]), None if names is None else list(names), task,
                   t.get("output_kind", "values"), None if labels is None else list(labels))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": "float32", "shape": [-1, *self.shape],
                "names": None if self.names is None else list(self.names), "task": self.task,
                "output_kind": self.output_kind, "labels": None if self.labels is None else list(self.labels)}


@dataclass(frozen=True, eq=False)
class MultiSignature:
    """A model of several inputs or outputs, each bound by its tensor name: one ``InputSpec``
    per input (its own features and ranges, checked by its own ``Checker``) and one
    ``OutputSpec`` per output (its own task and labels), in the manifest's order."""

    model_name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    summary: dict[str, Any]  # what `info` and GET /info show (manifest.signature_summary)
    declared: bool = True

    multi = True
    scalar = False
    named_scalar = False

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_tensor_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> InputSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> OutputSpec:
        return next(t for t in self.outputs if t.name == name)

    @classmethod
    def from_dict(cls, d: dict[str, Any], model_name: str) -> "MultiSignature":
        """The signature a manifest's ``signature`` table ``d`` with ``inputs`` and ``outputs``
        describes (one ``manifest.check_signature`` passed): the inverse of ``to_dict``."""
        return cls(model_name, tuple(InputSpec.from_dict(t) for t in d["inputs"]),
                   tuple(OutputSpec.from_dict(t) for t in d["outputs"]),
                   signature_summary({"model": {"name": model_name}, "signature": d}))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``signature`` table (docs/bundle.md): ``inputs`` and ``outputs``, lists
        of tensor tables in plain JSON types; ``from_dict`` reads it back to an equal signature."""
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def build(cls, *, model_name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> "MultiSignature":
        """A model of several inputs or outputs as the build side describes it, checked as a
        device will check its ``to_dict()`` in the manifest.

        Args:
            model_name: the model's name (the manifest's ``model.name``), not empty.
            inputs: per input tensor, in order, a dict with ``name``, ``shape`` (one example,
                no batch dimension), ``features``, ``valid_min``, ``valid_max`` and optionally
                ``observed_min``, ``observed_max`` (as ``Signature.build``'s arguments of those names).
            outputs: per output tensor, a dict with ``name``, ``shape``, ``names`` (or None),
                ``task``, ``output_kind`` and ``labels`` (or None).

        Raises:
            ValueError: one line naming the first key that is wrong (``check_signature``'s
                message), or a value the manifest cannot hold, as ``Signature.build``.
        """
        if not (isinstance(model_name, str) and model_name):
            raise ValueError(f"{MANIFEST} | model.name: expected a non-empty string, got {short(model_name)}")
        for side, tensors in (("inputs", inputs), ("outputs", outputs)):
            if not (isinstance(tensors, (list, tuple)) and all(isinstance(t, dict) for t in tensors)):
                raise ValueError(f"{MANIFEST} | signature.{side}: expected a list of tensor dicts, got {short(tensors)}")

        def batched(dims: Any) -> Any:
            dims = _listed(dims)
            return [-1, *dims] if isinstance(dims, list) else dims

        d = {
            "inputs": [{
                "name": t.get("name"), "dtype": "float32", "shape": batched(t.get("shape")),
                "features": _listed(t.get("features")),
                "valid": {"min": _number_list(t.get("valid_min"), -math.inf),
                          "max": _number_list(t.get("valid_max"), math.inf)},
                "observed": None if t.get("observed_min") is None and t.get("observed_max") is None else {
                    "min": _number_list(t.get("observed_min")), "max": _number_list(t.get("observed_max"))},
            } for t in inputs],
            "outputs": [{
                "name": t.get("name"), "dtype": "float32", "shape": batched(t.get("shape")),
                "names": _listed(t.get("names")), "task": t.get("task"), "output_kind": t.get("output_kind"),
                "labels": _listed(t.get("labels")),
            } for t in outputs],
        }
        try:
            check_signature(d)
        except BundleError as e:
            raise ValueError(e.message) from None
        for i, t in enumerate(d["outputs"]):
            if t["task"] != "classification" and t["labels"] is not None:
                raise ValueError(f"{MANIFEST} | signature.outputs[{i}].labels: expected null for a {t['task']}, "
                                 f"got {short(t['labels'])}")
        for i, t in enumerate(d["inputs"]):
            problem = _unwritable_ranges(t, f"inputs[{i}].")
            if problem:
                raise ValueError(problem)
        return cls.from_dict(d, model_name)


class Checker:
    """Validates examples against a signature: shape, numbers, the valid range per feature.

    ``sig`` is a ``Signature`` or a ``MultiSignature``'s ``InputSpec`` (one input's): the
    checker reads only its shape, features, size and ranges.
    """

    def __init__(self, sig: Signature):
        self.sig = sig
        self.shape = sig.shape
        shaped = (1, *sig.shape)
        # The bounds a value must lie within: the valid range, and within float32's finite
        # range (so NaN and +-inf fail both comparisons). Float32 input is held to the bounds
        # rounded to float32 (so -273.15 typed as float32 is accepted).
        lo = np.maximum(sig.valid_min, -F32_MAX)
        hi = np.minimum(sig.valid_max, F32_MAX)
        self.lo, self.hi = lo.reshape(shaped), hi.reshape(shaped)
        self.lo32, self.hi32 = self.lo.astype(np.float32), self.hi.astype(np.float32)
        self.uniform = bool((lo == lo[0]).all() and (hi == hi[0]).all())  # min/max of the whole batch will do
        self.ulo, self.uhi = float(lo[0]), float(hi[0])
        self.ulo32, self.uhi32 = float(np.float32(lo[0])), float(np.float32(hi[0]))
        self.lo_list, self.hi_list = lo.tolist(), hi.tolist()
        self.one = (1, *sig.shape)  # a batch of one example
        self.lo32_list, self.hi32_list = self.lo32.reshape(-1).tolist(), self.hi32.reshape(-1).tolist()
        if sig.observed_min is not None:  # float32, as the input it is compared with
            self.obs_lo = sig.observed_min.astype(np.float32).reshape(shaped)
            self.obs_hi = sig.observed_max.astype(np.float32).reshape(shaped)
        else:
            self.obs_lo = self.obs_hi = None

    def examples(self, values) -> tuple[np.ndarray, bool]:
        """``values`` as a float32 batch (n, *shape), and whether it was one example (*shape).

        Raises InputError: not numbers, empty, the wrong shape or number of features, NaN,
        infinite, beyond float32 or outside a feature's valid range (``index`` is the example).
        """
        if type(values) is np.ndarray and values.dtype is _F32 and values.size <= SMALL:
            # The hot path (one small float32 example, batched or not, as a device calls it):
            # the fewest steps, since each costs more beside the onnxruntime call than alone.
            shape = values.shape
            single = shape == self.shape
            if (single or shape == self.one) and self.within(values.ravel().tolist(), True):
                return (values.reshape(self.one) if single else values), single
        try:
            arr = values if type(values) is np.ndarray else np.asarray(values)
        except (ValueError, TypeError, RecursionError) as e:
            raise InputError(f"input: expected numbers, got {short(values)} ({' '.join(str(e).split())})") from None
        if arr.dtype.kind not in NUMERIC_KINDS:
            raise InputError(f"input: expected numbers, got {short(values)} (dtype {arr.dtype})")
        if arr.shape == self.shape or (not arr.shape and self.shape == (1,)):
            batch, single = arr.reshape(1, *self.shape), True
        elif arr.shape[1:] == self.shape and arr.shape[0]:
            batch, single = arr, False
        elif arr.size == 0:
            raise InputError("input: empty, expected at least one example")
        else:
            problem = self.shape_problem(arr.shape)
            raise InputError(problem if problem.startswith("input") else f"input: {problem}", problem=problem)
        f32 = batch.dtype == np.float32
        if batch.size <= SMALL and batch.shape[0] == 1:
            # One small example: Python's C loops over a list beat numpy's reductions here,
            # which also slow the onnxruntime call that follows (measured: 3 us + 5 us at 64 values).
            ok = self.within(batch.ravel().tolist(), f32)
        elif self.uniform:
            mn, mx = batch.min(), batch.max()  # NaN propagates into both
            ok = (self.ulo32 if f32 else self.ulo) <= mn and mx <= (self.uhi32 if f32 else self.uhi)
        else:
            lo, hi = (self.lo32, self.hi32) if f32 else (self.lo, self.hi)
            ok = bool((batch >= lo).all() and (batch <= hi).all())
        if not ok:
            self.refuse(batch)
        return (batch if f32 else batch.astype(np.float32)), single

    def within(self, vals: list, f32: bool) -> bool:
        """Whether every number of ``vals``, one example's values flat in C order, lies within
        its feature's bounds (NaN does not); ``f32``: the values were float32 (``vals`` is sorted
        in place when the bounds are uniform)."""
        if self.uniform:
            # Sorting gives both ends for less than min() and max() cost (a list sort compares
            # floats without the generic comparison; measured: 0.6-0.8x their time up to 256
            # values, the same at 1,024); NaN, which leaves the order undefined, propagates into the sum.
            vals.sort()
            total = sum(vals)
            return ((self.ulo32 if f32 else self.ulo) <= vals[0] and vals[-1] <= (self.uhi32 if f32 else self.uhi)
                    and total == total)
        lo, hi = (self.lo32_list, self.hi32_list) if f32 else (self.lo_list, self.hi_list)
        return all(map(le, lo, vals)) and all(map(le, vals, hi))  # NaN fails every comparison

    def shape_problem(self, shape: tuple[int, ...]) -> str:
        """Why an input of ``shape`` is not one example nor a batch of them."""
        s = self.shape
        if len(s) == 1 and len(shape) <= 2:
            got = 1 if not shape else shape[-1]
            return f"expected {s[0]} features, got {got}"
        batch = len(shape) > len(s)
        return f"input shape {shape_text(shape)} expected {shape_text(s, batch)}"

    def bad_rows(self, batch: np.ndarray) -> np.ndarray:
        """Mask (n,) of the examples of a numeric batch (n, *shape) with a value outside its bounds."""
        lo, hi = (self.lo32, self.hi32) if batch.dtype == np.float32 else (self.lo, self.hi)
        with np.errstate(invalid="ignore"):
            ok = (batch >= lo) & (batch <= hi)
        return ~ok.reshape(ok.shape[0], -1).all(axis=1)

    def row(self, line: bytes) -> np.ndarray:
        """One example from a line of text: a CSV row of numbers (the features, flat, in
        signature order) or a JSON array (nested as the example, or flat). Raises ValueError
        saying what is wrong (the values' bounds are checked later, by ``problem``)."""
        text = line.strip()
        n = self.sig.size
        if text[:1] in (b"[", "["):
            try:
                arr = np.asarray(json.loads(text))
            except (ValueError, TypeError, RecursionError) as e:  # not JSON, ragged, nested too deep
                raise ValueError(f"not a JSON array of numbers ({' '.join(str(e).split())[:80]})") from None
            if arr.dtype.kind not in NUMERIC_KINDS:
                raise ValueError(f"expected numbers in the JSON array, got {short(json.loads(text), 40)}")
            if arr.shape != self.shape and arr.shape != (n,):
                raise ValueError(self.shape_problem(arr.shape))
            return arr.reshape(-1)
        cells = text.split(b"," if isinstance(text, bytes) else ",")
        if len(cells) != n:
            raise ValueError(f"expected {n} features, got {len(cells) if text else 0}")
        try:
            if (b"_" if isinstance(text, bytes) else "_") in text:
                raise ValueError
            return np.array(list(map(float, cells)), dtype=np.float64)
        except ValueError:
            for j, cell in enumerate(cells):
                try:
                    float(cell)
                    ok = (b"_" if isinstance(cell, bytes) else "_") not in cell
                except ValueError:
                    ok = False
                if not ok:
                    shown = cell.strip().decode("utf-8", "backslashreplace") if isinstance(cell, bytes) else cell.strip()
                    raise ValueError(f"feature {self.sig.features[j]!r} = {short(shown, 40)}: expected a number") from None
            raise

    def problem(self, example: np.ndarray) -> str | None:
        """What is wrong with the first bad value of one numeric example (*shape), or None."""
        flat = example.reshape(-1)
        f32 = flat.dtype == np.float32
        lo, hi = (self.lo32, self.hi32) if f32 else (self.lo, self.hi)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~((flat >= lo.reshape(-1)) & (flat <= hi.reshape(-1))))
        if not bad.size:
            return None
        j = int(bad[0])
        v = flat[j].item()
        name = self.sig.features[j]
        if isinstance(v, float) and math.isnan(v):
            return f"feature {name!r} is NaN"
        if isinstance(v, float) and math.isinf(v):
            return f"feature {name!r} = {v!r}: expected a finite number"
        if abs(v) > F32_MAX:
            return f"feature {name!r} = {number_text(v)}: outside float32 range (|x| <= 3.4e38)"
        return (f"feature {name!r} = {number_text(v, f32)}: outside the valid range "
                f"[{self.sig.valid_min[j]:g}, {self.sig.valid_max[j]:g}]")

    def refuse(self, batch: np.ndarray) -> None:
        """Raise InputError for the first bad value of ``batch`` (numeric, (n, *shape))."""
        i = int(np.flatnonzero(self.bad_rows(batch))[0])
        problem = self.problem(batch[i])
        raise InputError(f"input[{i}]: {problem}", index=i, problem=problem)

    def outside_observed(self, x: np.ndarray) -> np.ndarray:
        """Per feature, how many values of the valid float32 batch ``x`` (n, *shape) lie outside
        the observed (training) range; zeros when the bundle records none."""
        if self.obs_lo is None:
            return np.zeros(self.sig.size, dtype=np.int64)
        out = (x < self.obs_lo) | (x > self.obs_hi)
        return out.reshape(out.shape[0], -1).sum(axis=0, dtype=np.int64)
