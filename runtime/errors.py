"""The runner's exceptions; `python -m runtime` maps them to exit codes (docs/exit-codes.md)."""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # the bundle failed a check: hash, onnxruntime version, golden outputs, load
EXIT_BAD_INPUT = 2  # bad input values or command line
EXIT_CANNOT_SERVE = 3  # `serve` cannot listen on its address or read its token file
EXIT_ENVIRONMENT = 5  # this Python cannot run the runner: too old, or numpy/onnxruntime missing
# A device that trusts signing keys refuses a bundle's origin (runtime/trust.py):
EXIT_UNSIGNED = 6  # the bundle has no signature
EXIT_UNTRUSTED_KEY = 7  # it was signed by a key the device does not trust
EXIT_BAD_SIGNATURE = 8  # its manifest changed after signing, or the signature is damaged


class RuntimeFailure(Exception):
    """Base of every error the runner reports as one line, without a traceback."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BundleError(RuntimeFailure):
    """The bundle is missing a file, was altered, or cannot run here."""

    exit_code = EXIT_CHECK_FAILED


class SetupError(RuntimeFailure):
    """This Python cannot run the runner: numpy or onnxruntime is missing or does not import.

    (A Python older than 3.10 is refused by ``runtime/__init__.py`` before this module loads.)
    """

    exit_code = EXIT_ENVIRONMENT


class InputError(RuntimeFailure):
    """An input value is not a valid temperature for this model.

    ``index`` is the position of the first bad value and ``problem`` what is wrong with
    it, when the error is about one value.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, index: int | None = None, problem: str | None = None):
        super().__init__(message)
        self.index = index
        self.problem = problem
