"""The bundle stage's rules that verify applies: which model the bundle ships, and which
bundle a failed verify takes away.

``[bundle] model`` names the model: ``onnx-fp32`` (the default), a named ONNX variant
(within its budget, or verify fails), or ``auto``: among the ONNX models within budget
(onnx-fp32 included), the fastest at batch 1 as verify measured it, latencies within
AUTO_TIE of the fastest counting as a tie broken by the smaller file. Only ONNX models:
the device runs onnxruntime. verify records the choice in its report (``bundle``), and
bundle ships what the report says.
"""

from __future__ import annotations

import shutil
from typing import Any

from .layout import Layout

AUTO_TIE = 1.10  # batch-1 latencies within 10 % of the fastest count as a tie (timing noise)

# What bundle ships from a report that records no choice (``bundle`` missing or null): the float32 ONNX model.
DEFAULT = {"model": "onnx-fp32", "path": "model.onnx", "budget": None, "why": "bundle.model"}


def choose(cfg: dict[str, Any], variants: dict[str, Any], layout: Layout) -> tuple[dict[str, Any] | None, str]:
    """The model the bundle ships (bundle.model) from verify's measurements of every model
    (``variants``), and a failure line if it cannot be that one."""
    want = cfg["bundle"]["model"]
    ok = {n: v for n, v in variants.items() if n.startswith("onnx-") and v.get("parity")
          and (v.get("budget") is None or v["passed"])}
    if want == "auto":
        fastest = min(v["speed"]["p50_batch_1_us"] for v in ok.values())
        ties = sorted(n for n, v in ok.items() if v["speed"]["p50_batch_1_us"] <= fastest * AUTO_TIE)
        name = min(ties, key=lambda n: (ok[n]["size_bytes"], n))
        why = (f"auto: among the ONNX models within budget ({', '.join(sorted(ok))}), the fastest at batch 1 "
               f"({fastest:.2f} us), ties within {AUTO_TIE - 1:.0%} ({', '.join(ties)}) broken by the smaller file")
    elif want in ok:
        name, why = want, "bundle.model"
    else:
        v = variants.get(want, {})
        reason = v.get("reason") or "not verified"
        return None, (f"bundle.model {want}: {reason}; choose another model or change its budget "
                      f"([variants.{want}])")
    v = ok[name]
    return {"model": name, "why": why, "path": layout.relative(layout.model_file(name)),
            "budget": v.get("budget"), "parity": v["parity"], "accuracy": v["accuracy"], "speed": v["speed"],
            "size_bytes": v["size_bytes"]}, ""


def remove_stale(layout: Layout) -> list[str]:
    """Remove the bundle in dist (tarball and folder), which a failed verify no longer stands behind;
    return what was removed."""
    removed = []
    for p in (layout.tarball, layout.bundle_dir):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p))
        elif p.exists():
            p.unlink()
            removed.append(str(p))
    return removed
