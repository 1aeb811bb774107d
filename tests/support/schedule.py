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
    "tests/deploy/test_deploy.py": 222,
    "tests/deploy/test_pull_systemd.py": 207,
    "tests/pipeline/test_examples.py": 189,
    "tests/deploy/test_deploy_systemd.py": 167,
    "tests/pipeline/test_your_model.py": 139,
    "tests/pipeline/test_faults.py": 105,
    "tests/deploy/test_deploy_pi.py": 99,
    "tests/deploy/test_deploy_signing.py": 98,
    "tests/deploy/test_deploy_service.py": 85,
    "tests/deploy/test_picheck.py": 75,
    "tests/deploy/test_deploy_refusals.py": 72,
    "tests/pipeline/test_train.py": 66,
    "tests/pipeline/test_baseline.py": 62,
    "tests/deploy/test_deploy_lock.py": 59,
    "tests/pipeline/test_export_multi.py": 40,
    "tests/runtime/test_runtime_fuzz.py": 40,
    "tests/deploy/test_devicecheck.py": 40,
    "tests/pipeline/test_example_tank.py": 34,
    "tests/pipeline/test_make.py": 29,
    "tests/pipeline/test_pipeline_cli.py": 28,
    "tests/runtime/test_serve_traffic.py": 25,
    "tests/runtime/test_serve.py": 19,
    "tests/pipeline/test_export.py": 19,
    "tests/pipeline/test_dataset.py": 18,
    "tests/pipeline/test_signing_build.py": 16,
    "tests/runtime/test_runtime_cli.py": 14,
}

# The same for `make test-fast` (no slow, ssh, qemu or root test selected), where most long files
# above are left out: each file's time in one run of it (3 workers, 2 cores).
FAST_SECONDS = {
    "tests/runtime/test_runtime_signature.py": 17,
    "tests/runtime/test_runtime_cli.py": 17,
    "tests/pipeline/test_variants.py": 13,
    "tests/pipeline/test_dataset.py": 12,
    "tests/runtime/test_serve_watchdog.py": 11,
    "tests/deploy/test_deploy_arguments.py": 8,
    "tests/runtime/test_trust.py": 5,
    "tests/runtime/test_runtime_env.py": 5,
    "tests/runtime/test_serve.py": 5,
    "tests/pipeline/test_signing_build.py": 4,
    "tests/pipeline/test_verify.py": 4,
    "tests/deploy/test_deploy_wheelhouse.py": 4,
    "tests/pipeline/test_bundle.py": 3,
    "tests/pipeline/test_train.py": 3,
    "tests/runtime/test_runtime_multi.py": 3,
}

FAST_OUT = {"slow", "ssh", "qemu", "root"}  # the markers test-fast leaves out (the Makefile's FAST)

# A file not listed: by its heaviest marker (seconds, below every listed file).
_BY_MARKER = (("qemu", 15), ("ssh", 12), ("root", 10), ("slow", 8))


def weight(path: str, markers: set[str], fast: bool = False) -> float:
    """The scheduling weight of the test file at ``path`` (relative to the repository, with /);
    ``fast``: in a run of test-fast's tests alone."""
    table = FAST_SECONDS if fast else SECONDS
    if path in table:
        return table[path]
    return next((w for name, w in _BY_MARKER if name in markers), 0)


# The fixtures of the default config's build (tests/conftest.py), made once per run: it starts in
# the background as soon as the tests are collected (~10 s of one core), and a test that asks for
# it before then waits.
DEFAULT_BUILD = {"built", "bundle_tarball"}


def needs_default_build(item) -> bool:
    return bool(DEFAULT_BUILD & set(item.fixturenames))


def longest_first(items: list, root, workers: int = 1) -> None:
    """Sort pytest's ``items`` in place: the files by weight, heaviest first; a file's own tests
    keep their order (a deploy file takes its hosts through states one test after another).

    ``workers``: pytest-xdist's, which start on the first ``workers`` files in this order. Those
    places go to the heaviest files that do not need the default build, so that every worker has
    work while it is made (a worker that started on a file that needs it would wait, and on two
    cores the second one would idle: test-fast's first 10-20 s)."""
    paths = {id(item): item.path.relative_to(root).as_posix() for item in items}
    marks = {id(item): {m.name for m in item.iter_markers()} for item in items}
    fast = not any(marks[id(item)] & FAST_OUT for item in items)
    first: dict[str, int] = {}
    heaviest: dict[str, float] = {}
    for i, item in enumerate(items):
        path = paths[id(item)]
        first.setdefault(path, i)
        heaviest[path] = max(heaviest.get(path, 0), weight(path, marks[id(item)], fast))
    files = sorted(first, key=lambda path: (-heaviest[path], first[path]))
    needs = {paths[id(item)] for item in items if needs_default_build(item)}
    if needs:
        free = [path for path in files if path not in needs][:workers]
        files = free + [path for path in files if path not in free]
    rank = {path: i for i, path in enumerate(files)}
    items.sort(key=lambda item: rank[paths[id(item)]])
