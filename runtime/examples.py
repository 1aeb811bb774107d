"""`predict --input FILE`: the examples in a file, as one batch for the model. numpy + stdlib.

Four formats, told apart by their content: ``.npz`` (``numpy.savez``'s zip of arrays, one per
input named as the input: the one format of a model of several inputs; ``read_npz``),
``.npy`` (numpy's own format, recognised by its magic bytes; an array (n, *shape), read
without pickles), JSON lines (a line that starts with ``[`` is one example, nested as the
example or flat) and CSV rows of numbers (one example a row: its features, flat, in signature
order; a first row with no number in it is a header and skipped). Blank lines are skipped.
The values' bounds are checked by the runner after.
"""

from __future__ import annotations

import io
import zipfile
from typing import Callable

import numpy as np

from .errors import InputError

NPY_MAGIC = b"\x93NUMPY"
NPZ_MAGIC = b"PK\x03\x04"  # a zip archive: numpy's .npz


def read_examples(runner, data: bytes, name: str) -> tuple[np.ndarray, Callable[[int], str]]:
    """(the examples of ``data`` as a batch (n, *shape), where example i came from: " line 3"
    or ": input[3]", to place a refusal). Raises InputError naming the file and the line."""
    if data.startswith(NPZ_MAGIC) or name.endswith(".npz"):
        arr = read_npz(data, name, [runner.signature.input_name])[runner.signature.input_name]
        if runner.scalar and arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        return arr, lambda i: f": input[{i}]"
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


def read_npz(data: bytes, name: str, inputs: list[str]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (``np.savez``; no pickles) by input name: one per input of
    ``inputs``, named as it; a model of one input also takes its one array named ``x``.
    Raises InputError naming the file and the array missing, unknown or unreadable."""
    expected = ", ".join(map(repr, inputs)) + (" (or 'x')" if len(inputs) == 1 else "")
    if not data.startswith(NPZ_MAGIC):
        raise InputError(f"--input {name}: not a .npz file (numpy.savez); expected one array per input: {expected}")
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("not a zip archive of arrays")
        with npz:
            keys = list(npz.files)
            if len(inputs) == 1 and keys == ["x"]:
                keys = inputs
                arrays = {inputs[0]: npz["x"]}
            else:
                unknown = [k for k in keys if k not in inputs]
                if unknown:
                    raise InputError(f"--input {name}: array {unknown[0]!r} is not an input of the model; "
                                     f"expected one array per input: {expected}")
                missing = [k for k in inputs if k not in keys]
                if missing:
                    raise InputError(f"--input {name}: no array {missing[0]!r}; expected one array per input: {expected}")
                arrays = {k: npz[k] for k in inputs}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"--input {name}: not a readable .npz file ({' '.join(str(e).split())})") from None
    return arrays


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
