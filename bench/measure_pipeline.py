"""The pipeline's timings: `make all` from empty and with nothing changed, each stage in its
own process, the train loop against `model.fit`, and "the plain way" (one tutorial script)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from bench.proc import PY, ROOT, run
from bench.stats import stats

STAGES = ("train", "export", "verify", "bundle")


def make(*args: str) -> list[str]:
    return ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={Path(PY).parent.parent}", *args]


# The options `python -m pipeline` takes before its command (Makefile: PIPELINE, the config
# rule); each is followed by its value unless written --option=value.
_GLOBAL_OPTIONS = ("--config", "--build", "--dist")


def _words(line: str) -> list[str]:
    """A recipe line's words as the shell splits them, each operator (``;``, ``||``, ``&&``, ``|``,
    parentheses) a word of its own: ``... export;`` is the command ``export``, then ``;``."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = ""  # as shlex.split: a # inside a word is part of it
    try:
        return list(lex)
    except ValueError:  # an unbalanced quote
        return line.split()


def stages_run(make_stdout: str) -> list[str]:
    """The pipeline commands a make run started, one per recipe line make echoed, in order.

    A line counts when it runs ``-m pipeline``; its command is the first word after the
    pipeline's own options (``... --dist DIR train --no-plot`` is train), whatever shell
    operators surround it (``make -n`` shows the export recipe's test, then
    ``|| { echo '...'; python -m pipeline ... export; }``; the quoted echo is one word, no
    command). The config check (``config``) is not a stage: it is the one Python a run with
    nothing changed may start. Any other command counts, known to this list of stages or not,
    so a recipe added to the Makefile is counted rather than missed.
    """
    found = []
    for line in make_stdout.splitlines():
        words = _words(line)
        i = next((k + 2 for k in range(len(words) - 1) if words[k] == "-m" and words[k + 1] == "pipeline"), None)
        while i is not None and i < len(words) and words[i].startswith("-"):
            i += 2 if words[i] in _GLOBAL_OPTIONS else 1
        if i is not None and i < len(words) and words[i] != "config":
            found.append(words[i])
    return found


def bench_pipeline(work: Path, runs: int, quick: bool) -> dict:
    out: dict = {}
    walls, noops, stage_times = [], [], {s: [] for s in STAGES}
    for _ in range(runs):
        d = work / "make"
        shutil.rmtree(d, ignore_errors=True)
        walls.append(run(make("all", f"BUILD={d}/build", f"DIST={d}/dist")).wall_s)
        for _ in range(3):
            noops.append(run(make("all", f"BUILD={d}/build", f"DIST={d}/dist")).wall_s)
        d = work / "stages"
        shutil.rmtree(d, ignore_errors=True)
        for stage in stage_times:
            stage_times[stage].append(run([PY, "-m", "pipeline", stage, "--build", f"{d}/build",
                                           "--dist", f"{d}/dist"]).wall_s)
    out["make_all_from_empty_s"] = stats(walls)
    out["make_all_noop_s"] = stats(noops)
    out["stages_s"] = {s: stats(v) for s, v in stage_times.items()}
    # A no-op run must start no stage: the only Python make runs is the config check.
    noop = run(make("all", f"BUILD={work}/make/build", f"DIST={work}/make/dist"), capture=True, check=False)
    out["noop_stages"] = stages_run(noop.out)
    out["noop_stages_run"] = len(out["noop_stages"])

    tut = work / "tutorial"
    shutil.rmtree(tut, ignore_errors=True)
    out["tutorial_train_stage_s"] = stats([
        run([PY, "-m", "pipeline", "train", "--config", "configs/tutorial.toml", "--build", str(tut)]).wall_s
        for _ in range(runs)
    ])
    if quick:  # model.fit(epochs=500) alone takes ~15 s here
        return out
    tvf = run([PY, str(ROOT / "bench" / "train_vs_fit.py"), "3"], capture=True).json()
    ratios = [f / o for f, o in zip(tvf["fit_s"], tvf["compiled_loop_s"])]
    out["train_loop_vs_fit"] = {
        "compiled_loop_s": stats(tvf["compiled_loop_s"]), "fit_500_epochs_s": stats(tvf["fit_s"]),
        "speedup": stats(ratios), "identical_weights": tvf["identical_weights"],
    }
    plain = [run([PY, str(ROOT / "bench" / "plain_way.py")], capture=True, what="the plain way") for _ in range(runs)]
    walls_plain = [p.wall_s for p in plain]
    out["plain_way_s"] = stats(walls_plain)
    out["plain_way_fit_s"] = stats([p.json()["parts"]["fit"] for p in plain])
    out["plain_way_ratio"] = stats([p / m for p, m in zip(walls_plain, walls)])
    out["make_all_vs_plain_way"] = stats([m / p for p, m in zip(walls_plain, walls)])  # the goal's way round
    return out
