"""`serve`'s endpoints: a request's method, path, headers and body in, the answer out. No sockets.

``App.head`` routes a request by its line and headers (404, 405, the token, an unknown v2
model) and answers every GET; a POST that needs its body gets back its endpoint's label, and
``App.answer`` takes the body (read by the transport, ``serve_http``, within its limits) and
answers it. ``App.__call__`` does both for a body already in hand (the tests). Each answer
is one ``Answer``: status, content type, extra headers, body, and what /metrics counts.

The predict body is decoded and its answer encoded by ``codec`` (the Open Inference Protocol
v2's, KServe's and Triton's, by ``serve_v2``); the model comes from the one
``serve_state.Snapshot`` the caller took for the request.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from . import codec, serve_v2
from .errors import InputError
from .serve_metrics import Metrics
from .serve_state import Snapshot

ENDPOINTS = {"/predict": "POST", "/healthz": "GET", "/info": "GET", "/metrics": "GET"}
ROUTES = {**ENDPOINTS, **serve_v2.ROUTES}  # every endpoint, by the label /metrics counts it under
OPEN = ("/healthz", *serve_v2.OPEN)  # answered without a token
JSON = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Answer(NamedTuple):
    """One answer, as the transport writes it (``Content-Type``, ``Content-Length``, then
    ``headers``) and as /metrics counts it (``endpoint``, ``values``)."""

    status: int
    body: bytes
    endpoint: str  # the route label /metrics counts it under; "other" for none
    ctype: str = JSON
    headers: dict[str, str] | None = None  # after Content-Type and Content-Length
    values: int = 0  # examples answered (edge_model_values_predicted_total)
    close: bool = False  # answered without reading the request's body: the connection cannot go on


def json_answer(status: int, doc: dict, endpoint: str, headers: dict[str, str] | None = None,
                close: bool = False) -> Answer:
    return Answer(status, json.dumps(doc).encode(), endpoint, JSON, headers, 0, close)


def compare_digest(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (hmac's), imported only when a token is in use: hmac loads OpenSSL."""
    import hmac

    return hmac.compare_digest(a, b)


