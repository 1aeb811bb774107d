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


def test_every_worker_starts_on_a_file_that_does_not_wait_for_the_default_build():
    """test-fast's heaviest files need the default build, which is being made in the background
    when the workers start: the heaviest files that do not need it take the workers' first
    places, then the rest by weight; a run that does not need it is by weight alone."""
    def fast_items():
        return [item("tests/runtime/test_runtime_signature.py", "sig", ["bundle_tarball"]),
                item("tests/runtime/test_runtime_cli.py", "cli", ["bundle", "bundle_tarball"]),
                item("tests/pipeline/test_variants.py", "var", ["built"]),
                item("tests/pipeline/test_train.py", "train", ["built", "tutorial"]),
                item("tests/runtime/test_serve_watchdog.py", "dog"),
                item("tests/deploy/test_devicecheck.py", "dev"),
                item("tests/pipeline/test_dataset.py", "data")]

    items = fast_items()
    longest_first(items, ROOT, workers=3)
    assert [i.name for i in items] == ["data", "dog", "dev", "sig", "cli", "var", "train"]
    items = fast_items()
    longest_first(items, ROOT, workers=1)
    assert [i.name for i in items] == ["data", "sig", "cli", "var", "dog", "train", "dev"]
    # Fewer free files than workers: all of them first.
    items = [i for i in fast_items() if i.name != "dog" and i.name != "data"]
    longest_first(items, ROOT, workers=3)
    assert [i.name for i in items] == ["dev", "sig", "cli", "var", "train"]
    # Nothing needs the build: by weight alone.
    items = [i for i in fast_items() if not {"built", "bundle_tarball"} & set(i.fixturenames)]
    longest_first(items, ROOT, workers=3)
    assert [i.name for i in items] == ["data", "dog", "dev"]
