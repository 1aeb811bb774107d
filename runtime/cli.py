"""`python -m runtime <command> [--bundle DIR]`: the device runner's command line.

Exit codes: 0 success; 1 the bundle failed a check (hash, onnxruntime version, golden
outputs, model load); 2 bad input or command line (in `stream`: at least one bad line; or
an unreadable trusted-keys file); 3 `serve` cannot listen or read its token file; 5 this
Python cannot run the runner (too old, numpy/onnxruntime missing, or no ssh-keygen to check
a signature); with trusted keys, 6 the bundle is unsigned, 7 signed by a key not trusted,
8 its manifest changed after signing (docs/exit-codes.md).

Imports neither numpy nor onnxruntime before env.require() has checked that they import,
so a missing one is one `error:` line saying how to fix it, and `--help` needs neither.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import env
from . import manifest as manifest_mod
from .errors import EXIT_BAD_INPUT, InputError, RuntimeFailure, SetupError


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = low - 1
        if n < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return n

    return parse


_positive = _int_at_least(1)


def _terminal_columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size().columns`` finds it: $COLUMNS, else
    stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, given the width it would work out itself with shutil: argparse
    makes one for every add_argument, and shutil's import (with bz2, lzma and zlib) was ~4 ms
    of every cold command, `predict` included. The same help text."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position,
                         _terminal_columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose formatter is ``_Formatter`` (its subparsers are of its class too)."""

    def __init__(self, *args, formatter_class=_Formatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--bundle", metavar="DIR",
                        help="unpacked bundle folder (default: the one this runtime sits in; "
                             "from a checkout, dist/bundle)")
    common.add_argument("--threads", type=_positive, default=1, metavar="N",
                        help="onnxruntime intra-op threads (default: 1, no spinning)")
    common.add_argument("--trusted-keys", metavar="PATH",
                        help="run only bundles signed by a public key this file lists, one per line as KEY.pub "
                             "holds it (default: $EDGE_TRUSTED_KEYS, else /etc/edge-model/trusted_keys when "
                             "it exists; with none, unsigned bundles run, unverified in origin)")
    p = _Parser(
        prog="python -m runtime",
        description="A bundle's model on a device (by default the tutorial's Celsius -> Fahrenheit): its ONNX "
                    "model in onnxruntime, checked before it serves.",
        epilog="Exit codes: 0 ok; 1 a bundle check failed; 2 bad input or command line; "
               "3 serve cannot listen or read its token file; "
               "5 this Python cannot run the runner (too old, or numpy/onnxruntime missing); "
               "with trusted keys: 6 unsigned bundle, 7 signed by a key not trusted, 8 manifest changed after "
               "signing.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    pr = sub.add_parser("predict", parents=[common], help="predict for the values given, one line each",
                        description="A model of one value in and one out (the tutorial's: CELSIUS): one "
                                    "prediction per value. Any other model: the values are one example's "
                                    "features, in signature order (see `info`); many examples come from --input. "
                                    "Negative numbers need no '--'.")
    pr.add_argument("values", nargs="*", metavar="CELSIUS|FEATURE",
                    help="one value per prediction (a one-feature model: degrees Celsius for the tutorial's), "
                         "or one example's features")
    pr.add_argument("--input", metavar="FILE",
                    help="examples from FILE ('-': stdin): CSV rows of numbers (a header row is skipped), "
                         "JSON lines (one example a line, a nested or flat array), .npy of shape (n, *shape), or "
                         ".npz of one array per input, named as the input (a model of several inputs: .npz only)")
    pr.add_argument("--json", action="store_true",
                    help="print a JSON object instead of lines (outputs, labels, counts outside the observed range; "
                         "a one-feature model: its input and output under their names)")
    pr.set_defaults(subparser=pr)
    st = sub.add_parser("stream", parents=[common],
                        help="one example (a Celsius value, a CSV row or a JSON array) per stdin line -> "
                             "one line per input line")
    st.add_argument("--batch", type=_positive, default=4096, metavar="N", help="lines per micro-batch (default: 4096)")
    sc = sub.add_parser("selfcheck", parents=[common],
                        help="verify Python packages, hashes, onnxruntime version and golden outputs")
    sc.add_argument("--json", action="store_true", help="print the checks as JSON")
    sub.add_parser("info", parents=[common],
                   help="bundle, Python/numpy/onnxruntime versions, what the model needs, model I/O, threads")
    be = sub.add_parser("bench", parents=[common], help="cold start, latency, throughput and peak RSS, as JSON",
                        description="The tutorial's model (one value in, one out) is fed numbers; any other "
                                    "model its golden inputs (golden.json), by input name for a model of several "
                                    "inputs or outputs.")
    be.add_argument("--calls", type=_positive, default=20000, metavar="N", help="batch-1 calls timed (default: 20000)")
    be.add_argument("--large-batch", type=_positive, default=1_000_000, metavar="N",
                    help="batch size for throughput (default: 1000000; a model fed its golden inputs: that many "
                         "input values, in whole examples)")
    be.add_argument("--cold-runs", type=_int_at_least(0), default=5, metavar="N",
                    help="fresh processes timed for cold start; 0 skips (default: 5)")
    sv = sub.add_parser("serve", parents=[common],
                        help="serve the model over HTTP (POST /predict, GET /healthz /info /metrics)",
                        description="Serve the model over HTTP/1.1 after the bundle passes its self-check. "
                                    "SIGHUP re-checks the bundle path and swaps the model in if it passes; "
                                    "SIGTERM finishes the requests in flight and exits 0. Under systemd the "
                                    "listening socket comes from socket activation (LISTEN_FDS).")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    sv.add_argument("--port", type=_int_at_least(0), default=8080, metavar="N", help="TCP port (default: 8080)")
    sv.add_argument("--unix", metavar="PATH", help="listen on this Unix socket instead of --host/--port")
    sv.add_argument("--token-file", metavar="FILE", help="require 'Authorization: Bearer <the file's token>' "
                                                         "(all endpoints but /healthz)")
    sv.add_argument("--max-body", type=_positive, default=1 << 20, metavar="BYTES",
                    help="largest request body (default: 1048576)")
    sv.add_argument("--max-values", type=_positive, default=100_000, metavar="N",
                    help="most input values in one request, over all its examples (default: 100000)")
    sv.add_argument("--max-header", type=_positive, default=16 << 10, metavar="BYTES",
                    help="largest request line and headers together (default: 16384)")
    sv.add_argument("--idle-timeout", type=_seconds, default=10.0, metavar="S",
                    help="seconds a connection may take to send one whole request, or to start the next "
                         "(default: 10)")
    sv.add_argument("--max-connections", type=_positive, default=64, metavar="N",
                    help="connections served at once; more are answered 503 (default: 64)")
    sv.add_argument("--drain-timeout", type=_seconds, default=10.0, metavar="S",
                    help="seconds SIGTERM waits for requests in flight (default: 10)")
    sv.add_argument("--cpu", type=_cpu, default="auto", metavar="N|auto|any",
                    help="CPU for the connection threads: auto = the last one allowed (default), "
                         "N = that one, any = not pinned")
    return p


