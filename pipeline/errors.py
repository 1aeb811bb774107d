"""The pipeline's exceptions and the exit codes they map to.

Each exception builds its whole message in ``__init__``: the subject, the problem and
what was expected. ``python -m pipeline`` turns them into one line on stderr.
"""

# Exit codes of `python -m pipeline` (and so of the make targets that call it).
EXIT_OK = 0
EXIT_VERIFY_FAILED = 1  # the model was built but is not faithful/accurate enough
EXIT_USAGE = 2  # bad command line or bad config
EXIT_IO = 3  # a file could not be read or written, or a stage's input is missing
EXIT_STATE = 4  # inputs are inconsistent (e.g. bundling a model that did not pass verify)


class PipelineError(Exception):
    """Base of every error the pipeline reports without a traceback."""

    exit_code = EXIT_IO

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(PipelineError):
    exit_code = EXIT_USAGE

    def __init__(self, path, key: str, problem: str):
        where = f"{path}: " if path else ""
        super().__init__(f"config error: {where}{key}: {problem}")
        self.key = key


class StageInputError(PipelineError):
    """A stage's input file is missing or unreadable."""

    exit_code = EXIT_IO

    def __init__(self, path, problem: str, hint: str = ""):
        msg = f"{path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class OutputError(PipelineError):
    """An output could not be written (read-only folder, disk full, ...)."""

    exit_code = EXIT_IO

    def __init__(self, path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")


class VerificationFailed(PipelineError):
    exit_code = EXIT_VERIFY_FAILED


class StateError(PipelineError):
    exit_code = EXIT_STATE
