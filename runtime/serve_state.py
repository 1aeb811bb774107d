"""The model `serve` answers with: checked and loaded once, held as one immutable snapshot.

A reload builds a new ``Snapshot`` aside and swaps it in with one assignment; a reader takes
``ModelState.snapshot`` once per request and uses only that, so the model it runs, its
sha256, its bundle and the self-check records it reports always belong together, whatever
a reload does meanwhile.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import manifest as manifest_mod
from .errors import RuntimeFailure
from .runner import Runner, checked
from .serve_metrics import Metrics
from .signature import Checker, Signature


@dataclass(frozen=True)
class Model:
    """A bundle's model that passed its self-check, loaded: the very instance that was checked."""

    runner: Runner
    sha256: str
    bundle: Path  # the resolved release folder
    summary: dict[str, Any]  # GET /info, without the limits
    signature: Signature  # the runner's: what an example is, the model's name, its labels
    checker: Checker  # the runner's: the valid and observed ranges


@dataclass(frozen=True)
class Snapshot:
    """What a request sees: the model in service and the records of the last self-check.

    ``healthy`` is whether that check passed; after a failed reload the old model goes on
    serving beside the failing records.
    """

    model: Model
    checks: tuple[dict[str, Any], ...]
    healthy: bool

    def health(self) -> tuple[int, dict[str, Any]]:
        """The status and document of GET /healthz."""
        doc = {"healthy": self.healthy, "model": self.model.sha256, "bundle": str(self.model.bundle),
               "checks": list(self.checks)}
        return (200 if self.healthy else 503), doc


SPEED = ".edge-speed.json"  # written by the deploy's gate into the release folder (deploy/roles/edge/files/release.py)


def device_speed(release: Path) -> dict[str, Any] | None:
    """What the deploy's gate measured for this release on this device (its ``SPEED`` record:
    batch-1 p50 and p99, peak RSS, threads), as recorded; None without one (a release deployed
    by hand, or before the gate measured). A record that cannot be read or is not a JSON object
    gives ``{"ok": false, "reason": "unreadable: ..."}``: GET /info never fails for it."""
    path = release / SPEED
    try:
        with open(path, "rb") as f:
            rec = json.loads(f.read(1 << 16))
        if not isinstance(rec, dict):
            raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"ok": False, "reason": f"unreadable: {SPEED}: {e}"}
    return rec


Loader = Callable[..., "tuple[Model | None, list[dict[str, Any]]]"]


def check_and_load(bundle: Path, threads: int, trusted_keys: str | None = None
                   ) -> tuple[Model | None, list[dict[str, Any]]]:
    """Self-check the bundle (resolved once: a symlink repointed meanwhile changes nothing)
    and return the runner the check loaded and passed, with the check's records; (None,
    records) when a check failed. The model is read, hashed and loaded once. The trusted
    keys are read anew at each call (``trusted_keys``, else $EDGE_TRUSTED_KEYS, else the
    system's file), so a reload after a key rotation checks against the keys of now."""
    try:
        release = manifest_mod.locate(bundle).resolve()
    except RuntimeFailure as e:
        return None, [{"name": "manifest", "ok": False, "detail": e.message, "exit_code": e.exit_code}]
    checks, runner = checked(release, threads, trusted_keys)
    if runner is None:
        return None, checks
    m = runner.manifest
    sha = m["files"][m["model"]["file"]]
    import numpy
    import onnxruntime

    summary = {
        "model": sha,
        "bundle": str(release),
        "opset": m["model"]["opset"],
        "ir_version": m["model"]["ir_version"],
        "min_onnxruntime": m["model"]["min_onnxruntime"],
        "input": m["model"].get("input"),
        "output": m["model"].get("output"),
        "valid_input": m.get("valid_input"),
        "model_name": runner.name,
        "signature": runner.signature.summary,
        "config_sha256": m.get("config_sha256"),
        "versions": {"python": sys.version.split()[0], "numpy": numpy.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "tools": m.get("tools"),
        "origin": runner.origin.summary(),
        "device_speed": device_speed(release),
    }
    return Model(runner, sha, release, summary, runner.signature, runner.checker), checks


class ModelState:
    """The current ``snapshot``, and ``reload()`` to re-check the bundle path and swap (counted in ``metrics``)."""

    def __init__(self, bundle: Path, threads: int, model: Model, checks: list[dict[str, Any]], metrics: Metrics,
                 load: Loader = check_and_load, trusted_keys: str | None = None):
        self.bundle, self.threads, self.metrics, self._load = bundle, threads, metrics, load
        self.trusted_keys = trusted_keys
        self._reloading = threading.Lock()  # one reload at a time (each reads the snapshot it replaces)
        self.snapshot = Snapshot(model, tuple(checks), True)

    def reload(self) -> tuple[bool, str]:
        """Re-check the bundle path; swap the new model in only if it passes. Returns whether
        it passed and the line to log. A request in flight keeps the snapshot it took."""
        with self._reloading:
            old = self.snapshot
            model, checks = self._load(self.bundle, self.threads, self.trusted_keys)
            if model is None:
                failed = next(c for c in checks if not c["ok"])
                self.snapshot = Snapshot(old.model, tuple(checks), False)  # the one assignment readers see
                self.metrics.reloaded(False)
                return False, (f"reload failed, still serving model {old.model.sha256[:12]}: "
                               f"{failed['name']}: {failed['detail']}")
            self.snapshot = Snapshot(model, tuple(checks), True)  # the one assignment readers see
            self.metrics.reloaded(True)
            return True, f"reloaded: model {old.model.sha256[:12]} -> {model.sha256[:12]} from {model.bundle}"
