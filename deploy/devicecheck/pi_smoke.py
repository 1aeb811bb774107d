"""The smoke run `make pi-check` does on each (emulated) device, and natively for reference.

Runs from inside an unpacked bundle, in ONE process (an emulated Python cannot start
another arm64 program without binfmt): the runtime's selfcheck, `predict` on a few values
and a short `stream`, each through the runtime's own command-line entry point, plus
timings. Prints one JSON object. Imports the stdlib and the bundle's runtime only.

    python pi_smoke.py BUNDLE_DIR
"""

import contextlib
import io
import json
import platform
import sys
import time

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


def main() -> None:
    bundle = sys.argv[1]
    sys.path.insert(0, bundle)
    import numpy as np
    import onnxruntime as ort

    from runtime import Runner
    from runtime.cli import main as runtime_main

    imported = time.perf_counter()
    code, out, err = cli(runtime_main, ["selfcheck", "--json", "--bundle", bundle])
    selfcheck = json.loads(out) if out else {"passed": False, "checks": []}
    selfcheck_s = time.perf_counter() - imported

    code_p, out_p, err_p = cli(runtime_main, ["predict", "--json", "--bundle", bundle, "--", *VALUES])
    code_s, out_s, err_s = cli(runtime_main, ["stream", "--bundle", bundle], STREAM)

    with Runner.from_bundle(bundle) as r:
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
        "stream": {"exit": code_s, "lines": out_s.splitlines(), "stderr": err_s},
        "timings": {
            "start_to_imported_s": imported - T0,
            "selfcheck_s": selfcheck_s,
            "predict_batch1_us": per_call * 1e6,
            "batch_100k_ms": batch * 1e3,
        },
    }))


if __name__ == "__main__":
    main()
