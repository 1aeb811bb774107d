"""The build's onnx-int8-static against onnxruntime's own static quantization and float32.

    .venv/bin/python -m bench.int8 BUILD [--blocks 30] [--batches 1,32] [--variant FILE]

BUILD is a pipeline build folder (``model.onnx``, ``variants/onnx-int8-static.onnx``,
``config.toml``). onnxruntime's own: ``quant_pre_process`` of ``model.onnx``, then
``quantize_static`` in QDQ format, uint8 activations and int8 weights (U8S8, its docs' choice
for x86-64), MinMax, per-tensor, calibrated on the same rows as the build's (the config's
``variants.calibration``). ``--variant FILE``: another int8 model to time beside them (a build
of an older commit, say). Each runs in onnxruntime with the device runner's session options,
one thread; blocks of calls alternate (``bench.graph_pass.time_blocks``) and each ratio is
taken block by block against float32. Also the top-1 agreement with float32 (or the largest
output difference, for a regression) on the validation rows. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.graph_pass import ort_session, time_blocks
from bench.stats import stats


def ort_own_int8(model_path: Path, calibration: np.ndarray, input_name: str, per_channel: bool = False) -> bytes:
    """onnxruntime's documented static quantization of ``model_path`` (QDQ, U8S8, after
    quant_pre_process), as bytes."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(model_path), str(pre), skip_symbolic_shape=True)  # no sympy in the venv
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, per_channel=per_channel)
        return out.read_bytes()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__.splitlines()[0])
    p.add_argument("build", type=Path)
    p.add_argument("--blocks", type=int, default=30)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--variant", type=Path, action="append", default=[],
                   help="another int8 model to time beside them (repeatable)")
    a = p.parse_args(argv)

    from pipeline import dataset, probes
    from pipeline.config import load as load_config

    cfg = load_config(a.build / "config.toml")
    ds = dataset.load(cfg)
    calibration = probes.calibration_rows(cfg, ds)
    name = cfg["model"]["input_name"]
    models = {"float32": (a.build / "model.onnx").read_bytes(),
              "build_int8": (a.build / "variants" / "onnx-int8-static.onnx").read_bytes(),
              "ort_int8": ort_own_int8(a.build / "model.onnx", calibration, name)}
    for k, path in enumerate(a.variant):
        models[f"variant{k}"] = path.read_bytes()
    sessions = {k: ort_session(m) for k, m in models.items()}
    x_val = np.asarray(ds.x_val, np.float32)
    ref = sessions["float32"].run(None, {name: x_val})[0]
    out: dict = {"files": {k: str(p) for k, p in enumerate(a.variant)}, "bytes": {k: len(m) for k, m in models.items()},
                 "vs_float32_on_validation": {}, "batches": {}}
    for k, s in sessions.items():
        y = s.run(None, {name: x_val})[0]
        out["vs_float32_on_validation"][k] = {"top1_agreement": float(np.mean(y.argmax(-1) == ref.argmax(-1))),
                                              "max_abs_diff": float(np.max(np.abs(y - ref)))}
    rng = np.random.default_rng(0)
    for batch in [int(b) for b in a.batches.split(",")]:
        x = x_val[rng.integers(0, len(x_val), batch)]
        engines = {k: (lambda x, s=s: s.run(None, {name: x})) for k, s in sessions.items()}
        t = time_blocks(engines, x, a.blocks)
        out["batches"][str(batch)] = {
            **{f"{k}_us": stats([v * 1e6 for v in vs]) for k, vs in t.items()},
            **{f"{k}_vs_float32": stats([q / r for q, r in zip(vs, t["float32"])]) for k, vs in t.items()
               if k != "float32"},
            **{f"{k}_vs_ort_int8": stats([q / r for q, r in zip(vs, t["ort_int8"])]) for k, vs in t.items()
               if k not in ("float32", "ort_int8")},
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
