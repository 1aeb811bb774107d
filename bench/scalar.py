"""The model the benchmark's main sections measure, described by what the pipeline built.

They time a model of one value in and one value out (the default config's). Its names and
the values fed to it come from the build, not from the tutorial: the request key of POST
/predict is the feature the bundle's signature names, the values are drawn from the working
range verify measured over (build/reference.npz), and engines find their input tensor's name
in the model itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Scalar:
    """A one-value model: its feature's name and its working range."""

    feature: str  # POST /predict's {"<feature>": ...} (Signature.named_scalar)
    lo: float
    hi: float

    def at(self, t: float, digits: int) -> float:
        """The value a fraction ``t`` (0..1) into the working range, rounded to ``digits`` decimals
        and, so rounded, still inside it (the ends moved in to the nearest such numbers)."""
        scale = 10.0**digits
        lo, hi = math.ceil(self.lo * scale) / scale, math.floor(self.hi * scale) / scale
        return round(lo + (hi - lo) * t, digits)


def describe(build: Path, bundle: Path) -> Scalar:
    """The bundle's model as the benchmark feeds it; SystemExit when it is not a one-value model."""
    import numpy as np

    from runtime.signature import Signature

    sig = Signature.of(json.loads((bundle / "manifest.json").read_text()))
    if not sig.named_scalar:
        raise SystemExit(f"bench: {bundle}: the benchmark measures a model of one named value in and one out "
                         f"(the default config's); this one takes {sig.shape} ({', '.join(sig.features[:4])}"
                         f"{', ...' if sig.size > 4 else ''})")
    with np.load(build / "reference.npz") as ref:
        lo, hi = float(ref["range_min"][0]), float(ref["range_max"][0])
    return Scalar(sig.features[0], lo, hi)


def dense_weights(model_onnx: Path) -> tuple[float, float]:
    """(kernel, bias) of a model that is one Dense unit (ONNX MatMul then Add): the numpy floor's
    model, with the exported model's own float32 weights. SystemExit for any other model."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(model_onnx).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    if ops != ["MatMul", "Add"]:
        raise SystemExit(f"bench: numpy floor: only for a single Dense layer (MatMul, Add); {model_onnx} has "
                         f"{', '.join(ops)}")
    matmul, add = graph.node
    kernel = next((init[n] for n in matmul.input if n in init), None)
    bias = next((init[n] for n in add.input if n in init), None)
    if kernel is None or bias is None or kernel.size != 1 or bias.size != 1:
        raise SystemExit(f"bench: numpy floor: only for one unit of one input; {model_onnx} has other weights")
    return float(kernel.reshape(-1)[0]), float(bias.reshape(-1)[0])
