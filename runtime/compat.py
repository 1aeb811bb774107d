"""Which onnxruntime releases can load which ONNX files.

From onnxruntime's published compatibility table (onnxruntime.ai, docs/reference/
compatibility, "ONNX opset support"): the newest ONNX opset and IR version each release
implements. A model loads when its opset and IR version are at most the release's.
Releases newer than the last row are not judged here (they load everything this
pipeline writes: opset <= 18, IR <= 10). Stdlib only.
"""

from __future__ import annotations

# (onnxruntime release, newest ONNX opset, newest IR version)
ORT_SUPPORT: tuple[tuple[str, int, int], ...] = (
    ("1.10", 15, 8),
    ("1.11", 16, 8),
    ("1.12", 17, 8),
    ("1.13", 17, 8),
    ("1.14", 18, 8),
    ("1.15", 19, 9),
    ("1.16", 19, 9),
    ("1.17", 20, 9),
    ("1.18", 21, 10),
    ("1.19", 21, 10),
    ("1.20", 21, 10),
)


def _minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        raise ValueError(f"not an onnxruntime version: {version!r}") from None


def oldest_onnxruntime(opset: int, ir_version: int) -> str:
    """The oldest onnxruntime release in the table that loads a model of this opset and IR version."""
    for release, max_opset, max_ir in ORT_SUPPORT:
        if opset <= max_opset and ir_version <= max_ir:
            return release
    raise ValueError(
        f"opset {opset} / IR {ir_version} is newer than any release in the table "
        f"(newest: onnxruntime {ORT_SUPPORT[-1][0]}, opset {ORT_SUPPORT[-1][1]}, IR {ORT_SUPPORT[-1][2]})"
    )


def supports(ort_version: str, opset: int, ir_version: int) -> bool:
    """Whether onnxruntime ``ort_version`` can load a model of this opset and IR version."""
    have = _minor(ort_version)
    if have > _minor(ORT_SUPPORT[-1][0]):
        return True
    older = [r for r in ORT_SUPPORT if _minor(r[0]) <= have]
    return bool(older) and opset <= older[-1][1] and ir_version <= older[-1][2]
