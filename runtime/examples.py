"""`predict --input FILE`: the examples in a file, as one batch for the model. numpy + stdlib.

Three formats, told apart by their content: ``.npy`` (numpy's own format, recognised by its
magic bytes; an array (n, *shape), read without pickles), JSON lines (a line that starts with
``[`` is one example, nested as the example or flat) and CSV rows of numbers (one example a
row: its features, flat, in signature order; a first row with no number in it is a header
and skipped). Blank lines are skipped. The values' bounds are checked by the runner after.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

from .errors import InputError

NPY_MAGIC = b"\x93NUMPY"


def read_examples(runner, data: bytes, name: str) -> tuple[np.ndarray, Callable[[int], str]]:
    """(the examples of ``data`` as a batch (n, *shape), where example i came from: " line 3"
    or ": input[3]", to place a refusal). Raises InputError naming the file and the line."""
    if data.startswith(NPY_MAGIC):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"--input {name}: not a readable .npy file ({' '.join(str(e).split())})") from None
        if runner.scalar and arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        return arr, lambda i: f": input[{i}]"
    if name.endswith(".npy"):
        raise InputError(f"--input {name}: not a .npy file (no numpy header)")
    checker = runner.checker
    rows, line_nos = [], []
    for no, raw in enumerate(data.split(b"\n"), 1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip():
            continue
        if not rows and not line_nos and _is_header(line):
            line_nos.append(0)  # the header's place: only the first line can be one
            continue
        try:
            rows.append(checker.row(line))
        except ValueError as e:
            raise InputError(f"--input {name} line {no}: {e}") from None
        line_nos.append(no)
    line_nos = [n for n in line_nos if n]
    if not rows:
        raise InputError(f"--input {name}: no examples (expected CSV rows, JSON lines or a .npy file)")
    x = np.array(rows, dtype=np.float64).reshape(len(rows), *runner.signature.shape)
    return x, lambda i: f" line {line_nos[i]}"


def _is_header(line: bytes) -> bool:
    """A CSV header: no cell reads as a number."""
    if line.lstrip().startswith(b"["):
        return False
    for cell in line.split(b","):
        try:
            float(cell)
            return False
        except ValueError:
            pass
    return True
