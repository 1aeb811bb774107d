"""`python -m runtime <command> [--bundle DIR]`: the device runner's command line.

Exit codes: 0 success; 1 the bundle failed a check (hash, onnxruntime version, golden
outputs, model load); 2 bad input or command line (in `stream`: at least one bad line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, InputError, RuntimeFailure


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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bundle", metavar="DIR", help="unpacked bundle folder (default: the one this runtime sits in)")
    common.add_argument("--threads", type=_positive, default=1, metavar="N",
                        help="onnxruntime intra-op threads (default: 1, no spinning)")
    p = argparse.ArgumentParser(
        prog="python -m runtime",
        description="Celsius -> Fahrenheit on a device: the bundle's ONNX model in onnxruntime, checked before it serves.",
        epilog="Exit codes: 0 ok; 1 a bundle check failed; 2 bad input or command line.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    pr = sub.add_parser("predict", parents=[common], help="predict for the values given, one line each")
    pr.add_argument("values", nargs="+", metavar="CELSIUS")
    pr.add_argument("--json", action="store_true", help="print a JSON object instead of lines")
    st = sub.add_parser("stream", parents=[common], help="one Celsius value per stdin line -> one line per input line")
    st.add_argument("--batch", type=_positive, default=4096, metavar="N", help="lines per micro-batch (default: 4096)")
    sc = sub.add_parser("selfcheck", parents=[common], help="verify hashes, onnxruntime version and golden outputs")
    sc.add_argument("--json", action="store_true", help="print the checks as JSON")
    sub.add_parser("info", parents=[common], help="manifest, model I/O, onnxruntime version, providers, threads")
    be = sub.add_parser("bench", parents=[common], help="cold start, latency, throughput and peak RSS, as JSON")
    be.add_argument("--calls", type=_positive, default=20000, metavar="N", help="batch-1 calls timed (default: 20000)")
    be.add_argument("--large-batch", type=_positive, default=1_000_000, metavar="N",
                    help="batch size for throughput (default: 1000000)")
    be.add_argument("--cold-runs", type=_int_at_least(0), default=5, metavar="N",
                    help="fresh processes timed for cold start; 0 skips (default: 5)")
    return p


def cmd_predict(args) -> int:
    from .runner import Runner

    values = []
    for i, text in enumerate(args.values):
        try:
            values.append(float(text))
        except ValueError:
            raise InputError(f"argument {i + 1} = {text!r}: expected a number in degrees Celsius") from None
    with Runner.from_bundle(args.bundle, args.threads) as runner:
        try:
            out = runner.predict(values)
        except InputError as e:
            if e.index is None:
                raise
            raise InputError(f"argument {e.index + 1} = {args.values[e.index]!r}: {e.problem}") from None
    if args.json:
        print(json.dumps({"celsius": values, "fahrenheit": [float(v) for v in out]}))
    else:
        from .stream import format_values

        sys.stdout.write("".join(s + "\n" for s in format_values(out.tolist())))
    return 0


def cmd_selfcheck(args) -> int:
    from .runner import selfcheck

    checks = selfcheck(args.bundle, args.threads)
    ok = all(c["ok"] for c in checks) and len(checks) == 5
    if args.json:
        print(json.dumps({"passed": ok, "checks": checks}, indent=2))
    else:
        for c in checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']:<12} {c['detail']}")
        print("selfcheck: passed" if ok else "selfcheck: FAILED")
    if not ok:
        failed = next((c for c in checks if not c["ok"]), None)
        if failed is not None:
            print(f"error: selfcheck {failed['name']}: {failed['detail']}", file=sys.stderr)
    return 0 if ok else EXIT_CHECK_FAILED


def cmd_info(args) -> int:
    import onnxruntime as ort

    from .runner import Runner

    with Runner.from_bundle(args.bundle, args.threads) as r:
        sess = r.session
        info = {
            "bundle": str(r.bundle),
            "manifest": r.manifest,
            "model_inputs": [{"name": i.name, "shape": i.shape, "type": i.type} for i in sess.get_inputs()],
            "model_outputs": [{"name": o.name, "shape": o.shape, "type": o.type} for o in sess.get_outputs()],
            "onnxruntime": ort.__version__,
            "providers": sess.get_providers(),
            "available_providers": ort.get_available_providers(),
            "threads": {"intra_op": r.threads, "inter_op": 1, "spinning": False},
        }
    print(json.dumps(info, indent=2))
    return 0


def cmd_stream(args) -> int:
    from .runner import Runner
    from .stream import stream

    with Runner.from_bundle(args.bundle, args.threads) as runner:
        bad = stream(runner, sys.stdin.buffer, sys.stdout.buffer, batch=args.batch)
    if bad:
        print(f"error: stream: {bad} bad line(s); each got an 'error:' line in its place", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_bench(args) -> int:
    from . import bench
    from .runner import default_bundle

    bundle = Path(args.bundle) if args.bundle else default_bundle()
    result = bench.run(bundle.resolve(), args.threads, args.calls, args.large_batch, args.cold_runs)
    print(json.dumps(result, indent=2))
    return 0


COMMANDS = {"predict": cmd_predict, "selfcheck": cmd_selfcheck, "info": cmd_info, "stream": cmd_stream,
            "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RuntimeFailure as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
