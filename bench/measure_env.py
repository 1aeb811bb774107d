"""What the run ran on (CPU, cores, Python, package versions) and the sizes of what it built."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.proc import PY, ROOT


def du(path: Path) -> int | None:
    if not path.exists():
        return None
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def sizes(build: Path, dist: Path) -> dict:
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pipe = du(Path(PY).parent.parent / "lib" / py / "site-packages")
    # The device's install: the runtime venv `make bench` makes for this Python (deploy/devicecheck/runtime_check.py).
    rt = du(ROOT / ".cache" / "runtime-venv" / f"py{sys.version_info.major}.{sys.version_info.minor}" / "lib" / py
            / "site-packages")
    return {
        "model_onnx_bytes": (build / "model.onnx").stat().st_size,
        "model_tflite_bytes": (build / "model.tflite").stat().st_size,
        "bundle_tarball_bytes": (dist / "bundle.tar.gz").stat().st_size,
        "pipeline_site_packages_mb": pipe / 2**20 if pipe else None,
        "runtime_site_packages_mb": rt / 2**20 if rt else None,
        "runtime_vs_pipeline_install": (rt / pipe) if rt and pipe else None,
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pkgs = {}
    for name in ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy"):
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "packages": pkgs}
