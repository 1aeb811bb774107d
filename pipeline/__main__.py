"""`python -m pipeline <stage>`: the command line behind the make targets.

Exit codes: 0 done; 1 a check of the model failed (verify breach, diverged training,
bad export); 2 bad command line or config; 3 a file could not be read or written;
4 inconsistent state (e.g. bundling a model that did not pass verify). See README.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from . import config as config_mod
from .errors import EXIT_IO, PipelineError
from .lock import exclusive
from .quiet import filtered_stderr

STAGES = ("train", "export", "verify", "bundle")
EXTRA = ("plot",)  # draws build/train/loss.png; train does it too unless --no-plot


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Train -> export (ONNX, TFLite) -> verify -> bundle, one stage at a time. "
        "`make all` runs the stages that are out of date.",
    )
    p.add_argument(
        "stage",
        choices=("config", *STAGES, *EXTRA, "all"),
        help="config: validate CONFIG and write it to --out if it changed; "
        "plot: redraw build/train/loss.png from history.json; "
        "all: every stage in order, in one process",
    )
    p.add_argument("--config", default="configs/default.toml", help="TOML config (default: %(default)s)")
    p.add_argument("--build", default="build", help="folder for build outputs (default: %(default)s)")
    p.add_argument("--dist", default="dist", help="folder for the bundle (default: %(default)s)")
    p.add_argument("--out", help="config stage only: where to write the validated copy")
    p.add_argument("--no-plot", action="store_true", help="train only: leave loss.png to `plot`")
    return p


def _say(msg: str) -> None:
    print(msg, flush=True)


def stage_config(cfg_path: Path, out: Path | None) -> None:
    """Validate; with --out, copy the file there only if its content changed (so make sees no change)."""
    config_mod.load(cfg_path)
    if out is None:
        _say(f"config: {cfg_path} is valid")
        return
    from . import fsutil

    data = cfg_path.read_bytes()
    if out.is_file() and out.read_bytes() == data:
        return
    fsutil.write_bytes(out, data)
    _say(f"config: {cfg_path} -> {out}")


def stage_train(cfg, build: Path, plot: bool = True) -> None:
    from . import train

    t0 = time.perf_counter()
    h = train.run(cfg, build, plot=plot)
    w = h["weights"]
    wb = f"w = {w[0]['kernel'][0][0]:.6f}, b = {w[0]['bias'][0]:.6f}; " if len(w) == 1 else ""
    ls = h["least_squares"]
    _say(
        f"train: {h['steps']} steps in {h['train_seconds']:.2f} s, final loss {h['final_loss']:.6g}; "
        f"{wb}100 degC -> {h['prediction_at_100c']:.4f} degF "
        f"(least-squares optimum: w = {ls['w']:.6f}, b = {ls['b']:.6f}, {ls['prediction_at_100c']:.4f} degF) "
        f"-> {build}/model.keras [{time.perf_counter() - t0:.1f} s]"
    )


def stage_export(cfg, build: Path) -> None:
    from . import export_stage

    t0 = time.perf_counter()
    s = export_stage.run(cfg, build)
    o = s["onnx"]
    _say(
        f"export: {build}/model.onnx ({s['onnx_bytes']} B, opset {o['opset_imports'].get('ai.onnx')}, "
        f"IR {o['ir_version']}), {build}/model.tflite ({s['tflite_bytes']} B), "
        f"Keras reference on {s['probes']} probes [{time.perf_counter() - t0:.1f} s]"
    )


def stage_verify(cfg, build: Path, dist: Path) -> None:
    from . import verify

    t0 = time.perf_counter()
    r = verify.run(cfg, build, dist)
    p, a = r["parity"], r["accuracy"]
    _say(
        "verify: passed; max abs err vs Keras: "
        + ", ".join(f"{f} {p[f]['max_abs_err']:.3g}" for f in p)
        + "; MAE vs formula (degF): "
        + ", ".join(f"{f} {a[f]['mae_f']:.4f}" for f in a)
        + f" -> {build}/verify/report.md [{time.perf_counter() - t0:.1f} s]"
    )


def stage_bundle(cfg, cfg_path: Path, build: Path, dist: Path) -> None:
    from . import bundle

    t0 = time.perf_counter()
    b = bundle.run(cfg, cfg_path, build, dist)
    _say(
        f"bundle: {b['tarball']} ({b['bytes']} B, sha256 {b['sha256']}), unpacked in {b['folder']} "
        f"[{time.perf_counter() - t0:.1f} s]"
    )


def stage_plot(build: Path) -> None:
    from . import lossplot

    t0 = time.perf_counter()
    dest = lossplot.run(build)
    _say(f"plot: {dest} [{time.perf_counter() - t0:.1f} s]")


def run_stage(stage: str, cfg, cfg_path: Path, build: Path, dist: Path, plot: bool = True) -> None:
    if stage == "train":
        stage_train(cfg, build, plot)
    elif stage == "plot":
        stage_plot(build)
    elif stage == "export":
        stage_export(cfg, build)
    elif stage == "verify":
        stage_verify(cfg, build, dist)
    else:
        stage_bundle(cfg, cfg_path, build, dist)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg_path, build, dist = Path(args.config), Path(args.build), Path(args.dist)
    try:
        if args.stage == "config":
            if args.out is None:
                stage_config(cfg_path, None)
            else:
                with exclusive(build):
                    stage_config(cfg_path, Path(args.out))
            return 0
        if args.out:
            raise config_mod.ConfigError(None, "--out", "only valid with the config stage")
        cfg = config_mod.load(cfg_path)
        stages = STAGES if args.stage == "all" else (args.stage,)
        with contextlib.nullcontext() if stages == ("plot",) else exclusive(build, dist):
            for stage in stages:
                with filtered_stderr():
                    run_stage(stage, cfg, cfg_path, build, dist, plot=not args.no_plot)
        return 0
    except PipelineError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # an I/O failure no stage anticipated: still one line, named
        where = e.filename or "(no file name)"
        print(f"error: cannot read or write {where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
