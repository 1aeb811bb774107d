"""The config's value checkers: each takes a value from the TOML file and returns it normalised,
or raises ValueError naming what was expected (config.py turns that into one line naming the
file and the key). A path checker also takes the folder relative paths start from. Stdlib only.
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

DATA_SUFFIXES = (".csv", ".npz")


def _number(v: Any, inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or (math.isinf(v) and not inf):
        raise ValueError("a number (inf allowed)" if inf else "a finite number")
    return float(v)


def number_or_inf(v: Any) -> float:
    return _number(v, inf=True)


def positive(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError("a number > 0")
    return float(v)


def fraction(v: Any) -> float:
    """A number in (0, 1]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
        raise ValueError("a number > 0 and <= 1")
    return float(v)


def margin(v: Any) -> float:
    """A number in [0, 1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError("a number >= 0 and < 1")
    return float(v)


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"an integer >= {lo} and <= {hi}")
        return v

    return check


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise ValueError("one of " + ", ".join(repr(o) for o in options))
        return v

    return check


def text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("a non-empty string")
    return v.strip()


def names(what: str, allowed: tuple[str, ...] | None = None, min_len: int = 1) -> Callable[[Any], list[str]]:
    """A list of distinct non-empty strings (of ``allowed``, if given); integers are kept as
    their decimal text (class names may be numbers)."""
    expected = f"a list of at least {min_len} distinct {what}" + (
        f" (of {', '.join(allowed)})" if allowed else "")

    def check(v: Any) -> list[str]:
        if not isinstance(v, list) or len(v) < min_len:
            raise ValueError(expected)
        out = []
        for s in v:
            if isinstance(s, bool) or not isinstance(s, (str, int)) or not str(s).strip():
                raise ValueError(expected)
            if allowed and s not in allowed:
                raise ValueError(f"{expected}; {s!r} is not one")
            out.append(str(s).strip())
        dup = next((s for s in out if out.count(s) > 1), None)
        if dup is not None:
            raise ValueError(f"{expected}; {dup!r} appears twice")
        return out

    return check


def targets(v: Any) -> str | list[str]:
    """A CSV's target column (a string), or a list of them (a regression of several targets)."""
    if isinstance(v, str):
        return text(v)
    try:
        return names("target columns")(v)
    except ValueError:
        raise ValueError("a column name, or a list of distinct column names (a regression of several targets)") from None


def units(v: Any) -> list[int]:
    """A dense stack's units; the last is the number of outputs."""
    if not isinstance(v, list) or not v or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in v):
        raise ValueError("a non-empty list of unit counts (integers >= 1), the last one the number of outputs")
    return list(v)


def span(v: Any) -> list[float]:
    """[lo, hi], lo < hi (inf allowed)."""
    try:
        lo, hi = (number_or_inf(x) for x in v) if isinstance(v, list) and len(v) == 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not lo < hi:
        raise ValueError("[lo, hi] with lo < hi (numbers, inf allowed)")
    return [lo, hi]


def finite_span(v: Any) -> list[float]:
    lo, hi = span(v)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("[lo, hi] with lo < hi (finite numbers)")
    return [lo, hi]


def batch_size(v: Any) -> int | str:
    if v == "all":
        return v
    try:
        return integer(1, 10_000_000)(v)
    except ValueError:
        raise ValueError('"all" (every training row in each step) or an integer >= 1') from None


def per_feature(v: Any) -> dict[str, list[float]]:
    if not isinstance(v, dict):
        raise ValueError("a table of feature name = [lo, hi]")
    out = {}
    for name, r in v.items():
        try:
            out[name] = span(r)
        except ValueError:
            raise ValueError(f"a table of feature name = [lo, hi] (lo < hi, inf allowed); got {name} = {r!r}") from None
    return out


_BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def bundle_name(v: Any) -> str:
    if not isinstance(v, str) or not _BUNDLE_NAME.fullmatch(v):
        raise ValueError("a name of letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)")
    return v


def tensor_name(v: Any) -> str:
    if not isinstance(v, str) or not _TENSOR_NAME.fullmatch(v):
        raise ValueError("a tensor name: letters, digits and '_', starting with a letter or '_' (at most 64)")
    return v


def tolerance() -> dict[str, Any]:
    return {"atol": (positive, 1e-5), "rtol": (positive, 1e-4)}


# --- paths: checked against the folder relative paths start from ---


def _path(base: Path, v: Any, suffixes: tuple[str, ...], what: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"a path to {what}")
    p = Path(v) if Path(v).is_absolute() else base / v
    p = p.resolve()
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"a path to {what} (a file ending in {' or '.join(suffixes)})")
    if not p.is_file():
        raise ValueError(f"an existing file; {p} does not exist (paths are relative to {base})")
    return str(p)


def data_file(base: Path, v: Any) -> str:
    return _path(base, v, DATA_SUFFIXES, "a .csv with a header row or an .npz with arrays x and y")


def validation(base: Path, v: Any) -> float | str:
    if isinstance(v, str):
        return data_file(base, v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError("a fraction >= 0 and < 1 of the rows to hold out (0: none, with verify.oracle), "
                         "or a path to a validation file")
    return float(v)


def function_ref(base: Path, v: Any, signature: str) -> str:
    expected = f"'file.py:function' (a Python file, relative to the config's folder, and its {signature})"
    if not isinstance(v, str) or ":" not in v:
        raise ValueError(expected)
    file, _, fn = v.rpartition(":")
    if not file.endswith(".py") or not fn.isidentifier():
        raise ValueError(expected)
    p = (base / file).resolve()
    if not p.is_file():
        raise ValueError(f"{expected}; {p} does not exist")
    return f"{p}:{fn}"


def trained_model(base: Path, v: Any) -> str:
    p = _path(base, v, (".keras",), "a trained Keras model")
    try:
        with zipfile.ZipFile(p) as z:
            listed = set(z.namelist())
    except (zipfile.BadZipFile, OSError):
        raise ValueError(f"a Keras 3 .keras file; {p} is not a zip archive") from None
    if "config.json" not in listed:
        raise ValueError(f"a Keras 3 .keras file; {p} holds no config.json")
    return p
