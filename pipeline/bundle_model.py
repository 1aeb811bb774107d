"""The bundle stage's rules that verify applies: which model the bundle ships, and which
bundle a failed verify takes away.

``[bundle] model`` names the model: ``onnx-fp32`` (the default), a named ONNX variant
(within its budget, or verify fails), or ``auto``: among the ONNX models within budget
(onnx-fp32 included), by ``[bundle] prefer``:

- ``"speed"`` (the default): never a model verify measured slower than float32 at batch 1
  (its ``speed.vs_fp32.batch_1``, time against onnx-fp32 in alternating blocks, above 1);
  of the others the fastest, ratios within AUTO_TIE of the fastest counting as a tie broken
  by the smaller file. onnx-fp32 (1 by definition) is always among them.
- ``"size"``: the smallest file.

Only ONNX models: the device runs onnxruntime. verify records the choice in its report
(``bundle``), and bundle ships what the report says.
"""

from __future__ import annotations

import shutil
from typing import Any

from .layout import Layout

AUTO_TIE = 1.10  # batch-1 times within 10 % of the fastest count as a tie (timing noise)

# What bundle ships from a report that records no choice (``bundle`` missing or null): the float32 ONNX model.
DEFAULT = {"model": "onnx-fp32", "path": "model.onnx", "budget": None, "why": "bundle.model"}


def choose(cfg: dict[str, Any], variants: dict[str, Any], layout: Layout) -> tuple[dict[str, Any] | None, str]:
    """The model the bundle ships (bundle.model) from verify's measurements of every model
    (``variants``), and a failure line if it cannot be that one."""
    want = cfg["bundle"]["model"]
    ok = {n: v for n, v in variants.items() if n.startswith("onnx-") and v.get("parity")
          and (v.get("budget") is None or v["passed"])}
    if want == "auto":
        within = ", ".join(sorted(ok))
        if cfg["bundle"]["prefer"] == "size":
            name = min(ok, key=lambda n: (ok[n]["size_bytes"], n))
            why = (f"auto, prefer size: among the ONNX models within budget ({within}), the smallest file "
                   f"({ok[name]['size_bytes']:,} B)")
        else:
            rel = {n: 1.0 if n == "onnx-fp32" else (v["speed"].get("vs_fp32") or {}).get("batch_1")
                   for n, v in ok.items()}
            fast = {n: r for n, r in rel.items() if r is not None and r <= 1.0}
            if not fast:
                return None, f"bundle.model auto: no ONNX model within budget that is not slower than float32 ({within})"
            fastest = min(fast.values())
            ties = sorted(n for n, r in fast.items() if r <= fastest * AUTO_TIE)
            name = min(ties, key=lambda n: (ok[n]["size_bytes"], n))
            slower = sorted(set(ok) - set(fast))
            why = (f"auto, prefer speed: among the ONNX models within budget ({within})"
                   + (f", leaving out those measured slower than onnx-fp32 at batch 1 ({', '.join(slower)})"
                      if slower else "")
                   + f", the fastest at batch 1 ({fastest:.2f}x onnx-fp32's time), ties within "
                   f"{AUTO_TIE - 1:.0%} ({', '.join(ties)}) broken by the smaller file")
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