def _cpu(text: str) -> str:
    if text in ("auto", "any") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"expected a CPU number, auto or any, got {text!r}")


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v < 86400:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return v


_TAKES_A_VALUE = ("--bundle", "--threads", "--trusted-keys", "--input")  # predict's options with a value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _values_last(argv: list[str]) -> list[str]:
    """``predict``'s arguments with its CELSIUS values moved behind "--", in their order.

    argparse takes "-1e-3", "-inf" or "-.5e2" for options (it knows only plain negative
    numbers, and how differs between Python versions), so here every argument that reads
    as a number is a value, wherever it stands. An option's own value stays with it, joined
    as "--threads=N" so that argparse cannot mistake it either; after "--" all are values.
    """
    if argv[:1] != ["predict"]:
        return argv
    options, values = [], []
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--":
            values += rest
        elif len(arg) > 2 and "=" not in arg and any(o.startswith(arg) for o in _TAKES_A_VALUE):
            value = next(rest, None)  # none: argparse says "expected one argument"
            options.append(arg if value is None else f"{arg}={value}")
        elif arg.startswith("-") and arg != "-" and not _is_number(arg):
            options.append(arg)
        else:
            values.append(arg)
    return ["predict", *options, "--", *values]


def _takes_celsius(bundle: str | None) -> bool:
    """Whether the bundle's model takes one value named celsius (the tutorial's, and every
    bundle made before signatures): whether a value is "a number in degrees Celsius". Read
    quietly: whatever is wrong with the bundle is reported when it loads."""
    try:
        sig = manifest_mod.load(manifest_mod.locate(bundle)).get("signature")
    except RuntimeFailure:
        return True
    return sig is None or sig.get("input", {}).get("features") == ["celsius"]