class App:
    """The endpoints, over what every request shares: the limits (``max_values``; all of them
    shown by /info), the metrics and the bearer token (None: none required).

    ``headers`` is the request's header mapping: ``.get(name)`` gives a header's first value
    or None (http.server's message is case-insensitive; a dict must use the canonical case).
    """

    def __init__(self, limits, metrics: Metrics, token: bytes | None = None):
        self.limits, self.metrics, self.token = limits, metrics, token

    def __call__(self, method: str, path: str, headers, body: bytes, snapshot: Snapshot) -> Answer:
        """The answer to a whole request whose body is already read (``b""``: none)."""
        first = self.head(method, path, headers, snapshot)
        return first if isinstance(first, Answer) else self.answer(first, headers, body, snapshot)

    def head(self, method: str, path: str, headers, snapshot: Snapshot) -> Answer | str:
        """The answer when the request line and headers decide it: every GET, and every refusal
        that comes before the body (404, 405, 401, an unknown v2 model; those of a POST say
        ``close``, its body left unread); else the label of the endpoint that needs the body
        ("/predict", "/v2/models/{model}/infer"), to pass to ``answer`` with the body."""
        path = path.split("?", 1)[0]
        found = (path, None, None) if path in ENDPOINTS else serve_v2.route(path)
        if found is None:
            return json_answer(404, {"error": f"no such endpoint {path!r}; endpoints: {', '.join(ROUTES)}"}, "other")
        label, name, version = found
        want = ROUTES[label]
        if method != want:
            return json_answer(405, {"error": f"{path} takes {want}, got {method}"}, label, {"Allow": want})
        if label not in OPEN and not self._authorized(headers):
            return json_answer(401, {"error": "missing or wrong bearer token (Authorization: Bearer ...)"}, label,
                               {"WWW-Authenticate": "Bearer"}, method == "POST")
        if label == "/predict":
            return label
        if label == "/healthz":
            return json_answer(*snapshot.health(), label)
        if label == "/info":
            return json_answer(200, {**snapshot.model.summary, "limits": vars(self.limits)}, label)
        if label == "/metrics":
            return Answer(200, self.metrics.render(snapshot), label, METRICS_TYPE)
        return self._v2(label, name, version, method, snapshot)

    def answer(self, label: str, headers, body: bytes, snapshot: Snapshot) -> Answer:
        """The answer to the POST ``head`` sent here (its ``label``), now with its ``body``."""
        if label == "/predict":
            return self._predict(body, snapshot)
        return self._v2_infer(label, headers, body, snapshot.model)

    def _authorized(self, headers) -> bool:
        token = self.token
        if token is None:
            return True
        given = headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and compare_digest(value.strip().encode(), token)

    # --- the Open Inference Protocol v2 (serve_v2) -------------------------------------------

    def _v2(self, label: str, name: str | None, version: str | None, method: str, snapshot: Snapshot) -> Answer | str:
        model = snapshot.model
        sig = model.signature
        if label == "/v2":
            return json_answer(200, serve_v2.SERVER, label)
        if label == "/v2/health/live":
            return json_answer(200, {"live": True}, label)
        if label == "/v2/health/ready":
            return json_answer(200 if snapshot.healthy else 503, {"ready": snapshot.healthy}, label)
        served = serve_v2.version_of(model.sha256)
        if name != sig.model_name or version not in (None, served):
            what = f"model {name!r}" + (f" version {version!r}" if version is not None else "")
            return json_answer(404, {"error": f"unknown {what}; this server serves model {sig.model_name!r} "
                                              f"version {served!r}"}, label, None, method == "POST")
        if label == "/v2/models/{model}":
            return json_answer(200, serve_v2.model_metadata(sig, model.sha256), label)
        if label == "/v2/models/{model}/ready":
            return json_answer(200 if snapshot.healthy else 503, {"name": sig.model_name, "ready": snapshot.healthy},
                               label)
        return label  # .../infer: its body next

    def _v2_infer(self, label: str, headers, body: bytes, model) -> Answer:
        """POST .../infer: one tensor per input (a model of several inputs or outputs: by name, any
        order), one per output asked for (every output when the request names none)."""
        sig = model.signature
        decode = serve_v2.decode_infer_multi if sig.multi else serve_v2.decode_infer
        try:
            values, request_id, _, outputs = decode(body, sig, self.limits.max_values,
                                                    headers.get(serve_v2.HEADER_LENGTH))
            x, y, _ = model.runner.answer(values)
        except codec.BadRequest as e:
            return json_answer(400, e.doc, label)
        except InputError as e:
            return json_answer(400, codec.refused(e), label)
        if sig.multi:  # outputs: (name, as binary data) of each output to answer
            self._count_outside_multi(model, x)
            answer = serve_v2.encode_infer_multi(sig, model.sha256, y, outputs, request_id)
            return _infer_answer(label, *answer, next(iter(x.values())).shape[0])
        self._count_outside(model, x)  # outputs: whether the one output goes back as binary data
        return _infer_answer(label, *serve_v2.encode_infer(sig, model.sha256, y, request_id, outputs), x.shape[0])

    # --- POST /predict ------------------------------------------------------------------------

    def _predict(self, body: bytes, snapshot: Snapshot) -> Answer:
        model = snapshot.model
        runner = model.runner
        sig = model.signature
        try:
            key, values, count = codec.decode(body, self.limits.max_values,
                                              sig.features[0] if sig.named_scalar else None,
                                              sig.input_names if sig.multi else None)
        except codec.BadRequest as e:
            return json_answer(400, e.doc, "/predict")
        try:
            if key != "inputs":  # a named scalar model's own request (the tutorial's {"celsius": ...}), on the scalar path
                y = runner.predict(values)
                if model.checker.obs_lo is not None:  # valid, so numbers: counted in /metrics
                    self._count_outside(model, np.asarray(values, dtype=np.float32).reshape(-1, 1))
                return Answer(200, codec.encode(y, model.sha256, sig.output_names[0]), "/predict", JSON, None, count)
            if sig.multi:
                return self._predict_multi(model, values)
            x, y, single = runner.answer(values)
        except InputError as e:
            return json_answer(400, codec.refused(e), "/predict")
        self._count_outside(model, x)
        labels = runner.labels_of(y) if sig.labels else None
        return Answer(200, codec.encode_outputs(y, single, labels, model.sha256), "/predict", JSON, None, x.shape[0])

    def _predict_multi(self, model, values) -> Answer:
        """POST /predict for a model of several inputs or outputs: {"inputs": {name: ...}}, the
        values of every input counted against --max-values."""
        runner = model.runner
        if isinstance(values, dict):
            count = sum(map(codec.count_values, values.values()))
            limit = self.limits.max_values
            if count > limit:
                return json_answer(400, {"error": f"input: {count} values, at most {limit} per request (--max-values)"},
                                   "/predict")
        x, y, single = runner.answer(values)  # InputError: _predict's 400
        self._count_outside_multi(model, x)
        labels = {t.name: runner.labels_of(y[t.name], t.name) for t in model.signature.outputs if t.labels is not None}
        return Answer(200, codec.encode_multi(y, single, labels, model.sha256), "/predict", JSON, None,
                      next(iter(x.values())).shape[0])

    # --- /metrics' counts of inputs outside the observed range ---------------------------------

    def _count_outside(self, model, x) -> None:
        """Count the valid batch ``x``'s values outside the observed range, per feature, in /metrics."""
        checker = model.checker
        if checker.obs_lo is None:
            return
        counts = checker.outside_observed(x)
        if counts.any():
            features = model.signature.features
            self.metrics.outside_observed({features[j]: int(counts[j]) for j in counts.nonzero()[0].tolist()})

    def _count_outside_multi(self, model, x: dict) -> None:
        """``_count_outside`` for a model of several inputs: ``x`` by input name, each feature
        counted as ``<input>.<feature>``."""
        counts = {}
        for t in model.signature.inputs:
            checker = model.runner.checkers[t.name]
            if checker.obs_lo is not None:
                c = checker.outside_observed(x[t.name])
                counts.update({f"{t.name}.{t.features[j]}": int(c[j]) for j in c.nonzero()[0].tolist()})
        if counts:
            self.metrics.outside_observed(counts)


def _infer_answer(label: str, answer: bytes, json_length: int | None, n: int) -> Answer:
    """A v2 inference answer of ``n`` examples: JSON, or (``json_length``, the binary tensor data
    extension) its JSON part followed by the tensors' bytes."""
    if json_length is None:
        return Answer(200, answer, label, JSON, None, n)
    return Answer(200, answer, label, "application/octet-stream", {serve_v2.HEADER_LENGTH: json_length}, n)

