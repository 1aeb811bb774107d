"""`stream`: one example per input line -> one output line per input line, in order.

A model of one value in and one out (the tutorial's: one Celsius value a line, one Fahrenheit
value answered) takes one number a line; any other model one example a line, a CSV row of
its features or a JSON array, and answers its outputs as a CSV row (a classification: the
label first; ``format_answers``). A model of several inputs or outputs takes one JSON object a
line, one example per input by name (``{"gauge": [[...]], "readings": [...]}``), and answers as
``predict --input FILE.npz`` does: each output as ``name=values`` (a classification's label
first), space-separated (``_Named``).

Lines are read as they arrive (``read1``: no waiting for a full batch when the source is
slow), run through the model in micro-batches of up to ``batch`` lines, written, and
flushed after each batch. A bad line gets ``error: line N: ...`` in its place and the
stream goes on. Memory stays flat: at most one read chunk, one batch and one capped
partial line are held at a time, whatever the length of the stream.
"""

from __future__ import annotations

import json
import math
from typing import BinaryIO

import numpy as np

from .errors import InputError
from .runner import F32_MAX, Runner

READ_SIZE = 1 << 16
MAX_LINE = 256  # bytes; a longer line is refused (no temperature needs more)
OUTPUT_FORMAT = "%.9g"  # 9 significant digits read back to the same float32
IN_CELSIUS = " in degrees Celsius"
NOT_A_NUMBER = "expected a number" + IN_CELSIUS


def parse_celsius(text: str | bytes) -> float:
    """``float(text)`` for one input value; ValueError saying what is wrong with it.

    float() also reads digit separators ('1_000' -> 1000.0, PEP 515). No sensor or script
    writes those, and '1_000' may as well be a garbled '1.000': refused.
    """
    try:
        v = float(text)
    except ValueError:
        raise ValueError(NOT_A_NUMBER) from None
    if ("_" if isinstance(text, str) else b"_") in text:
        raise ValueError(f"{NOT_A_NUMBER} (no digit separators)")
    return v


def format_values(values: list[float]) -> list[str]:
    return [OUTPUT_FORMAT % v for v in values]


def format_answers(runner: Runner, y: np.ndarray) -> list[str]:
    """One line per example of the model's output batch ``y`` (n, *output shape): its values,
    comma-separated, 9 significant digits; a classification's label first."""
    return format_answer_rows(y, None if runner.labels is None else runner.labels_of(y.reshape(y.shape[0], -1)))


def format_answer_rows(y: np.ndarray, labels: list[str] | None) -> list[str]:
    """One line per example of the output batch ``y`` (n, *shape): its values, comma-separated,
    9 significant digits; its label first when ``labels`` (one per example) are given."""
    rows = y.reshape(y.shape[0], -1)
    if rows.shape[1] == 1:
        lines = format_values(rows[:, 0].tolist())
    else:
        lines = [",".join(map(OUTPUT_FORMAT.__mod__, r)) for r in rows.tolist()]
    if labels is not None:
        lines = [f"{label},{line}" for label, line in zip(labels, lines)]
    return lines


def format_named_answers(runner: Runner, y: dict[str, np.ndarray]) -> list[str]:
    """One line per example of a model of several outputs' answers ``y`` ({output name: (n, *shape)}):
    each output as ``name=values`` (``format_answer_rows``: a classification's label first), in the
    signature's order, space-separated."""
    columns = []
    for t in runner.signature.outputs:
        labels = runner.labels_of(y[t.name], t.name) if t.labels is not None else None
        columns.append([f"{t.name}={row}" for row in format_answer_rows(y[t.name], labels)])
    return [" ".join(cells) for cells in zip(*columns)]


def _describe(line: bytes, limit: int = 40) -> str:
    text = line.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