def cmd_predict(args) -> int:
    from .runner import Runner
    from .stream import IN_CELSIUS, format_values, parse_celsius

    values = []
    for i, text in enumerate(args.values):
        try:
            values.append(parse_celsius(text))
        except ValueError as e:
            if not _takes_celsius(args.bundle):
                e = ValueError(str(e).replace(IN_CELSIUS, ""))
            raise InputError(f"argument {i + 1} = {text!r}: {e}") from None
    with Runner.from_bundle(args.bundle, args.threads, args.trusted_keys) as runner:
        if args.input is not None:
            return _predict_file(runner, args)
        if runner.multi:
            raise InputError(f"predict: model {runner.name!r} has several inputs or outputs; give its examples as "
                             f"--input FILE.npz (one array per input: {_names(runner.signature.input_names)})")
        if not runner.scalar:
            return _predict_example(runner, values, args.json)
        try:
            out = runner.predict(values)
        except InputError as e:
            if e.index is None:
                raise
            raise InputError(f"argument {e.index + 1} = {args.values[e.index]!r}: {e.problem}") from None
        if args.json and runner.signature.named_scalar:
            print(json.dumps(_named(runner, values, [float(v) for v in out], runner.validate(values))))
        elif args.json:
            _print_answers(runner, runner.validate(values), out.reshape(-1, 1), True)
        else:
            sys.stdout.write("".join(s + "\n" for s in format_values(out.tolist())))
    return 0


def _named(runner, inputs: list[float], outputs: list[float], x) -> dict:
    """`predict --json` for a named scalar model: the values under its feature's and output's
    names ({"celsius": [...], "fahrenheit": [...]} for the tutorial's), and the count outside
    the observed range for the valid batch ``x`` when the bundle records that range."""
    sig = runner.signature
    doc = {sig.features[0]: inputs, sig.output_names[0]: outputs}
    outside = _outside(runner, x)
    if outside is not None:
        doc["outside_observed"] = outside
    return doc


def _outside(runner, x) -> dict[str, int] | None:
    """Per feature, the values of the valid batch ``x`` outside the observed range (None when
    the bundle records no observed range)."""
    if runner.checker.obs_lo is None:
        return None
    return dict(zip(runner.signature.features, runner.checker.outside_observed(x).tolist()))


def _predict_example(runner, values: list[float], as_json: bool) -> int:
    """A non-scalar model: the command line's values are one example's features, flat."""
    import numpy as np

    sig = runner.signature
    if len(values) != sig.size:
        raise InputError(f"input: expected {sig.size} features, got {len(values)}")
    _print_answers(runner, *runner.answer(np.array(values, dtype=np.float64).reshape(sig.shape))[:2], as_json)
    return 0


