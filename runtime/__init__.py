"""The device runner: ``from runtime import Runner``. stdlib + numpy + onnxruntime only.

``Runner.from_bundle(path)`` checks the bundle's hashes and onnxruntime version, then
loads the model; ``runner.predict(values)`` returns Fahrenheit as a float32 array (n,).
``python -m runtime --help`` is the command line.
"""

from .errors import BundleError, InputError, RuntimeFailure
from .runner import Runner, selfcheck

__all__ = ["Runner", "selfcheck", "BundleError", "InputError", "RuntimeFailure"]
