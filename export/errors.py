"""The export layer's one exception: a converter produced something the pipeline cannot use.

Its message names the subject, the problem and what was expected; ``python -m pipeline``
prints it as one line and exits 1 (a check of the model failed), as for a verify breach.
"""

from __future__ import annotations


class ExportError(Exception):
    """A conversion failed or produced a graph that is not what was asked for."""

    exit_code = 1  # pipeline.errors.EXIT_VERIFY_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
