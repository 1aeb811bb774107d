"""Bundles made before issue 25 (tests/data/bundles-before-issue-25) against the runtime of
today, both ways round.

Devices keep running what they were given while the build side is rewritten:
1. The repo's runtime/ (`python -m runtime ... --bundle OLD` from the repo root: this
   checkout's code, never the old bundle's own) runs each old bundle: `selfcheck`, `info`,
   `predict` and `serve`'s POST /predict give the old release's golden answers.
2. A `serve` of the old release, started as systemd/edge-model.service starts it (from
   the bundle's own runtime/ through the `current` symlink), is sent SIGHUP once `current`
   points at a bundle made by today's code. Either outcome would be sound: it swaps the new
   model in, or it refuses in one line and goes on serving the old one. The test pins the
   one that happens (today: the swap), so that a change is a decision, not an accident, and
   that no request fails meanwhile.

The old bundles are hashed against their manifests by whichever runtime runs them, runtime/
files included: they are run where they are unpacked, never with files copied in.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.manifest import sha256_file
from tests.support.core import FAILSAFE, ROOT, run_module, wait_until
from tests.support.server import Server

DATA = ROOT / "tests" / "data" / "bundles-before-issue-25"
# The tarballs as made at 19750cb (their README): a changed one is no longer what devices run.
MADE_BEFORE = {
    "tutorial-default": "eb92ed9344bf84e9d36b746247013539836e8f893d4994592ba7c6d4f4b363bc",
    "diabetes": "1229f07000649e55e116bcdc6746e73b9499a9691a9f57a72dc0582b92f3a0be",
}
# The old tutorial bundle's answer to `predict 100`, as its own runtime printed it (%.9g).
TUTORIAL_AT_100C = 211.747421


class Bundle:
    """An unpacked bundle as a client sees it: its model's sha256, and its golden examples
    as predict requests and answers, in either golden.json form (the tutorial's legacy
    {"celsius", "fahrenheit"}, or a signature bundle's {"inputs", "outputs"})."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.manifest = json.loads((folder / "manifest.json").read_text())
        self.sha = self.manifest["files"][self.manifest["model"]["file"]]
        self.atol, self.rtol = self.manifest["golden"]["atol"], self.manifest["golden"]["rtol"]
        golden = json.loads((folder / self.manifest["golden"]["file"]).read_text())
        if "inputs" in golden:
            self.request_key, self.answer_key = "inputs", "outputs"
        else:
            self.request_key, self.answer_key = "celsius", "fahrenheit"
        self.x, self.y = golden[self.request_key], golden[self.answer_key]

    def body(self, examples: list) -> bytes:
        return json.dumps({self.request_key: examples}).encode()

    def fits(self, got, want) -> bool:
        """Whether ``got`` is ``want`` within the manifest's golden tolerances (as selfcheck
        holds them: |got - want| <= atol + rtol * |want|), shapes equal."""
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        return got.shape == want.shape and bool(np.all(np.abs(got - want) <= self.atol + self.rtol * np.abs(want)))


@pytest.fixture(params=sorted(MADE_BEFORE))
def old(request, tmp_path) -> Bundle:
    """Each old bundle, unpacked afresh in the test's folder (old/bundle)."""
    with tarfile.open(DATA / f"{request.param}.tar.gz") as tar:
        tar.extractall(tmp_path / "old", filter="data")
    return Bundle(tmp_path / "old" / "bundle")


def todays_runtime(old: Bundle, *args: str) -> subprocess.CompletedProcess:
    """`python -m runtime ARGS --bundle OLD`, run from the repo root: the repo's runtime/."""
    return run_module("runtime", *args, "--bundle", str(old.dir), cwd=ROOT, env={"PYTHONPATH": ""})


def call(server: Server, method: str, path: str, body: bytes | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
    """(status, JSON document) of one request, on ``conn`` or a connection of its own."""
    c = conn or http.client.HTTPConnection(server.host, server.port, timeout=FAILSAFE)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        if conn is None:
            c.close()


def test_the_old_bundles_are_the_ones_made_before_issue_25():
    assert {name: sha256_file(DATA / f"{name}.tar.gz") for name in MADE_BEFORE} == MADE_BEFORE


# --- 1. today's runtime runs the old bundles ---------------------------------------------------

def test_todays_selfcheck_passes_with_every_golden_example(old):
    r = todays_runtime(old, "selfcheck")
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert r.stdout.decode().splitlines()[-1] == "selfcheck: passed" and r.stderr == b""
    r = todays_runtime(old, "selfcheck", "--json")
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    # The golden check ran on all of golden.json (either form), not on none of it.
    assert f"{len(old.x)} golden" in checks["golden"]["detail"], checks["golden"]


def test_todays_info_describes_the_old_bundle(old):
    r = todays_runtime(old, "info")
    assert r.returncode == 0, r.stderr.decode()
    info = json.loads(r.stdout)
    assert info["loaded"] is True and info["problem"] is None
    assert info["bundle"] == str(old.dir.resolve())
    model = old.manifest["model"]
    assert info["model_name"] == model["name"]
    assert info["model_needs"] == {k: model[k] for k in ("opset", "ir_version", "min_onnxruntime")}
    features = old.manifest["signature"]["input"]["features"]
    assert info["signature"]["input"]["features"] == len(features)  # 1 (celsius) and 10
    assert [i["name"] for i in info["model_inputs"]] == [model["input"]["name"]]


def test_todays_predict_gives_the_old_answers(old):
    if old.request_key == "celsius":  # the tutorial: one Celsius value a line
        values, want = [100.0], [TUTORIAL_AT_100C]
    else:  # one example's features: golden.json's first row, and its golden output
        values, want = old.x[0], old.y[0]
    r = todays_runtime(old, "predict", *map(repr, values))
    assert r.returncode == 0, r.stderr.decode()
    got = [float(v) for v in r.stdout.decode().split()]
    assert old.fits(got, want), (got, want)


@pytest.mark.slow  # starts a server
def test_todays_serve_answers_predict_with_the_old_answers(old, serve_bundle):
    s = serve_bundle(old.dir, cwd=ROOT)  # `python -m runtime serve --bundle OLD` from the repo root
    conn = http.client.HTTPConnection(s.host, s.port, timeout=FAILSAFE)
    status, doc = call(s, "POST", "/predict", old.body(old.x), conn)  # every golden example, one batch
    assert status == 200 and doc["model"] == old.sha
    assert old.fits(doc[old.answer_key], old.y)
    if old.request_key == "celsius":
        status, doc = call(s, "POST", "/predict", old.body([100.0]), conn)
        assert status == 200 and old.fits(doc["fahrenheit"], [TUTORIAL_AT_100C]), doc
    status, health = call(s, "GET", "/healthz", conn=conn)
    assert status == 200 and health["healthy"] is True and health["bundle"] == str(old.dir.resolve())
    conn.close()
    assert s.stop() == 0
    assert not any("Traceback" in line for line in s.log), s.log


# --- 2. a serve of the old release asked to reload a bundle of today ----------------------------

class UnitServer(Server):
    """`serve` as systemd/edge-model.service starts it: ``python CURRENT/runtime serve --bundle
    CURRENT``, so its code is the runtime/ of the release ``current`` points at when it starts."""

    def __init__(self, current: Path, cwd: Path):
        self.proc = subprocess.Popen(
            [sys.executable, str(current / "runtime"), "serve", "--bundle", str(current), "--port", "0"],
            cwd=cwd, env={**os.environ, "PYTHONPATH": ""}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.log: list[str] = []
        self.where = self.wait_for("serving model ").rsplit(" on ", 1)[1].split(" (")[0]
        host, _, port = self.where.rpartition(":")
        self.host, self.port = host, int(port)


class Client(threading.Thread):
    """POSTs one body over and over on one kept-alive connection until ``done`` is set, and
    records each answer as (when the request was sent, when its answer came, which models it
    fits: ``classify``). An exception (no answer at all) ends the loop, kept in ``failure``."""

    def __init__(self, server: Server, body: bytes, classify):
        super().__init__(name="client", daemon=True)
        self.server, self.body, self.classify = server, body, classify
        self.answers: list[tuple[float, float, frozenset[str]]] = []
        self.failure: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=FAILSAFE)
        deadline = time.monotonic() + FAILSAFE  # failsafe: the test sets ``done`` long before
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                conn.request("POST", "/predict", body=self.body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                raw = r.read()
                self.answers.append((sent, time.monotonic(), self.classify(r.status, json.loads(raw))))
        except Exception as e:  # noqa: BLE001 - any of them is a request without an answer
            self.failure = f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def sent_after(self, t: float) -> list[frozenset[str]]:
        return [fits for sent, _, fits in list(self.answers) if sent > t]

    def answered_before(self, t: float) -> list[frozenset[str]]:
        return [fits for _, answered, fits in list(self.answers) if answered < t]


@pytest.mark.slow  # builds today's bundle (session fixture) and starts servers
def test_a_serve_of_the_old_release_swaps_in_a_bundle_of_today_on_sighup(old, bundle, tmp_path, serve_bundle):
    new = Bundle(bundle)  # made by today's code (conftest: bundle_tarball)
    # What today's bundle answers to the old bundle's golden batch (a 400 when the inputs do
    # not fit its signature: diabetes rows to the tutorial's model), asked of a serve of today.
    today = serve_bundle(new.dir)
    new_status, new_doc = call(today, "POST", "/predict", old.body(old.x))
    today.stop()

    def classify(status: int, doc: dict) -> frozenset[str]:
        """Which models' answer to the old golden batch this is: {"old"}, {"new"}, both (the
        same model in both bundles) or none (a failed request)."""
        fits = set()
        if status == 200 and doc.get("model") == old.sha and old.fits(doc[old.answer_key], old.y):
            fits.add("old")
        if status == new_status and (status != 200 or (doc.get("model") == new.sha and old.answer_key in doc
                                                       and new.fits(doc[old.answer_key], new_doc[old.answer_key]))):
            fits.add("new")
        return frozenset(fits)

    current = tmp_path / "current"
    current.symlink_to(old.dir)
    s = UnitServer(current, cwd=tmp_path)
    client = Client(s, old.body(old.x), classify)
    try:
        client.start()
        wait_until("an answer of the old model", lambda: client.answers or client.failure)
        repointed = tmp_path / "current.new"
        repointed.symlink_to(new.dir)
        os.replace(repointed, current)  # atomic, as a deploy switches releases
        hup = time.monotonic()
        s.proc.send_signal(signal.SIGHUP)
        line = s.wait_for("reload")
        reloaded = time.monotonic()
        # The old runtime's own words (they cannot change: its code is in the tarball). If it
        # refuses today's bundles one day, that is a choice: pin the refusal here instead.
        assert line == f"serve: reloaded: model {old.sha[:12]} -> {new.sha[:12]} from {new.dir.resolve()}", line
        wait_until("an answer to a request sent after the reload",
                   lambda: client.sent_after(reloaded) or client.failure)
        client.done.set()
        client.join(FAILSAFE)
        assert client.failure is None, f"a request got no answer: {client.failure}"
        answers = [fits for _, _, fits in client.answers]
        assert all(answers), f"answers that are neither model's: {[i for i, f in enumerate(answers) if not f]}"
        # Answered before the SIGHUP: the old model. Sent after the reload's line (logged once
        # the new model is in service): the new one. Those in flight between: either.
        assert client.answered_before(hup) and all("old" in fits for fits in client.answered_before(hup))
        assert all("new" in fits for fits in client.sent_after(reloaded))
        first_new_only = next((i for i, fits in enumerate(answers) if fits == {"new"}), len(answers))
        assert all("new" in fits for fits in answers[first_new_only:]), "the old model answered after the new one"

        conn = http.client.HTTPConnection(s.host, s.port, timeout=FAILSAFE)
        status, health = call(s, "GET", "/healthz", conn=conn)
        assert status == 200 and health["healthy"] is True
        assert (health["model"], health["bundle"]) == (new.sha, str(new.dir.resolve()))
        status, doc = call(s, "POST", "/predict", new.body(new.x), conn)  # today's golden examples
        assert status == 200 and doc["model"] == new.sha and new.fits(doc[new.answer_key], new.y)
        conn.close()
    finally:
        client.done.set()
        code = s.stop()
    assert code == 0 and not any("Traceback" in line for line in s.log), s.log
