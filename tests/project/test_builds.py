"""tests/support/builds.py's shared folders: made once per test run, whoever asks first, and begun
in the background before any test asks (what tests/conftest.py does with the default build)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.builds import begin_shared, shared
from tests.support.core import wait_until


def factory(tmp_path: Path):
    """A stand-in for pytest's tmp_path_factory: this test's own run folder (pytest's base, or a
    worker's under it)."""
    base = tmp_path / "run" / "popen-gw0"
    base.mkdir(parents=True)
    return SimpleNamespace(getbasetemp=lambda: base)


def test_a_folder_begun_in_the_background_is_made_once_and_waited_for(tmp_path):
    f = factory(tmp_path)
    calls, go = [], threading.Event()

    def make(folder: Path):
        calls.append(folder)
        assert go.wait(timeout=120)
        (folder / "made").write_text("once\n")

    thread = begin_shared(f, "thing", make)
    wait_until("the background thread making the folder", lambda: calls)
    assert shared(f, "thing", make, wait=False) is None  # being made: not a second time
    second = begin_shared(f, "thing", make)  # a second start: ends at once, without waiting for the first
    second.join(timeout=120)
    assert not second.is_alive()
    go.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    folder = shared(f, "thing", lambda folder: pytest.fail("made twice"))
    assert (folder / "made").read_text() == "once\n" and len(calls) == 1


def test_a_background_make_that_fails_leaves_nothing_and_the_next_to_ask_reports_its_own_failure(tmp_path):
    f = factory(tmp_path)

    def broken(folder: Path):
        (folder / "half").write_text("x")
        raise RuntimeError("the build failed")

    begin_shared(f, "thing", broken).join(timeout=120)  # says nothing: the failure is the next asker's
    assert not (tmp_path / "run" / "shared" / "thing").exists()
    with pytest.raises(RuntimeError, match="the build failed"):
        shared(f, "thing", broken)
    assert shared(f, "thing", lambda folder: (folder / "made").write_text("now\n")).joinpath("made").exists()
