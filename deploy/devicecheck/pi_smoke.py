"""The smoke run `make pi-check` does on each (emulated) device, and natively for reference.

Runs from inside an unpacked bundle, in ONE process (an emulated Python cannot start
another arm64 program without binfmt): the runtime's selfcheck, `predict` on a few values
and a short `stream`, each through the runtime's own command-line entry point, plus
timings. Prints one JSON object. Imports the stdlib, numpy, onnxruntime and the bundle's
runtime only.

Which inputs: a bundle with the legacy golden.json {"celsius", "fahrenheit"} (the tutorial's,
made before issue 25) gets the fixed celsius VALUES below; any other bundle of one input and
one output (golden.json {"inputs", "outputs"}, any signature, the tutorial's of today included)
gets its own golden inputs, as JSON lines through `predict --json --input -`, and a stream
of a few of them with bad lines (not a number, empty, wrong length, outside the valid range).
A bundle of several inputs or outputs (golden.json {"inputs": {name: batch}, "outputs": {name:
batch}}) gets its golden inputs as an .npz, one array per input by name, through
`predict --json --input -`, a stream of a few of them as JSON objects by input name with bad
lines (not JSON, empty, an input missing), and bad inputs: an .npz lacking an input, one with a
value beyond float32 and, when an input has a valid range, one with a value just outside it;
each must be refused (exit, error line).

Signed bundles: the trusted keys come from the environment ($EDGE_TRUSTED_KEYS, and under
emulation $EDGE_SSH_KEYGEN, the arm64 ssh-keygen's wrapper), as for any runtime process.
``--refused DIR`` also runs `selfcheck` on DIR (a copy that must be refused) and records its
exit code and error line; ``--load-pairs N`` times ``Runner.from_bundle`` with the trusted
keys and without, N alternating pairs (and ``trust.check`` alone), the cost of verification.

    python pi_smoke.py BUNDLE_DIR [--refused DIR] [--load-pairs N]
"""

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
VALUES = ["-273.15", "-40", "0", "36.6", "37.5", "100", "451", "1000"]
STREAM = b"\n".join([b"-40", b"0", b"not a number", b"100", b"", b"37.5", b"-300", b"1e3"]) + b"\n"


def cpuinfo() -> dict:
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cli(main, args, stdin=b""):
    """Run the runtime's CLI entry point in this process; return (exit code, stdout, stderr)."""
    err = io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    # `stream` writes bytes to sys.stdout.buffer, the others text: one wrapper serves both
    buf = io.BytesIO()
    out_wrapper = io.TextIOWrapper(buf, write_through=True)
    try:
        with contextlib.redirect_stdout(out_wrapper), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        sys.stdin = old_stdin
    out_wrapper.flush()
    return code, buf.getvalue().decode(), err.getvalue()


def read_golden(bundle: str) -> tuple[dict, dict]:
    """The bundle's manifest and its golden data (golden.json)."""
    with open(f"{bundle}/manifest.json") as f:
        manifest = json.load(f)
    with open(f"{bundle}/{manifest['golden']['file']}") as f:
        return manifest, json.load(f)


def example_lines(manifest: dict, golden: dict) -> tuple[list, bytes, bytes] | None:
    """A signature bundle's golden inputs: (the examples, them as JSON lines for
    `predict --input -`, a short stream of some of them with bad lines); None for the tutorial's."""
    if "inputs" not in golden:
        return None
    inputs = golden["inputs"]
    lines = [json.dumps(x).encode() for x in inputs]
    valid = (manifest.get("signature") or {}).get("valid") or {}
    lo, hi = valid.get("min") or [], valid.get("max") or []
    bad = None  # the first example with one feature just outside its valid range
    flat = json.loads(lines[0])
    while isinstance(flat, list) and flat and isinstance(flat[0], list):
        flat = [v for row in flat for v in row]
    for j, (a, b) in enumerate(zip(lo, hi)):
        if a is not None or b is not None:
            flat = list(flat)
            flat[j] = a - 1 if a is not None else b + 1
            bad = json.dumps(flat).encode()
            break
    stream = lines[:2] + [b"not a number", b""] + lines[2:3] + [b"[1, 2]"] + ([bad] if bad else []) + lines[3:4]
    return inputs, b"\n".join(lines) + b"\n", b"\n".join(stream) + b"\n"


