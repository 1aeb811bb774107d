"""The order pytest-xdist hands the test files to its workers: the longest first.

With ``--dist loadfile`` a file's tests run on one worker, in order, and the run ends when the
last worker ends. pytest-xdist's own order (files with the most tests first) put the longest
files, a deploy or an emulated Pi of one or two tests, at the end of the run, where one worker
ran on while the others had nothing left to do. Handing out the longest files first (the
greedy rule for scheduling jobs on a few machines) lets the many short files fill the gaps.

``SECONDS`` is each long file's time in one run of ``make test`` (3 workers, 2 cores, summed
over its tests with pytest's ``--durations=0``). A stale figure only costs speed, never a
verdict: a file not listed weighs by its markers, below every listed one.
"""

from __future__ import annotations

SECONDS = {
    "tests/pipeline/test_your_model.py": 270,
    "tests/deploy/test_deploy.py": 317,
    "tests/deploy/test_pull_systemd.py": 288,
    "tests/pipeline/test_examples.py": 249,
    "tests/deploy/test_deploy_systemd.py": 232,
    "tests/pipeline/test_baseline.py": 175,
    "tests/deploy/test_picheck.py": 147,
    "tests/deploy/test_deploy_service.py": 144,
    "tests/deploy/test_deploy_lock.py": 139,
    "tests/deploy/test_deploy_signing.py": 135,
    "tests/deploy/test_deploy_refusals.py": 132,
    "tests/pipeline/test_faults.py": 109,
    "tests/deploy/test_deploy_pi.py": 101,
    "tests/runtime/test_runtime_fuzz.py": 90,
    "tests/pipeline/test_train.py": 75,
    "tests/pipeline/test_make.py": 75,
    "tests/pipeline/test_dataset.py": 68,
    "tests/runtime/test_runtime_signature.py": 64,
    "tests/pipeline/test_bundle.py": 62,
    "tests/pipeline/test_pipeline_cli.py": 53,
    "tests/pipeline/test_example_tank.py": 53,
    "tests/pipeline/test_export_multi.py": 51,
    "tests/deploy/test_devicecheck.py": 49,
    "tests/runtime/test_serve_traffic.py": 40,
    "tests/pipeline/test_signing_build.py": 39,
    "tests/runtime/test_runtime_cli.py": 39,
}

# A file not listed: by its heaviest marker (seconds, below every listed file).
_BY_MARKER = (("qemu", 15), ("ssh", 12), ("root", 10), ("slow", 8))


def weight(path: str, markers: set[str]) -> float:
    """The scheduling weight of the test file at ``path`` (relative to the repository, with /)."""
    if path in SECONDS:
        return SECONDS[path]
    return next((w for name, w in _BY_MARKER if name in markers), 0)


def longest_first(items: list, root) -> None:
    """Sort pytest's ``items`` in place: the files by weight, heaviest first; a file's own tests
    keep their order (a deploy file takes its hosts through states one test after another)."""
    paths = {id(item): item.path.relative_to(root).as_posix() for item in items}
    first: dict[str, int] = {}
    heaviest: dict[str, float] = {}
    for i, item in enumerate(items):
        path = paths[id(item)]
        first.setdefault(path, i)
        marks = {m.name for m in item.iter_markers()}
        heaviest[path] = max(heaviest.get(path, 0), weight(path, marks))
    items.sort(key=lambda item: (-heaviest[paths[id(item)]], first[paths[id(item)]]))
