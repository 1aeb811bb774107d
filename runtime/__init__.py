"""The device runner: ``from runtime import Runner``. stdlib + numpy + onnxruntime only.

``Runner.from_bundle(path)`` checks the bundle's hashes and onnxruntime version, then
loads the model; ``runner.predict(values)`` returns Fahrenheit as a float32 array (n,).
``python -m runtime --help`` is the command line.

This file and __main__.py must parse on any Python, 2.7 included, so that an old one
gets the one line below instead of a SyntaxError: no f-strings, no annotations, ASCII.
"""

import sys

if sys.version_info < (3, 10):  # the code uses 3.10 syntax (int | None); numpy >= 2.1 needs 3.10 too
    _TOO_OLD = "error: the runner needs Python >= 3.10; %s is Python %s" % (
        sys.executable or "this interpreter", sys.version.split()[0])
    # `python -m runtime` imports this package while sys.argv[0] is "-m" (Python 2: "-c",
    # with runpy doing the import): a command gets one line and exit 5, a library import
    # an ImportError.
    _argv0 = getattr(sys, "argv", [""])[:1]
    if _argv0 == ["-m"] or (_argv0 == ["-c"] and "runpy" in sys.modules):
        sys.stderr.write(_TOO_OLD + "\n")
        sys.exit(5)  # errors.EXIT_ENVIRONMENT, which cannot be imported on this Python
    raise ImportError(_TOO_OLD[len("error: "):])

import os  # noqa: E402

# onnxruntime (1.32) otherwise writes a telemetry database and a device ID under
# ~/.cache/Microsoft at every model load: megabytes on a device's SD card from every cron
# `predict`. Read at its import, so set here, before any; an explicit setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .errors import BundleError, InputError, RuntimeFailure, SetupError  # noqa: E402

__all__ = ["Runner", "selfcheck", "BundleError", "InputError", "RuntimeFailure", "SetupError"]


def __getattr__(name):
    """``Runner`` and ``selfcheck`` on first use (PEP 562): they need numpy, and
    ``python -m runtime --help`` or the check that reports a missing numpy must not."""
    if name in ("Runner", "selfcheck"):
        from . import runner

        globals()[name] = value = getattr(runner, name)
        return value
    raise AttributeError("module 'runtime' has no attribute %r" % name)
