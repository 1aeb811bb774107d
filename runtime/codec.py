"""The predict request and answer on the wire: the only part of `serve` that knows the model.

``decode`` turns a POST /predict body into what ``Runner.predict`` takes (which validates it
into the model's float32 input array); ``encode`` renders the model's output array as the
answer's body. A refused body raises ``BadRequest`` with the 400 document. Everything around
them (the HTTP connection, limits, the body's bytes) is the model's business nowhere.

Request: ``{"inputs": batch or one example}`` for any model (the tutorial's too). Answer:
``{"outputs": [...], "labels": [...], "model": sha256}``: the outputs shaped as the input was
(a batch: batch first; one example: its output), ``labels`` for a classification only (a list
for a batch, one string for one example). A model of several inputs or outputs takes
``{"inputs": {"<input name>": batch or one example, ...}}`` and answers ``{"outputs":
{"<output name>": [...], ...}, "labels": {"<classification output>": [...]}, "model": sha256}``
(``encode_multi``). A model of one named feature in and one named value
out (``Signature.named_scalar``) also takes its own request, ``{"<feature>": number | [numbers]}``
-> ``{"<output name>": [...], "model": sha256}``: the tutorial's ``{"celsius": ...}`` ->
``{"fahrenheit": [...]}``. Values are printed with 9 significant digits (they read back to the
model's float32); a value that overflowed float32 is ``null`` (JSON has no infinity).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import InputError
from .stream import OUTPUT_FORMAT


class BadRequest(Exception):
    """A body that cannot be a predict request; ``doc`` is the 400 answer's JSON document."""

    def __init__(self, doc: dict[str, Any]):
        super().__init__(doc["error"])
        self.doc = doc


INPUTS_BODY = 'body: expected {"inputs": [one example, or a batch of them]}'


def named_body(feature: str) -> str:
    """The refusal of a body that is neither request a named scalar model takes: for the
    tutorial's, ``body: expected {"celsius": number or [numbers]} or {"inputs": [...]}``."""
    return f'body: expected {{{key_text(feature)}: number or [numbers]}} or {{"inputs": [...]}}'


def inputs_body(names: list[str]) -> str:
    """The refusal of a body without ``inputs`` for a model of several inputs or outputs, naming
    its inputs: ``body: expected {"inputs": {"image": [...], "readings": [...]}} (one example or a
    batch per input, by name)``; a model of one input takes its batch alone too."""
    by_name = ", ".join(f"{key_text(n)}: [...]" for n in names)
    alone = ' or {"inputs": [...]}' if len(names) == 1 else ""
    return f'body: expected {{"inputs": {{{by_name}}}}}{alone} (one example or a batch per input, by name)'


@lru_cache(maxsize=16)
def key_text(name: str) -> str:
    """``name`` as a JSON object key (``"celsius"``), made once per name: the scalar answer's hot path."""
    return json.dumps(name, ensure_ascii=False)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
        raise BadRequest({"error": f"body: not valid JSON ({e})"}) from None


def decode(body: bytes, max_values: int, feature: str | None, inputs: list[str] | None = None
           ) -> tuple[str, Any, int]:
    """(which request it is: ``"inputs"``, or ``feature`` for a named scalar model's own; the
    model input for ``Runner.predict``; how many values it holds) from a request body.

    Args:
        feature: the one feature of a named scalar model (``Signature.named_scalar``; "celsius"
            for the tutorial's), whose name is a request too; None: ``{"inputs": ...}`` only.
        inputs: the input names of a model of several inputs or outputs, for the refusal of a
            body without ``inputs`` (None: any other model).

    Raises BadRequest: not JSON, neither request, more than ``max_values`` values.
    """
    doc = parse_json(body)
    if isinstance(doc, dict) and "inputs" in doc:
        key = "inputs"
    elif isinstance(doc, dict) and feature is not None and feature in doc:
        key = feature
    else:
        raise BadRequest({"error": named_body(feature) if feature is not None
                          else INPUTS_BODY if inputs is None else inputs_body(inputs)})
    values = doc[key]
    count = count_values(values)  # 1 for a dict: a model of several inputs counts its own (serve_app)
    if count > max_values:
        raise BadRequest({"error": f"input: {count} values, at most {max_values} per request (--max-values)"})
    return key, values, count


def count_values(values: Any) -> int:
    """How many numbers a (rectangular) nested list holds, from the first element of each level:
    enough for the --max-values bound before numpy sees it (a ragged list is refused later)."""
    n = 1
    while isinstance(values, list):
        n *= len(values)
        values = values[0] if values else None
    return n


def number_texts(y: np.ndarray) -> list[str]:
    """``y``'s values, flat, as JSON numbers with 9 significant digits; ``null`` where not finite."""
    values = y.reshape(-1).tolist()
    if np.isfinite(y).all():
        return list(map(OUTPUT_FORMAT.__mod__, values))
    return [OUTPUT_FORMAT % v if v - v == 0 else "null" for v in values]


def nested(y: np.ndarray) -> str:
    """The array ``y`` as a nested JSON array of numbers (``number_texts``' format)."""
    cells = number_texts(y)
    for d in reversed(y.shape[1:]):  # group the innermost dimension first
        cells = ["[" + ",".join(cells[i : i + d]) + "]" for i in range(0, len(cells), d)]
    return "[" + ",".join(cells) + "]"


def encode_outputs(y: np.ndarray, single: bool, labels: list[str] | None, model_sha256: str) -> bytes:
    """The answer's body for an ``inputs`` request: the outputs ``y`` (n, *output shape), one
    example's alone when ``single``, and the labels (a classification)."""
    out = nested(y[0]) if single else nested(y)
    if labels is None:
        return f'{{"outputs":{out},"model":"{model_sha256}"}}'.encode()
    shown = json.dumps(labels[0] if single else labels, separators=(",", ":"))
    return f'{{"outputs":{out},"labels":{shown},"model":"{model_sha256}"}}'.encode()


def encode_multi(y: dict[str, np.ndarray], single: bool, labels: dict[str, list[str]], model_sha256: str) -> bytes:
    """The answer's body for a model of several inputs or outputs: ``{"outputs": {name: ...},
    "labels": {name: ...}, "model": sha256}``, each output as ``encode_outputs`` shapes it (one
    example's alone when ``single``), ``labels`` for its classification outputs only."""
    outs = ",".join(f"{key_text(k)}:{nested(v[0]) if single else nested(v)}" for k, v in y.items())
    body = f'{{"outputs":{{{outs}}}'
    if labels:
        shown = ",".join(f"{key_text(k)}:{json.dumps(v[0] if single else v, separators=(',', ':'))}"
                         for k, v in labels.items())
        body += f',"labels":{{{shown}}}'
    return f'{body},"model":"{model_sha256}"}}'.encode()


def refused(e: InputError) -> dict[str, Any]:
    """The 400 document for input the model refused (``Runner.predict``'s InputError)."""
    return {"error": e.message, "index": e.index}


def encode(y: np.ndarray, model_sha256: str, output: str) -> bytes:
    """The answer's body to a named scalar model's own request: its output ``y`` (float32,
    shape (n,)) under the output's name (``output``: "fahrenheit" for the tutorial's)."""
    values_out = y.tolist()
    if np.isfinite(y).all():
        out = ",".join(map(OUTPUT_FORMAT.__mod__, values_out))
    else:
        out = ",".join(OUTPUT_FORMAT % v if v - v == 0 else "null" for v in values_out)
    return f'{{{key_text(output)}:[{out}],"model":"{model_sha256}"}}'.encode()
