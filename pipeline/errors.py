"""The pipeline's exceptions and the exit codes they map to.

Each exception builds its whole message in ``__init__``: the subject, the problem and
what was expected. ``python -m pipeline`` turns them into one line on stderr.
"""

# Exit codes of `python -m pipeline` (and so of the make targets that call it).
EXIT_OK = 0
EXIT_VERIFY_FAILED = 1  # the model was built but is not faithful/accurate enough
EXIT_USAGE = 2  # bad command line, bad config or bad data (a data file the config names)
EXIT_IO = 3  # a file could not be read or written, or a stage's input is missing
EXIT_STATE = 4  # inputs are inconsistent (e.g. bundling a model that did not pass verify)
EXIT_ENVIRONMENT = 5  # this Python lacks a package the pipeline needs (not the project's venv)


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


class DataError(PipelineError):
    """A data file the config names is malformed: one line naming the file, where in it
    (row and column, or the .npz key) and what was expected. Raised before TensorFlow loads."""

    exit_code = EXIT_USAGE

    def __init__(self, path, where: str, problem: str):
        where = f"{where}: " if where else ""
        super().__init__(f"data error: {path}: {where}{problem}")
        self.path = str(path)


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


# Import name -> the requirements.txt package that provides it, where they differ.
_PACKAGES = {"absl": "absl-py", "ai_edge_litert": "ai-edge-litert", "tensorflow": "tensorflow-cpu",
             "google": "protobuf", "PIL": "pillow"}


class MissingDependency(PipelineError):
    """A package from requirements.txt is not importable: the stage ran outside the venv."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, module: str, command: str):
        import os
        import sys
        from pathlib import Path

        top = module.split(".")[0]
        package = _PACKAGES.get(top, top)
        venv = Path(__file__).resolve().parent.parent / ".venv"
        try:
            shown = os.path.relpath(venv)
        except ValueError:
            shown = str(venv)
        shown = shown if len(shown) < len(str(venv)) else str(venv)
        fix = f"{shown}/bin/{command}" if (venv / "bin" / "python").exists() else f"`make venv`, then {shown}/bin/{command}"
        super().__init__(
            f"no module named {module!r} (package {package}) in {sys.executable}: the pipeline needs the "
            f"project's venv; run {fix} (or activate it: . {shown}/bin/activate)"
        )
