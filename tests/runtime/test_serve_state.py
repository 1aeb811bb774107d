"""`serve`'s model state and metrics, in process: what a reader sees during a reload, what the
check loads and serves, and that every metrics update holds the lock.

Deterministic: the tests stop a reload at each store it makes on the model state and ask the
real HTTP server (in this process, on 127.0.0.1) for /healthz right there; they count file reads
and model loads; they record the lock's holder at each counter update. No verdict depends on
timing; the sockets' timeouts (FAILSAFE) only turn a hang into a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from runtime import manifest as manifest_mod
from runtime import runner as runner_mod
from runtime.serve import Limits, check_and_load
from runtime.serve_http import Server, drain
from runtime.serve_metrics import Metrics
from runtime.serve_state import ModelState
from tests.support.bundles import resign, shifted_bundle
from tests.support.core import FAILSAFE

HOST = "127.0.0.1"


def sha_of(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]


def listening(models: ModelState, metrics: Metrics, limits: Limits | None = None) -> Server:
    """The real HTTP server on ``models``, listening on 127.0.0.1 (an ephemeral port); no accept loop yet."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(64)
    return Server(sock, limits or Limits(idle_timeout=FAILSAFE), models, metrics)


@contextlib.contextmanager
def serving(models: ModelState, metrics: Metrics, limits: Limits | None = None):
    """The real HTTP server on ``models`` in this process (accept loop on a thread); its port."""
    server = listening(models, metrics, limits)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    try:
        yield server, server.socket.getsockname()[1]
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        drain(server, FAILSAFE)
        loop.join(FAILSAFE)


def get(port: int, path: str) -> tuple[int, dict | str]:
    c = http.client.HTTPConnection(HOST, port, timeout=FAILSAFE)
    try:
        c.request("GET", path)
        r = c.getresponse()
        raw = r.read()
    finally:
        c.close()
    return r.status, (json.loads(raw) if r.getheader("Content-Type") == "application/json" else raw.decode())


class Repointable:
    """A ``current`` symlink the test moves between releases, as a deploy does."""

    def __init__(self, where: Path, target: Path):
        self.path = where
        where.symlink_to(target)

    def to(self, target: Path) -> None:
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.symlink_to(target)
        os.replace(tmp, self.path)


class Watched(ModelState):
    """A model state that calls ``watch(name)`` right after each attribute store the thread in
    ``watching`` makes (the reload's; connection threads go on unwatched)."""

    watch, watching = None, None

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if self.watch is not None and threading.get_ident() == self.watching:
            self.watch(name)


def test_healthz_during_a_reload_is_the_state_before_or_after_never_a_mix(bundle, tmp_path, capsys):
    """A reload stopped at each store it makes on the model state: /healthz asked right there
    answers exactly as before the reload or as after it; its sha256, bundle, health and check
    records are never from two different states (good -> bad -> good B -> good A)."""
    a = bundle
    b = shifted_bundle(bundle, tmp_path / "b", delta=1.0)
    bad = tmp_path / "bad"
    shutil.copytree(a, bad)
    (bad / "golden.json").write_text("{}")  # not what the manifest says: fails the hashes check
    current = Repointable(tmp_path / "current", a)
    model, checks = check_and_load(current.path, 1)
    assert model is not None
    metrics = Metrics()
    models = Watched(current.path, 1, model, checks, metrics)
    seen: list[tuple[str, int, dict]] = []
    with serving(models, metrics) as (_, port):
        models.watching = threading.get_ident()  # this thread reloads
        models.watch = lambda name: seen.append((name, *get(port, "/healthz")))
        stops = Counter()
        for target, passes in ((bad, False), (b, True), (a, True)):
            before = get(port, "/healthz")
            current.to(target)
            first = len(seen)
            ok, _ = models.reload()
            assert ok is passes
            after = get(port, "/healthz")
            assert after != before
            assert after[0] == (200 if passes else 503) and after[1]["healthy"] is passes
            assert after[1]["model"] == sha_of(target if passes else a)  # a failed reload keeps the old model
            during = seen[first:]
            assert during, "the reload made no store on the model state to stop at"
            for name, status, doc in during:
                assert (status, doc) in (before, after), (
                    f"/healthz after the reload stored {name!r} mixes two states: {status} healthy={doc['healthy']} "
                    f"model={doc['model'][:12]} checks={[(c['name'], c['ok']) for c in doc['checks']]}; "
                    f"before: {before[0]} {before[1]['model'][:12]}, after: {after[0]} {after[1]['model'][:12]}")
                stops[name] += 1
        models.watch = None
    with capsys.disabled():
        print(f"\n  torn state: 3 reloads stopped at {dict(stops)}: every /healthz there was the state "
              "before or after")


