"""One inference engine in its own process: `python -m bench.worker ENGINE ...`.

Prints ``FIRST <seconds>`` as soon as the first answer exists (the parent times process
start to that line: the cold start), then, unless ``--cold-only``, a JSON line with the
steady batch-1 latency of every timed call, throughput at a large batch and peak RSS.
Timing uses ``timeit.repeat(number=1)``: the stdlib harness, garbage collection off.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import timeit
from pathlib import Path

ENGINES = ("runtime", "onnxruntime", "litert", "keras_call", "keras_predict", "numpy")


def _engine(name: str, build: Path, bundle: Path, threads: int, large: int, lo: float, hi: float,
            weights: tuple[float, float] | None = None):
    """Load an engine's model; return (call_batch1, call_large). threads 0 = the library's default.

    The large batch spreads over the working range ``lo``..``hi``; ``weights``, the numpy
    floor's (kernel, bias)."""
    import numpy as np

    x1 = np.array([[100.0]], np.float32)
    xl = np.linspace(lo, hi, large, dtype=np.float32).reshape(-1, 1)
    if name == "runtime":
        sys.path.insert(0, str(bundle))
        from runtime import Runner

        r = Runner.from_bundle(bundle, threads or os.cpu_count())
        return lambda: r.predict(100.0), lambda: r.predict(xl)
    if name == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        s = ort.InferenceSession(str(build / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return lambda: s.run(None, {name: x1}), lambda: s.run(None, {name: xl})
    if name == "litert":
        from ai_edge_litert.interpreter import Interpreter

        def make(batch):
            it = Interpreter(model_path=str(build / "model.tflite"), num_threads=threads or None)
            i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
            it.resize_tensor_input(i, [batch, 1])
            it.allocate_tensors()

            def call(x):
                it.set_tensor(i, x)
                it.invoke()
                return it.get_tensor(o)

            return call

        one = make(1)
        big = make(large)
        return lambda: one(x1), lambda: big(xl)
    if name.startswith("keras"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from export.tfenv import tensorflow

        tf, keras = tensorflow()
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        m = keras.models.load_model(build / "model.keras")
        if name == "keras_call":
            return lambda: m(x1, training=False), lambda: m(xl, training=False)
        # predict's default batch_size is 32; one batch of all values is its fastest use.
        return lambda: m.predict(x1, verbose=0), lambda: m.predict(xl, verbose=0, batch_size=large)
    if name.startswith(("onnx-", "tflite-")):  # a reduced-precision variant from build/variants/
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from pipeline.runners import OnnxRunner, TFLiteRunner

        path = (build / "model.onnx" if name == "onnx-fp32"
                else build / "variants" / (name + (".onnx" if name.startswith("onnx-") else ".tflite")))
        r = OnnxRunner(path) if name.startswith("onnx-") else TFLiteRunner(path)  # one thread, as verify
        return lambda: r.run(x1), lambda: r.run(xl)  # rows (n, 1), as verify runs them
    if name == "numpy":
        if weights is None:
            raise SystemExit("numpy floor: --weights KERNEL BIAS (bench.scalar.dense_weights of model.onnx)")
        k, b = np.float32(weights[0]), np.float32(weights[1])
        return lambda: x1 * k + b, lambda: xl * k + b
    raise SystemExit(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("engine", help=f"one of {', '.join(ENGINES)}, or a variant's name (onnx-fp16, ...)")
    p.add_argument("--build", type=Path, required=True)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget", type=float, default=1.0, help="seconds of batch-1 calls to time")
    p.add_argument("--max-calls", type=int, default=20000)
    p.add_argument("--large-batch", type=int, default=1_000_000)
    p.add_argument("--large-runs", type=int, default=5)
    p.add_argument("--range", type=float, nargs=2, required=True, metavar=("LO", "HI"),
                   help="the working range the large batch spreads over (bench.scalar.describe)")
    p.add_argument("--weights", type=float, nargs=2, metavar=("KERNEL", "BIAS"), help="the numpy floor's weights")
    p.add_argument("--cold-only", action="store_true")
    a = p.parse_args()

    t0 = time.perf_counter()
    call, call_large = _engine(a.engine, a.build, a.bundle, a.threads, a.large_batch, *a.range, a.weights)
    loaded = time.perf_counter()
    call()
    done = time.perf_counter()
    print(f"FIRST {done - loaded:.9f} {loaded - t0:.6f}", flush=True)
    if a.cold_only:
        return
    warm = timeit.repeat(call, number=1, repeat=50)
    per_call = sorted(warm)[len(warm) // 2]
    calls = max(50, min(a.max_calls, int(a.budget / max(per_call, 1e-7))))
    batch1 = timeit.repeat(call, number=1, repeat=calls)
    call_large()  # warm-up
    large = timeit.repeat(call_large, number=1, repeat=a.large_runs)
    print(json.dumps({
        "engine": a.engine,
        "threads": a.threads,
        "first_inference_s": done - loaded,
        "load_s": loaded - t0,
        "batch1_s": batch1,
        "large_s": large,
        "large_batch": a.large_batch,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }), flush=True)


if __name__ == "__main__":
    main()