def npz(arrays: dict) -> bytes:
    """``arrays`` by name as the bytes of an .npz (numpy.savez), what `predict --input` reads."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def named_inputs(manifest: dict, golden: dict) -> tuple[dict, bytes, bytes, list[tuple[str, list[str], bytes]]]:
    """A bundle of several inputs or outputs: (its golden inputs, float32 arrays by input name;
    them as an .npz for `predict --input -`; a short stream of some of them, a JSON object by
    input name a line, with bad lines; the bad inputs, each (what it is, the command's arguments
    before --bundle, its stdin), which must be refused as x86 refuses them)."""
    import numpy as np

    x = {k: np.asarray(v, dtype=np.float32) for k, v in golden["inputs"].items()}
    names = list(x)
    lines = [json.dumps({k: v[i].tolist() for k, v in x.items()}).encode() for i in range(min(4, len(x[names[0]])))]
    no_last = json.dumps({k: v[0].tolist() for k, v in x.items() if k != names[-1]}).encode()
    stream = lines[:2] + [b"not json", b""] + lines[2:3] + [no_last] + lines[3:4]
    two = {k: v[:2].astype(np.float64) for k, v in x.items()}  # float64: room for a value beyond float32
    first = names[0]
    huge = {k: v.copy() for k, v in two.items()}
    huge[first].reshape(huge[first].shape[0], -1)[-1, 0] = 1e39
    predict = ["predict", "--json", "--input", "-"]
    bad = [(f"no array {names[-1]!r}", predict, npz({k: v for k, v in two.items() if k != names[-1]})),
           (f"input {first!r} beyond float32", predict, npz(huge))]
    for t in (manifest.get("signature") or {}).get("inputs") or []:  # the first bounded feature, just outside
        valid = t.get("valid") or {}
        bounds = list(zip(valid.get("min") or [], valid.get("max") or []))
        j = next((j for j, (a, b) in enumerate(bounds) if a is not None or b is not None), None)
        if j is not None and t["name"] in two:
            a, b = bounds[j]
            outside = {k: v.copy() for k, v in two.items()}
            outside[t["name"]].reshape(outside[t["name"]].shape[0], -1)[0, j] = a - 1 if a is not None else b + 1
            bad.append((f"input {t['name']!r} outside its valid range", predict, npz(outside)))
            break
    return x, npz(x), b"\n".join(stream) + b"\n", bad


def each(x, f):
    """``f`` of a batch, or of each batch of a dict of them by input name."""
    return {k: f(v) for k, v in x.items()} if isinstance(x, dict) else f(x)


def origin_of(runner) -> dict | None:
    """Who signed the bundle a Runner loaded, and whether this process trusts them (None: a
    runtime from before signed bundles)."""
    origin = getattr(runner, "origin", None)
    if origin is None:
        return None
    return {"verified": bool(origin.verified), "fingerprint": origin.key.fingerprint if origin.key else None,
            "detail": origin.detail}


def load_timings(runner_cls, bundle: str, pairs: int) -> dict | None:
    """``Runner.from_bundle`` in ms with $EDGE_TRUSTED_KEYS set and unset, ``pairs`` alternating
    pairs after one warm-up each (which goes first alternates too), and ``trust.check`` alone."""
    try:
        from runtime import trust
    except ImportError:  # a runtime from before signed bundles
        return None
    keys = os.environ.get(trust.ENV)
    if not keys or pairs <= 0:
        return None
    if os.path.lexists(trust.SYSTEM_FILE):  # then "without keys" would trust that file's
        return {"signed_ms": [], "unsigned_ms": [], "check_ms": [], "baseline_verified": True,
                "skipped": f"{trust.SYSTEM_FILE} exists: no load without trusted keys to compare with"}

    def once(with_keys: bool) -> tuple[float, bool]:
        if with_keys:
            os.environ[trust.ENV] = keys
        else:
            os.environ.pop(trust.ENV, None)
        t = time.perf_counter()
        with runner_cls.from_bundle(bundle) as r:
            ms = (time.perf_counter() - t) * 1e3
            return ms, bool((origin_of(r) or {}).get("verified"))

    signed, unsigned, baseline_verified = [], [], False
    try:
        once(True)  # warm-ups: the files in the page cache, onnxruntime's first session
        once(False)
        for i in range(pairs):
            for with_keys in ((True, False) if i % 2 == 0 else (False, True)):
                ms, verified = once(with_keys)
                (signed if with_keys else unsigned).append(ms)
                baseline_verified |= verified and not with_keys
    finally:
        os.environ[trust.ENV] = keys
    data, trusted = Path(bundle, "manifest.json").read_bytes(), trust.read_keys(keys)
    check = []
    for _ in range(pairs):
        t = time.perf_counter()
        trust.check(Path(bundle), data, trusted)
        check.append((time.perf_counter() - t) * 1e3)
    return {"signed_ms": signed, "unsigned_ms": unsigned, "check_ms": check, "baseline_verified": baseline_verified}


def main() -> None:
    p = argparse.ArgumentParser(prog="pi_smoke.py")
    p.add_argument("bundle")
    p.add_argument("--refused", help="a bundle the device must refuse: its selfcheck's exit code and stderr")
    p.add_argument("--load-pairs", type=int, default=0)
    a = p.parse_args()
    bundle = a.bundle
    sys.path.insert(0, bundle)
    import numpy as np
    import onnxruntime as ort

    from runtime import Runner
    from runtime.cli import main as runtime_main

    imported = time.perf_counter()
    code, out, err = cli(runtime_main, ["selfcheck", "--json", "--bundle", bundle])
    selfcheck = json.loads(out) if out else {"passed": False, "checks": []}
    selfcheck_s = time.perf_counter() - imported
    refused = None
    if a.refused:
        code_r, _, err_r = cli(runtime_main, ["selfcheck", "--bundle", a.refused])
        refused = {"exit": code_r, "stderr": err_r}

    manifest, golden = read_golden(bundle)
    named = isinstance(golden.get("inputs"), dict)  # several inputs or outputs, by name
    examples = None if named else example_lines(manifest, golden)
    if named:
        inputs, predict_in, stream_in, bad = named_inputs(manifest, golden)
        code_p, out_p, err_p = cli(runtime_main, ["predict", "--json", "--bundle", bundle, "--input", "-"], predict_in)
        code_s, out_s, err_s = cli(runtime_main, ["stream", "--bundle", bundle], stream_in)
        refusals = []
        for what, args, stdin in bad:
            code_b, _, err_b = cli(runtime_main, [args[0], "--bundle", bundle, *args[1:]], stdin)
            refusals.append({"what": what, "exit": code_b, "stderr": err_b})
    elif examples is None:  # the tutorial's bundle: today's fixed values, stream and timings
        code_p, out_p, err_p = cli(runtime_main, ["predict", "--json", "--bundle", bundle, "--", *VALUES])
        code_s, out_s, err_s = cli(runtime_main, ["stream", "--bundle", bundle], STREAM)
    else:
        inputs, predict_in, stream_in = examples
        code_p, out_p, err_p = cli(runtime_main, ["predict", "--json", "--bundle", bundle, "--input", "-"], predict_in)
        code_s, out_s, err_s = cli(runtime_main, ["stream", "--bundle", bundle], stream_in)

    with Runner.from_bundle(bundle) as r:
        origin = origin_of(r)
        if examples is None and not named:
            r.predict(1.0)
            n = 2000
            t = time.perf_counter()
            for i in range(n):
                r.predict(float(i % 100))
            per_call = (time.perf_counter() - t) / n
            x = np.linspace(-273.15, 1000, 100_000, dtype=np.float32)
            t = time.perf_counter()
            r.predict(x)
            batch = time.perf_counter() - t
            batch_key = "batch_100k_ms"
        else:  # a batch of one golden example, then 1,000 examples (the golden ones, repeated); by name
            if named:
                x = inputs
            else:
                x = np.asarray(inputs, dtype=np.float32)
                x = x.reshape(x.shape[0], -1) if x.ndim == 1 else x
            count = len(next(iter(x.values())) if named else x)
            r.predict(each(x, lambda v: v[:1]))
            n = 200
            t = time.perf_counter()
            for i in range(n):
                r.predict(each(x, lambda v: v[i % count:][:1]))
            per_call = (time.perf_counter() - t) / n
            big = each(x, lambda v: np.resize(v, (1000, *v.shape[1:])))
            t = time.perf_counter()
            r.predict(big)
            batch = time.perf_counter() - t
            batch_key = "batch_1k_ms"
    load = load_timings(Runner, bundle, a.load_pairs)

    cpu = cpuinfo()
    print(json.dumps({
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_part": cpu.get("CPU part"),
        "cpu_model": cpu.get("Model") or cpu.get("model name"),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "selfcheck": {"exit": code, "passed": selfcheck.get("passed"), "checks": selfcheck.get("checks"),
                      "stderr": err},
        "predict": {"exit": code_p, "output": json.loads(out_p) if code_p == 0 else None, "stderr": err_p},
        **({"refusals": refusals} if named else {}),
        "stream": {"exit": code_s, "lines": out_s.splitlines(), "stderr": err_s},
        "signature": {"origin": origin, "refused": refused, "ssh_keygen": os.environ.get("EDGE_SSH_KEYGEN")},
        "load": load,
        "timings": {
            "start_to_imported_s": imported - T0,
            "selfcheck_s": selfcheck_s,
            "predict_batch1_us": per_call * 1e6,
            batch_key: batch * 1e3,
        },
    }))


if __name__ == "__main__":
    main()
