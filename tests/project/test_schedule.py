"""The order pytest-xdist hands the test files out (tests/support/schedule.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.support.schedule import longest_first

ROOT = Path("/repo")


def item(path: str, name: str, fixtures=(), marks=()):
    return SimpleNamespace(path=ROOT / path, name=name, fixturenames=list(fixtures),
                           iter_markers=lambda: [SimpleNamespace(name=m) for m in marks])


def order(items) -> list[str]:
    return [f"{i.path.name}::{i.name}" for i in items]


def test_the_heaviest_files_go_first_and_a_files_tests_keep_their_order():
    items = [item("tests/runtime/test_serve.py", "a"), item("tests/runtime/test_runtime_cli.py", "b"),
             item("tests/runtime/test_serve.py", "c"), item("tests/x/test_unlisted.py", "d")]
    longest_first(items, ROOT)
    assert order(items) == ["test_runtime_cli.py::b", "test_serve.py::a", "test_serve.py::c", "test_unlisted.py::d"]


def test_a_worker_starts_on_a_file_that_does_not_wait_for_the_default_build():
    """test-fast's three heaviest files all need the default build: the heaviest file that does
    not takes the third worker's first place, and with one worker the order is by weight alone."""
    def fast_items():
        return [item("tests/runtime/test_runtime_signature.py", "sig", ["bundle_tarball"]),
                item("tests/runtime/test_runtime_cli.py", "cli", ["bundle", "bundle_tarball"]),
                item("tests/pipeline/test_variants.py", "var", ["built"]),
                item("tests/pipeline/test_train.py", "train", ["built", "tutorial"]),
                item("tests/deploy/test_devicecheck.py", "dev"),
                item("tests/pipeline/test_dataset.py", "data")]

    items = fast_items()
    longest_first(items, ROOT, workers=3)
    assert order(items) == ["test_runtime_signature.py::sig", "test_runtime_cli.py::cli", "test_devicecheck.py::dev",
                            "test_variants.py::var", "test_train.py::train", "test_dataset.py::data"]
    items = fast_items()
    longest_first(items, ROOT, workers=1)
    assert [i.name for i in items] == ["sig", "cli", "var", "train", "dev", "data"]
    # One of the first places is free of the build already: nothing moves.
    items = fast_items()[1:]
    longest_first(items, ROOT, workers=4)
    assert [i.name for i in items] == ["cli", "var", "train", "dev", "data"]