class _Batch:
    """Parse, validate, run and format one batch of lines."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.lo, self.hi = runner.min_celsius, runner.max_celsius
        # A value is "in degrees Celsius" only for a feature named celsius (the data's unit, as
        # the runner's range messages say degC): any other one-feature model's is just a number.
        self.celsius = runner.signature.features == ["celsius"]

    def problem(self, line: bytes) -> str:
        """Why ``line`` is not a valid input (called only for lines the fast path refused)."""
        if len(line) > MAX_LINE:
            return f"line longer than {MAX_LINE} bytes, expected one number"
        if not line.strip():
            return "empty line, expected a number" + (IN_CELSIUS if self.celsius else "")
        try:
            v = parse_celsius(line)
        except ValueError as e:
            return f"{_describe(line)}: {e if self.celsius else str(e).replace(IN_CELSIUS, '')}"
        return f"{_describe(line)}: {self.runner.value_problem(v)}"

    def run(self, lines: list[bytes], first_line_no: int) -> tuple[bytes, int]:
        n = len(lines)
        try:
            if max(map(len, lines)) > MAX_LINE:
                raise ValueError("a line is too long")
            if b"_" in b"".join(lines):  # one check per batch keeps float() the fast path
                raise ValueError("a digit separator")
            x = np.array(list(map(float, lines)), dtype=np.float64)
            parsed_all = True
        except ValueError:
            parsed_all = False
            x = np.empty(n, dtype=np.float64)
            for i, line in enumerate(lines):
                try:
                    x[i] = parse_celsius(line) if len(line) <= MAX_LINE else math.nan
                except ValueError:
                    x[i] = math.nan
        with np.errstate(over="ignore", invalid="ignore"):
            x32 = x.astype(np.float32)
            ok = (np.abs(x) <= F32_MAX) & (x >= self.lo) & (x <= self.hi)  # NaN fails all three
        if parsed_all and ok.all():
            y = self.runner.predict_unchecked(x32.reshape(-1, 1))
            return ("\n".join(format_values(y.tolist())) + "\n").encode(), 0
        out = [""] * n
        good = np.flatnonzero(ok)
        if good.size:
            y = self.runner.predict_unchecked(x32[good].reshape(-1, 1))
            for i, s in zip(good.tolist(), format_values(y.tolist())):
                out[i] = s
        bad = np.flatnonzero(~ok).tolist()
        for i in bad:
            out[i] = f"error: line {first_line_no + i}: {self.problem(lines[i])}"
        return ("\n".join(out) + "\n").encode(), len(bad)


class _Examples:
    """Parse, validate, run and format one batch of lines for a model of any signature."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.checker = runner.checker
        self.max_line = max(MAX_LINE, 48 * runner.signature.size)  # room for every feature's digits

    def run(self, lines: list[bytes], first_line_no: int) -> tuple[bytes, int]:
        n, size = len(lines), self.runner.signature.size
        rows = np.zeros((n, size), dtype=np.float64)
        problems: list[str | None] = [None] * n
        for i, line in enumerate(lines):
            try:
                if len(line) > self.max_line:
                    raise ValueError(f"line longer than {self.max_line} bytes, expected one example")
                if not line.strip():
                    raise ValueError("empty line, expected one example (a CSV row or a JSON array)")
                rows[i] = self.checker.row(line)
            except ValueError as e:
                problems[i] = str(e)
        parsed = np.array([p is None for p in problems])
        x = rows.reshape(n, *self.runner.signature.shape)
        bad = self.checker.bad_rows(x) & parsed
        for i in np.flatnonzero(bad).tolist():
            problems[i] = self.checker.problem(x[i])
        good = np.flatnonzero(parsed & ~bad)
        out = [""] * n
        if good.size:
            x32 = x[good].astype(np.float32)
            for i, text in zip(good.tolist(), format_answers(self.runner, self.runner._run(x32))):
                out[i] = text
        n_bad = 0
        for i, p in enumerate(problems):
            if p is not None:
                out[i] = f"error: line {first_line_no + i}: {p}"
                n_bad += 1
        return ("\n".join(out) + "\n").encode(), n_bad


class _Named:
    """Parse, validate, run and format one batch of lines for a model of several inputs or
    outputs: each line one JSON object, one example per input by name."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.sig = runner.signature
        self.form = "{" + ", ".join(f'"{n}": [...]' for n in self.sig.input_names) + "}"
        # room for every value's digits, and the names and brackets around them
        self.max_line = max(MAX_LINE, sum(48 * t.size + 16 * (len(t.shape) + 1) + len(t.name) for t in self.sig.inputs))

    def example(self, line: bytes) -> dict[str, np.ndarray]:
        """One line's example as float32 batches of one by input name; ValueError saying why not."""
        if len(line) > self.max_line:
            raise ValueError(f"line longer than {self.max_line} bytes, expected one example as {self.form}")
        if not line.strip():
            raise ValueError(f"empty line, expected one example as {self.form}")
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise ValueError(f"{_describe(line)}: not JSON, expected one example as {self.form}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"expected a JSON object, one example per input: {self.form}")
        try:
            x, single = self.runner.examples(doc)
        except InputError as e:
            raise ValueError(e.message) from None
        except RecursionError:  # a value nested too deep for numpy to read
            raise ValueError(f"an input nested too deeply, expected one example as {self.form}") from None
        if not single:
            n = next(iter(x.values())).shape[0]
            raise ValueError(f"a batch of {n} examples, expected one example a line")
        return x

    def run(self, lines: list[bytes], first_line_no: int) -> tuple[bytes, int]:
        out = [""] * len(lines)
        good, examples, n_bad = [], [], 0
        for i, line in enumerate(lines):
            try:
                examples.append(self.example(line))
                good.append(i)
            except ValueError as e:
                out[i] = f"error: line {first_line_no + i}: {e}"
                n_bad += 1
        if good:
            x = {name: np.concatenate([e[name] for e in examples]) for name in self.sig.input_names}
            y = self.runner.predict_unchecked(x)
            y = {t.name: y[t.name].reshape(len(good), *t.shape) for t in self.sig.outputs}
            for i, line in zip(good, format_named_answers(self.runner, y)):
                out[i] = line
        return ("\n".join(out) + "\n").encode(), n_bad


def stream(runner: Runner, fin: BinaryIO, fout: BinaryIO, batch: int = 4096) -> int:
    """Serve ``fin`` to ``fout`` until EOF; return the number of bad lines."""
    if runner.multi:
        worker = _Named(runner)
    else:
        worker = _Batch(runner) if runner.scalar else _Examples(runner)
    max_line = MAX_LINE if runner.scalar and not runner.multi else worker.max_line
    read = getattr(fin, "read1", fin.read)
    pending = b""
    skipping = False  # inside an over-long line: drop bytes until its newline
    line_no = 1
    bad = 0

    def emit(lines: list[bytes]) -> None:
        nonlocal line_no, bad
        for start in range(0, len(lines), batch):
            part = lines[start : start + batch]
            data, n_bad = worker.run(part, line_no)
            fout.write(data)
            line_no += len(part)
            bad += n_bad
        fout.flush()

    while True:
        chunk = read(READ_SIZE)
        if not chunk:
            break
        if skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                continue
            chunk, skipping = chunk[cut + 1 :], False
            pending = b""
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if len(pending) > max_line:
            lines.append(pending)  # refused now (one error line), rest of it skipped
            pending, skipping = b"", True
        if lines:
            emit([ln[:-1] if ln.endswith(b"\r") else ln for ln in lines])
    if pending and not skipping:  # a last line without a newline
        emit([pending[:-1] if pending.endswith(b"\r") else pending])
    return bad
