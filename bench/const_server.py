"""The floor of the serving design: `python -m runtime serve` with the model call made a constant.

`python -m bench.const_server [serve options]` runs the very same code path as
`python -m runtime serve` (runtime/serve.py: self-check, listening socket, accept loop,
one thread per connection, request parsing, JSON in and out, metrics, one write per
answer); only ``Runner.predict`` is replaced by an object that returns a ready float32
array (212.0 per value) without validating the input or entering onnxruntime. So the
throughput ratio real/constant is the share of the time the model call costs, and
everything else the two servers do is the same code.

This is a baseline for the benchmark, not a test double: nothing checks its answers.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from runtime import cli, serve  # noqa: E402

CONSTANT_F = np.float32(212.0)


class ConstantRunner:
    """Answers like ``Runner.predict`` in shape and type: float32 (n,), one value per input value."""

    def __init__(self):
        self._one = np.array([CONSTANT_F], dtype=np.float32)

    def predict(self, values) -> np.ndarray:
        if type(values) is list:
            return np.full(len(values), CONSTANT_F, dtype=np.float32)
        return self._one

    def close(self) -> None:
        pass


_real_check_and_load = serve.check_and_load


def constant_check_and_load(bundle, threads, trusted_keys=None):
    """The real self-check and load (same log line, /healthz, /info), then the model call swapped out."""
    model, checks = _real_check_and_load(bundle, threads, trusted_keys)
    if model is not None:
        model.runner.close()
        model = dataclasses.replace(model, runner=ConstantRunner())
    return model, checks


def main(argv: list[str] | None = None) -> int:
    serve.check_and_load = constant_check_and_load  # run() and SIGHUP reloads look it up here
    return cli.main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