def _print_answers(runner, x, y, as_json: bool) -> None:
    """The answers for the valid batch ``x`` and its outputs ``y``: one line per example, or one JSON object."""
    from .stream import format_answers

    if not as_json:
        sys.stdout.write("".join(s + "\n" for s in format_answers(runner, y)))
        return
    doc = {"model": runner.name, "outputs": y.tolist()}
    if runner.labels is not None:
        doc["labels"] = runner.labels_of(y)
    outside = _outside(runner, x)
    if outside is not None:
        doc["outside_observed"] = outside
    print(json.dumps(doc))


def _predict_file(runner, args) -> int:
    """``predict --input FILE``: every example in the file, answered in order."""
    from .examples import read_examples

    name = "stdin" if args.input == "-" else args.input
    if args.input == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(args.input, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InputError(f"--input {name}: cannot read: {e.strerror or e}") from None
    if runner.multi:
        return _predict_npz(runner, data, name, args.json)
    x, where = read_examples(runner, data, name)
    try:
        x, y, _ = runner.answer(x)
    except InputError as e:
        if e.index is None or e.problem is None:
            raise InputError(f"--input {name}: {e.message}") from None
        raise InputError(f"--input {name}{where(e.index)}: {e.problem}") from None
    if runner.signature.named_scalar and args.json:
        print(json.dumps(_named(runner, x.reshape(-1).tolist(), y.reshape(-1).tolist(), x)))
    else:
        _print_answers(runner, x, y, args.json)
    return 0


def _names(names: list[str]) -> str:
    return ", ".join(map(repr, names))


def _predict_npz(runner, data: bytes, name: str, as_json: bool) -> int:
    """``predict --input FILE.npz`` for a model of several inputs or outputs: one array per input,
    named as the input; one line per example (each output as ``name=values``, a classification's
    label first), or one JSON object with a key per output."""
    from .examples import read_npz
    from .stream import format_named_answers

    sig = runner.signature
    arrays = read_npz(data, name, sig.input_names)
    try:
        x, y, _ = runner.answer(arrays)
    except InputError as e:
        raise InputError(f"--input {name}: {e.message}") from None
    if as_json:
        labels = {t.name: runner.labels_of(y[t.name], t.name) for t in sig.outputs if t.labels is not None}
        doc = {"model": runner.name, "outputs": {k: v.tolist() for k, v in y.items()}}
        if labels:
            doc["labels"] = labels
        outside = {t.name: dict(zip(t.features, runner.checkers[t.name].outside_observed(x[t.name]).tolist()))
                   for t in sig.inputs if t.observed_min is not None}
        if outside:
            doc["outside_observed"] = outside
        print(json.dumps(doc))
        return 0
    sys.stdout.write("".join(line + "\n" for line in format_named_answers(runner, y)))
    return 0


def cmd_selfcheck(args) -> int:
    try:  # the first check, here too: without numpy the runner cannot even be imported
        env.require(args.bundle, args.argv)
    except SetupError as e:
        checks = [{"name": "python", "ok": False, "detail": e.message, "exit_code": e.exit_code}]
    else:
        from .runner import selfcheck

        checks = selfcheck(args.bundle, args.threads, args.trusted_keys)
    failed = next((c for c in checks if not c["ok"]), None)
    if args.json:
        print(json.dumps({"passed": failed is None, "checks": checks}, indent=2))
    else:
        for c in checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']:<12} {c['detail']}")
        print("selfcheck: passed" if failed is None else "selfcheck: FAILED")
    if failed is None:
        return 0
    print(f"error: selfcheck {failed['name']}: {failed['detail']}", file=sys.stderr)
    return failed["exit_code"]


def cmd_info(args) -> int:
    """All that can be known, as JSON, even when the model cannot load here: that is when
    it is needed. Then the exit code and the one `error:` line of the first problem."""
    found, _ = env.probe()
    info = {
        "bundle": None,
        "model_name": None,  # the manifest's model.name (what the v2 protocol serves it as)
        "signature": None,  # its summary: task, labels, input/output names and shapes, feature count
        "python": {"version": found["python"], "executable": sys.executable},
        "numpy": found["numpy"],
        "onnxruntime": found["onnxruntime"],
        "model_needs": None,  # opset, IR version and oldest onnxruntime, from the manifest
        "loaded": False,
        "problem": None,
        "manifest": None,
        "model_inputs": None,
        "model_outputs": None,
        "providers": None,
        "available_providers": None,
        "threads": {"intra_op": args.threads, "inter_op": 1, "spinning": False},
        "origin": None,  # the signature check: verified or not, the key that signed, the trusted keys
    }
    failure = None
    try:
        env.require(args.bundle, args.argv)
    except SetupError as e:
        failure = e
    try:
        bundle = manifest_mod.locate(args.bundle)
        info["bundle"] = str(bundle.resolve())
        info["manifest"] = manifest = manifest_mod.load(bundle)
        info["model_needs"] = {k: manifest["model"][k] for k in ("opset", "ir_version", "min_onnxruntime")}
        if failure is None:
            import onnxruntime as ort

            from .runner import Runner

            info["available_providers"] = ort.get_available_providers()
            with Runner.from_bundle(bundle, args.threads, args.trusted_keys) as r:
                info["origin"] = {**r.origin.summary(), "trusted_keys": r.origin.trusted_keys}
                sess = r.session
                info["model_inputs"] = [{"name": i.name, "shape": i.shape, "type": i.type} for i in sess.get_inputs()]
                info["model_outputs"] = [{"name": o.name, "shape": o.shape, "type": o.type} for o in sess.get_outputs()]
                info["providers"] = sess.get_providers()
            info["loaded"] = True
    except RuntimeFailure as e:
        failure = failure or e
    if info["manifest"] is not None:
        info["model_name"] = info["manifest"]["model"].get("name") or manifest_mod.TUTORIAL_NAME
        info["signature"] = manifest_mod.signature_summary(info["manifest"])
    info["problem"] = failure.message if failure else None
    print(json.dumps(info, indent=2))
    if failure is None:
        return 0
    print(f"error: {failure.message}", file=sys.stderr)
    return failure.exit_code


def cmd_stream(args) -> int:
    from .runner import Runner
    from .stream import stream

    with Runner.from_bundle(args.bundle, args.threads, args.trusted_keys) as runner:
        bad = stream(runner, sys.stdin.buffer, sys.stdout.buffer, batch=args.batch)
    if bad:
        print(f"error: stream: {bad} bad line(s); each got an 'error:' line in its place", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_bench(args) -> int:
    from . import bench

    result = bench.run(manifest_mod.locate(args.bundle).resolve(), args.threads, args.calls, args.large_batch,
                       args.cold_runs, args.trusted_keys)
    print(json.dumps(result, indent=2))
    return 0


def cmd_serve(args) -> int:
    from .serve import Limits, run

    limits = Limits(max_body=args.max_body, max_values=args.max_values, max_header=args.max_header,
                    idle_timeout=args.idle_timeout, max_connections=args.max_connections,
                    drain_timeout=args.drain_timeout)
    return run(args.bundle, args.threads, args.host, args.port, args.unix, args.token_file, limits, args.cpu,
               args.trusted_keys)


COMMANDS = {"predict": cmd_predict, "selfcheck": cmd_selfcheck, "info": cmd_info, "stream": cmd_stream,
            "bench": cmd_bench, "serve": cmd_serve}
REPORT_THEIR_OWN_SETUP = ("selfcheck", "info")  # as a failed check, as JSON with nulls


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(_values_last(argv))
    args.argv = argv  # for the "run it with the venv's Python" advice
    if args.command == "predict" and not args.values and args.input is None:
        args.subparser.error("expected values (CELSIUS for the tutorial's model, or one example's features) "
                             "or --input FILE")
    if args.command == "predict" and args.values and args.input is not None:
        args.subparser.error("expected values or --input FILE, not both")
    try:
        if args.command not in REPORT_THEIR_OWN_SETUP:
            env.require(args.bundle, argv)
        return COMMANDS[args.command](args)
    except RuntimeFailure as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