class HeldLock:
    """A lock that knows which thread holds it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.owner = None

    def __enter__(self):
        self._lock.acquire()
        self.owner = threading.get_ident()
        return self

    def __exit__(self, *exc):
        self.owner = None
        self._lock.release()

    def held(self) -> bool:
        return self.owner == threading.get_ident()


class LockChecked(Metrics):
    """Metrics that record every counter update made without its lock held."""

    def __init__(self):
        super().__init__()
        self.__dict__["unlocked"] = []
        metrics = self

        class Dict(dict):
            def __setitem__(self, key, value):
                metrics.check(f"{self.name}[{key!r}]")
                super().__setitem__(key, value)

        class List(list):
            def __setitem__(self, key, value):
                metrics.check(f"{self.name}[{key!r}]")
                super().__setitem__(key, value)

        for name, value in list(vars(self).items()):
            if isinstance(value, (dict, list)) and name != "unlocked":
                wrapped = (Dict if isinstance(value, dict) else List)(value)
                wrapped.name = name
                self.__dict__[name] = wrapped
        self.__dict__["lock"] = HeldLock()
        self.__dict__["armed"] = True

    def check(self, what: str) -> None:
        if not self.lock.held():
            self.unlocked.append((what, threading.current_thread().name))

    def __setattr__(self, name, value):
        if self.__dict__.get("armed"):
            self.check(name)
        super().__setattr__(name, value)


def test_every_metrics_update_holds_the_lock(bundle, tmp_path):
    """Requests, a refused connection and two reloads (one failing): each counter update happens
    with the metrics lock held by the thread making it."""
    current = Repointable(tmp_path / "current", bundle)
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    (bad / "golden.json").write_text("{}")
    model, checks = check_and_load(current.path, 1)
    metrics = LockChecked()
    models = ModelState(current.path, 1, model, checks, metrics)
    with serving(models, metrics, Limits(idle_timeout=FAILSAFE, max_connections=1)) as (_, port):
        held = http.client.HTTPConnection(HOST, port, timeout=FAILSAFE)
        held.request("GET", "/healthz")  # answered: accepted, so it holds the only slot until it closes
        assert held.getresponse().read()
        assert get(port, "/healthz")[0] == 503  # refused at the limit
        held.close()
        assert models.reload()[0] is True
        current.to(bad)
        assert models.reload()[0] is False
    assert metrics.unlocked == [], f"counter updates without the metrics lock: {metrics.unlocked}"
    assert metrics.refused_connections == 1 and metrics.reloads == {"ok": 1, "failed": 1}
    assert metrics.requests[("/healthz", 200)] == 1


def unchecked_copy(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` whose model is re-signed with its bias moved by 1 degF but whose golden
    data is left as it was: its hashes pass, its golden check would fail."""
    b = shifted_bundle(bundle, dest, delta=1.0)
    resign(b, "golden.json", (bundle / "golden.json").read_bytes())
    assert not all(c["ok"] for c in runner_mod.selfcheck(b))
    return b


def test_the_model_served_is_the_instance_that_passed_the_check(bundle, tmp_path, monkeypatch):
    """The bundle is rewritten (model and manifest, consistently re-signed) right after its golden
    check passed, as a deploy writing into a live release would: the model served must be the one
    checked, not a second load of what the folder holds by then, whose golden check fails."""
    a = bundle
    x = unchecked_copy(bundle, tmp_path / "x")
    swap = {name: (x / name).read_bytes() for name in ("model.onnx", "golden.json", "manifest.json",
                                                       "manifest.json.sha256")}
    real_golden = runner_mod._check_golden
    swapped = []

    def golden_then_swap(*args, **kw):
        detail = real_golden(*args, **kw)
        for name, data in swap.items():
            (a / name).write_bytes(data)
        swapped.append(True)
        return detail

    monkeypatch.setattr(runner_mod, "_check_golden", golden_then_swap)
    sha_a = sha_of(a)
    with runner_mod.Runner.from_bundle(a) as r:
        want = r.predict(np.float32([0.0, 100.0])).tolist()
    model, checks = check_and_load(a, 1)
    assert swapped == [True] and model is not None and all(c["ok"] for c in checks)
    assert model.sha256 == sha_a != sha_of(a), "served a model loaded after the check, not the one checked"
    assert model.runner.predict(np.float32([0.0, 100.0])).tolist() == want


def test_a_start_or_reload_reads_and_loads_the_model_once(bundle, monkeypatch):
    """check_and_load (start and every reload) reads and hashes model.onnx once and makes one
    onnxruntime session: the one the check ran the golden inputs through."""
    import onnxruntime

    reads, sessions = Counter(), []
    real_read, real_session = manifest_mod._read, onnxruntime.InferenceSession

    def counting_read(path):
        reads[Path(path).name] += 1
        return real_read(path)

    def counting_session(*args, **kw):
        sessions.append(args[0][:16] if isinstance(args[0], bytes) else args[0])
        return real_session(*args, **kw)

    monkeypatch.setattr(manifest_mod, "_read", counting_read)
    monkeypatch.setattr(onnxruntime, "InferenceSession", counting_session)
    model, checks = check_and_load(bundle, 1)
    assert model is not None and all(c["ok"] for c in checks)
    assert reads["model.onnx"] == 1 and reads["golden.json"] == 1, dict(reads)
    assert reads["manifest.json"] == 1 and reads["manifest.json.sha256"] == 1, dict(reads)
    assert len(sessions) == 1, f"{len(sessions)} onnxruntime sessions for one start"


def test_shutdown_stops_the_accept_loop_at_once_not_at_its_next_poll(bundle):
    """The accept loop waits for a connection at most ``poll_interval`` at a time; socketserver's
    own loop noticed a shutdown only when that wait ended (0.5 s added to every stop). Here the
    wait is longer than the failsafe: the loop ends within it only if shutdown wakes it."""
    model, checks = check_and_load(bundle, 1)
    metrics = Metrics()
    server = listening(ModelState(bundle, 1, model, checks, metrics), metrics)
    try:
        for _ in range(2):  # and once more: a loop started again serves until its own shutdown
            loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 10 * FAILSAFE}, daemon=True)
            loop.start()
            assert get(server.socket.getsockname()[1], "/healthz")[0] == 200  # it serves
            assert loop.is_alive()
            stopper = threading.Thread(target=server.shutdown, daemon=True)
            stopper.start()
            stopper.join(FAILSAFE)
            loop.join(FAILSAFE)
            assert not stopper.is_alive() and not loop.is_alive(), "shutdown waited for the loop's poll"
    finally:
        server.stopping.set()
        server.server_close()
        drain(server, FAILSAFE)
