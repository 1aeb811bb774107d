"""The predict request and answer on the wire: the only part of `serve` that knows the model.

``decode`` turns a POST /predict body into what ``Runner.predict`` takes (which validates it
into the model's float32 input array); ``encode`` renders the model's output array as the
answer's body. A refused body raises ``BadRequest`` with the 400 document. Everything around
them (the HTTP connection, limits, the body's bytes) is the model's business nowhere.

Request: ``{"celsius": number | [numbers]}``. Answer: ``{"fahrenheit": [...], "model": sha256}``,
values printed with 9 significant digits (they read back to the model's float32); a value
that overflowed float32 is ``null`` (JSON has no infinity).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .errors import InputError
from .stream import OUTPUT_FORMAT


class BadRequest(Exception):
    """A body that cannot be a predict request; ``doc`` is the 400 answer's JSON document."""

    def __init__(self, doc: dict[str, Any]):
        super().__init__(doc["error"])
        self.doc = doc


def decode(body: bytes, max_values: int) -> tuple[Any, int]:
    """(the model input for ``Runner.predict``, how many values it holds) from a request body.

    Raises BadRequest: not JSON, not ``{"celsius": ...}``, more than ``max_values`` values.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
        raise BadRequest({"error": f"body: not valid JSON ({e})"}) from None
    if not isinstance(doc, dict) or "celsius" not in doc:
        raise BadRequest({"error": 'body: expected {"celsius": number or [numbers]}'})
    values = doc["celsius"]
    count = len(values) if isinstance(values, list) else 1
    if count > max_values:
        raise BadRequest({"error": f"input: {count} values, at most {max_values} per request (--max-values)"})
    return values, count


def refused(e: InputError) -> dict[str, Any]:
    """The 400 document for input the model refused (``Runner.predict``'s InputError)."""
    return {"error": e.message, "index": e.index}


def encode(y: np.ndarray, model_sha256: str) -> bytes:
    """The answer's body for the model's output ``y`` (float32, shape (n,))."""
    values_out = y.tolist()
    if np.isfinite(y).all():
        out = ",".join(map(OUTPUT_FORMAT.__mod__, values_out))
    else:
        out = ",".join(OUTPUT_FORMAT % v if v - v == 0 else "null" for v in values_out)
    return f'{{"fahrenheit":[{out}],"model":"{model_sha256}"}}'.encode()
