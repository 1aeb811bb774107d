"""`python -m pipeline <stage>`: the command line behind the make targets.

Exit codes: 0 done; 1 a check of the model failed (verify breach, diverged training,
bad export); 2 bad command line or config (or a SIGNING_KEY that cannot sign); 3 a file
could not be read or written; 4 inconsistent state (e.g. bundling a model that did not
pass verify); 5 this Python lacks a package the pipeline needs (run it with the project's
.venv). See docs/exit-codes.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from export.errors import ExportError

from . import config as config_mod
from .errors import EXIT_IO, MissingDependency, PipelineError
from .layout import Layout
from .lock import exclusive, remove_stale
from .quiet import filtered_stderr


# What each command reads and writes (its --help; docs/pipeline.md, "The stages").
COMMANDS = {
    "config": ("validate CONFIG and the data it names; with --out, copy it there when its content or folder "
               "changed",
               "reads CONFIG and the data files it names; writes OUT (make uses BUILD/config.toml, the config "
               "in force), and beside it config.origin (CONFIG's folder, where its relative paths start) and "
               "inputs.mk (INPUT_FILES: the data, builder, oracle or model.keras files the run reads)"),
    "train": ("train the Keras model (with --export, export it in the same process)",
              "reads CONFIG and its data; writes BUILD/model.keras, BUILD/train/history.json and "
              "BUILD/train/loss.png (not with --no-plot); with --export, what export writes too"),
    "plot": ("draw the loss curve and verify's plots",
             "reads BUILD/train/history.json and BUILD/verify/plots.npz (each if there, or the one --only "
             "names); writes BUILD/train/loss.png, BUILD/verify/validation.png and accuracy-vs-size.png"),
    "export": ("convert the Keras model to ONNX and TFLite, and the variants [variants] lists; "
               "record Keras's outputs on the probes",
               "reads CONFIG, BUILD/model.keras; writes BUILD/model.onnx, BUILD/model.tflite, "
               "BUILD/variants/ (each variant and index.json), BUILD/reference.npz"),
    "verify": ("check ONNX, TFLite and each variant against Keras and the validation rows; choose the bundle's "
               "model",
               "reads CONFIG, BUILD/model.onnx, BUILD/model.tflite, BUILD/variants/, BUILD/reference.npz, "
               "BUILD/train/history.json (if there); writes BUILD/verify/report.json, report.md and plots.npz; "
               "on a failure removes DIST/bundle and DIST/bundle.tar.gz"),
    "bundle": ("make the device bundle from a verified model, signed with --signing-key if given",
               "reads CONFIG, BUILD/verify/report.json, the model it chose (BUILD/model.onnx or a "
               "variant), BUILD/reference.npz, "
               "runtime/ and the signing key if any; writes DIST/bundle/ and DIST/bundle.tar.gz (with "
               "bundle/manifest.json.sig when signed) and BUILD/signing.txt (the key's fingerprint, or "
               "'unsigned')"),
    "all": ("train, export, verify and bundle in one process (and the plots)",
            "reads CONFIG; writes everything the four stages write"),
}
RECORDS = "Every stage but plot also records CONFIG as BUILD/config.toml, the config make compares with."


def _options(defaults: bool) -> argparse.ArgumentParser:
    """--config, --build, --dist: accepted before and after the command.

    The copy given to each command has no defaults (SUPPRESS), so an option given before
    the command is not overwritten by the command's default.
    """
    def d(value):
        return value if defaults else argparse.SUPPRESS

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", default=d("configs/default.toml"), metavar="CONFIG",
                   help="TOML config (default: configs/default.toml)")
    p.add_argument("--build", default=d("build"), metavar="BUILD", help="folder for build outputs (default: build)")
    p.add_argument("--dist", default=d("dist"), metavar="DIST", help="folder for the bundle (default: dist)")
    return p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline",
        parents=[_options(defaults=True)],
        description="Train -> export (ONNX, TFLite) -> verify -> bundle, one stage at a time. "
        "`make all` runs the stages that are out of date. Run it with the project's venv "
        "(.venv/bin/python -m pipeline ..., made by `make venv`).",
        epilog=RECORDS + " `python -m pipeline COMMAND --help` says what a command reads and writes. "
        "Exit codes: docs/exit-codes.md.",
    )
    sub = p.add_subparsers(dest="stage", required=True, metavar="command")
    for name, (summary, files) in COMMANDS.items():
        c = sub.add_parser(name, parents=[_options(defaults=False)], help=summary,
                           description=f"{summary}. {files[0].upper()}{files[1:]}.",
                           epilog=None if name in ("config", "plot") else RECORDS)
        if name == "config":
            c.add_argument("--out", metavar="OUT", help="where to write the validated copy")
        if name == "train":
            c.add_argument("--no-plot", action="store_true", help="leave loss.png to `plot` (make draws it in parallel)")
            c.add_argument("--export", action="store_true", help="then export in the same process (one TensorFlow "
                           "start: make's recipe when both stages are out of date)")
        if name == "plot":
            c.add_argument("--only", choices=("loss", "verify"), help="draw just these plots")
        if name in ("bundle", "all"):
            c.add_argument("--signing-key", metavar="PATH", default=os.environ.get("SIGNING_KEY"),
                           help="sign manifest.json with this OpenSSH private key (ssh-keygen -Y sign; "
                           "`make keys KEY=path` writes one); default: $SIGNING_KEY; unset or empty: unsigned")
    return p


def _say(msg: str) -> None:
    print(msg, flush=True)


def _check_data(cfg):
    """Read and check the data now (numpy only), so bad data fails here, exit 2, before TensorFlow;
    return it (a dataset.Dataset), for the stages of this process to use rather than read it again."""
    from . import dataset  # not at the top: a Python without numpy gets main()'s one line (exit 5)

    return dataset.load(cfg)


def _write_if_changed(path: Path, data: bytes) -> bool:
    from . import fsutil

    if path.is_file() and path.read_bytes() == data:
        return False
    fsutil.write_bytes(path, data)
    return True


def _make_path(p: str) -> str:
    """A path as a make word: spaces, '#' and '$' escaped."""
    return p.replace("$", "$$").replace("#", "\\#").replace(" ", "\\ ")


def copy_config(cfg_path: Path, out: Path, cfg) -> bool:
    """Make OUT the config in force: a copy of CONFIG, with ``config.origin`` beside it (the folder
    relative paths start from) and ``inputs.mk`` (the files outside the config the run reads,
    for make). Each is written only when its content changed; the copy also when the origin did,
    so make sees a change. True if the copy was (re)written."""
    origin = (str(config_mod.origin_of(cfg_path)) + "\n").encode()
    origin_file = out.parent / config_mod.ORIGIN_NAME
    changed = False
    if cfg_path.resolve() != out.resolve():
        data = cfg_path.read_bytes()
        same = (out.is_file() and out.read_bytes() == data and origin_file.is_file()
                and origin_file.read_bytes() == origin)
        if not same:
            from . import fsutil

            fsutil.write_bytes(out, data)  # first: killed before the origin, the next run rewrites both
            _write_if_changed(origin_file, origin)
            changed = True
    inputs = " ".join(_make_path(f) for f in config_mod.input_files(cfg))
    _write_if_changed(out.parent / config_mod.INPUTS_MK_NAME, f"INPUT_FILES := {inputs}\n".encode())
    return changed


def stage_config(cfg_path: Path, out: Path | None, build: Path | None = None) -> None:
    """Validate the config and its data; with --out, copy the file there only if its
    content or origin changed (so make sees no change otherwise), holding BUILD's lock if given.
    Nothing is written (not even the lock) for a bad config or bad data."""
    from .dataset import summary

    cfg = config_mod.load(cfg_path)
    data = summary(_check_data(cfg))
    if out is None:
        _say(f"config: {cfg_path} is valid; {data}")
        return
    with exclusive(build) if build is not None else contextlib.nullcontext():
        if copy_config(cfg_path, out, cfg):
            _say(f"config: {cfg_path} -> {out}; {data}")


def stage_train(cfg, layout: Layout, plot: bool = True, then_export: bool = False, ds=None) -> None:
    from . import tflite_worker, train

    # Export's TFLite worker starts now, so that its TensorFlow import overlaps this one's.
    worker = tflite_worker.start(cfg) if then_export else None
    try:
        t0 = time.perf_counter()
        h, model = train.run(cfg, layout, plot=plot, ds=ds)
        _say(train_summary(h, layout) + f" [{time.perf_counter() - t0:.1f} s]")
        if then_export:
            stage_export(cfg, layout, worker, model, h["output_kind"], ds)
    finally:
        if worker is not None:
            worker.close()


def stage_export(cfg, layout: Layout, worker=None, model=None, kind=None, ds=None) -> None:
    from . import export_stage

    t0 = time.perf_counter()
    s = export_stage.run(cfg, layout, worker, model, kind, ds)
    o, gp = s["onnx"], s.get("graph_pass") or {}
    fused = (f", graph pass {gp['nodes_before']} -> {gp['nodes_after']} nodes"
             if gp.get("nodes_before") != gp.get("nodes_after") else "")
    w = s["from_worker"]
    by_worker = ("" if w is None else f" ({w} from the TFLite worker)" if w
                 else " (none from the TFLite worker: converted here)")
    _say(
        f"export: {layout.model_onnx} ({s['onnx_bytes']} B, opset {o['opset_imports'].get('ai.onnx')}, "
        f"IR {o['ir_version']}{fused}), {layout.model_tflite} ({s['tflite_bytes']} B), "
        f"{sum(v['built'] for v in s['variants'].values())} of {len(s['variants'])} variants in {layout.variants_dir}/"
        f"{by_worker}, "
        f"Keras reference on {s['probes']} probes [{time.perf_counter() - t0:.1f} s]"
    )


def stage_verify(cfg, layout: Layout) -> None:
    from . import report, verify

    t0 = time.perf_counter()
    r = verify.run(cfg, layout)
    _say("verify: passed; " + report.headline(r) + variants_summary(r.get("variants", {}))
         + f" -> {layout.report_md} [{time.perf_counter() - t0:.1f} s]")
    for line in r.get("warnings", []):
        print(f"warning: verify: {line}", file=sys.stderr, flush=True)


def train_summary(h: dict, layout: Layout) -> str:
    """The train line: what was trained on, and how it ended."""
    if h.get("came_trained"):
        return f"train: {h['source']} came trained: checked against the data, copied to {layout.model_keras}"
    metric = h["metric"]
    val = (h.get("val_" + metric) or [float("nan")])[-1]
    batch = "of the full batch" if h["batch_size"] == "all" else f"of batch {h['batch_size']}"
    ls = h.get("least_squares") or {}
    best = f" (least-squares line {ls['loss']:.6g})" if ls.get("loss") is not None else ""
    return (f"train: {h['epochs']} epochs {batch} on {h['rows']['train']} rows ({h['parameters']:,} parameters) in "
            f"{h['train_seconds']:.2f} s, final loss {h['final_loss']:.6g}{best}, validation {metric} {val:.4g} "
            f"-> {layout.model_keras}")


def variants_summary(variants: dict) -> str:
    """'; variants within budget: 3 of 6 (failing: onnx-int8-static, ...)' ('' without variants)."""
    judged = {n: v for n, v in variants.items() if v.get("budget") is not None}
    if not judged:
        return ""
    failing = [n for n, v in judged.items() if not v["passed"]]
    return (f"; variants within budget: {len(judged) - len(failing)} of {len(judged)}"
            + (f" (failing: {', '.join(failing)})" if failing else ""))


def stage_bundle(cfg, layout: Layout, key=None) -> None:
    """The bundle, signed with ``key`` (a checked signing.SigningKey) or unsigned; its line says which."""
    from . import bundle

    t0 = time.perf_counter()
    b = bundle.run(cfg, layout, key)
    signed = f"signed by {b['signed_by']}" if b["signed_by"] else "unsigned (no SIGNING_KEY)"
    _say(
        f"bundle: {b['tarball']} ({b['bytes']} B, sha256 {b['sha256']}, model {b['model']}), unpacked in {b['folder']}, "
        f"{signed} [{time.perf_counter() - t0:.1f} s]"
    )


def stage_plot(layout: Layout, only: str | None = None) -> None:
    from . import plots

    t0 = time.perf_counter()
    drawn = []
    if only == "loss" or (only is None and layout.history.exists()):
        drawn.append(plots.run_loss(layout))
    if only == "verify" or (only is None and layout.plots_npz.exists()):
        drawn += plots.run_verify(layout)
    if not drawn:
        plots.run_loss(layout)  # names what is missing
    _say(f"plot: {', '.join(map(str, drawn))} [{time.perf_counter() - t0:.1f} s]")


def run_stage(stage: str, cfg, layout: Layout, plot: bool = True, only: str | None = None, key=None,
              then_export: bool = False, ds=None) -> None:
    """Run one stage; ``ds``: the data main() checked, which train and export use as it is."""
    if stage == "train":
        stage_train(cfg, layout, plot, then_export, ds)
    elif stage == "plot":
        stage_plot(layout, only)
    elif stage == "export":
        stage_export(cfg, layout, ds=ds)
    elif stage == "verify":
        stage_verify(cfg, layout)
    else:
        stage_bundle(cfg, layout, key)


def record_config(cfg_path: Path, layout: Layout, cfg=None) -> None:
    """Make ``cfg_path`` the config in force (BUILD/config.toml), as `make config` would.

    make decides what is out of date by comparing CONFIG with BUILD/config.toml; a stage
    run by hand with another config records it there too, so the next `make all` with a
    different config sees the change and rebuilds. Written only when the content (or the
    folder it came from, BUILD/config.origin) differs; BUILD/inputs.mk likewise.
    """
    copy_config(cfg_path, layout.config_in_force, cfg if cfg is not None else config_mod.load(cfg_path))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg_path, build, dist = Path(args.config), Path(args.build), Path(args.dist)
    layout = Layout(build, dist)
    try:
        if args.stage == "config":
            stage_config(cfg_path, None if args.out is None else Path(args.out), build)
            return 0
        cfg = config_mod.load(cfg_path)
        # all: train exports too, so that export's TFLite worker starts before TensorFlow is imported
        stages = ("train", "verify", "bundle") if args.stage == "all" else (args.stage,)
        then_export = args.stage == "all" or getattr(args, "export", False)
        ds = None if stages == ("plot",) else _check_data(cfg)  # bad data fails before any lock, output or TensorFlow
        key = None
        if "bundle" in stages:  # a key that cannot sign fails here too, before training
            from . import signing

            key = signing.configured(args.signing_key)
        with contextlib.nullcontext() if stages == ("plot",) else exclusive(build, dist):
            if stages != ("plot",):
                record_config(cfg_path, layout, cfg)
            else:  # no lock (it runs beside export), but what a killed plot left is removed all the same
                remove_stale(build)
            for stage in stages:
                with filtered_stderr():
                    run_stage(stage, cfg, layout, plot=not getattr(args, "no_plot", False),
                              only=getattr(args, "only", None), key=key, then_export=then_export, ds=ds)
            if args.stage == "all":  # verify's plots, which make draws as a job of its own
                run_stage("plot", cfg, layout, only="verify")
        return 0
    except (PipelineError, ExportError) as e:
        for line in e.message.splitlines():
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:  # run outside the venv, or the venv is incomplete
        if (e.name or "").split(".")[0] in ("pipeline", "export", "runtime"):
            raise  # one of ours: a bug, keep its traceback
        err = MissingDependency(e.name or str(e), " ".join(["python -m pipeline", *(argv or sys.argv[1:])]))
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    except OSError as e:  # an I/O failure no stage anticipated: still one line, named
        where = e.filename or "(no file name)"
        print(f"error: cannot read or write {where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def exit_now(code: int) -> None:
    """Exit with ``code``; once TensorFlow was imported, without the interpreter's teardown.

    main() has finished by then: every output is written and closed, the build lock released,
    the temporary folders removed. What is left is TensorFlow's own teardown (its graphs, thread
    pools and atexit handlers), 0.6-0.9 s here for nothing a user can see."""
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
