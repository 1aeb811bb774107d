"""The tutorial's reference oracle: the exact law its seven examples come from.

``[verify] oracle = "fahrenheit.py:oracle"`` in configs/default.toml and tutorial.toml: verify
labels rows it generates over ``verify.oracle_range`` with it, and judges every model's
accuracy on them (docs/configuration.md, "A reference oracle"). Any known law works the same
way: a sensor's calibration curve, a physics formula.
"""


def oracle(celsius):
    """F = 1.8 C + 32, for rows of shape (n, 1) in float64."""
    return celsius * 1.8 + 32.0
