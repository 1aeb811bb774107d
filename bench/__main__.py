"""`python -m bench [--quick]`: measure the pipeline and the runner beside their peers.

Everything is measured in this one invocation and quoted as ratios against baselines
measured in the same run (this machine is shared and noisy): medians with min and max.
Writes build/bench/results.json and results.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench import serve_bench

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ENGINES = ("runtime", "onnxruntime", "litert", "keras_call", "keras_predict", "numpy")


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def timed(cmd: list[str], cwd: Path = ROOT, stdin=None, stdout=subprocess.DEVNULL, env=None) -> dict:
    """Run ``cmd``; wall seconds, exit code and the child's own peak RSS (os.wait4)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({p.returncode}): {err.strip()[-500:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def make(*args: str) -> list[str]:
    return ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={Path(PY).parent.parent}", *args]


# --- the pipeline ---


def bench_pipeline(work: Path, runs: int, quick: bool) -> dict:
    out: dict = {}
    walls, noops, stage_times = [], [], {s: [] for s in ("train", "export", "verify", "bundle")}
    for _ in range(runs):
        d = work / "make"
        shutil.rmtree(d, ignore_errors=True)
        walls.append(timed(make("all", f"BUILD={d}/build", f"DIST={d}/dist"))["wall_s"])
        for _ in range(3):
            noops.append(timed(make("all", f"BUILD={d}/build", f"DIST={d}/dist"))["wall_s"])
        d = work / "stages"
        shutil.rmtree(d, ignore_errors=True)
        for stage in stage_times:
            cmd = [PY, "-m", "pipeline", stage, "--build", f"{d}/build", "--dist", f"{d}/dist"]
            stage_times[stage].append(timed(cmd)["wall_s"])
    out["make_all_from_empty_s"] = stats(walls)
    out["make_all_noop_s"] = stats(noops)
    out["stages_s"] = {s: stats(v) for s, v in stage_times.items()}
    # A no-op run must start no stage: the only Python make runs is the config check.
    r = subprocess.run(make("all", f"BUILD={work}/make/build", f"DIST={work}/make/dist"),
                       capture_output=True, text=True)
    out["noop_stages_run"] = sum(f" {s}\n" in r.stdout for s in stage_times)

    tut = work / "tutorial"
    shutil.rmtree(tut, ignore_errors=True)
    out["tutorial_train_stage_s"] = stats([
        timed([PY, "-m", "pipeline", "train", "--config", "configs/tutorial.toml", "--build", str(tut)])["wall_s"]
        for _ in range(runs)
    ])
    if quick:  # model.fit(epochs=500) alone takes ~15 s here
        return out
    r = subprocess.run([PY, str(ROOT / "bench" / "train_vs_fit.py"), "3"],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    tvf = json.loads(r.stdout.strip().splitlines()[-1])
    ratios = [f / o for f, o in zip(tvf["fit_s"], tvf["compiled_loop_s"])]
    out["train_loop_vs_fit"] = {
        "compiled_loop_s": stats(tvf["compiled_loop_s"]), "fit_500_epochs_s": stats(tvf["fit_s"]),
        "speedup": stats(ratios), "identical_weights": tvf["identical_weights"],
    }
    plain, walls_plain = [], []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run([PY, str(ROOT / "bench" / "plain_way.py")], cwd=ROOT, capture_output=True, text=True)
        walls_plain.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"bench: plain way failed: {r.stderr[-500:]}")
        plain.append(json.loads(r.stdout.strip().splitlines()[-1]))
    out["plain_way_s"] = stats(walls_plain)
    out["plain_way_fit_s"] = stats([p["parts"]["fit"] for p in plain])
    out["plain_way_ratio"] = stats([p / m for p, m in zip(walls_plain, walls)])
    return out


# --- inference engines ---


def run_worker(engine: str, threads: int, build: Path, bundle: Path, args: argparse.Namespace,
               cold_only: bool) -> dict:
    cmd = [PY, "-m", "bench.worker", engine, "--build", str(build), "--bundle", str(bundle),
           "--threads", str(threads), "--budget", str(args.budget), "--large-batch", str(args.large_batch),
           "--large-runs", str(args.large_runs)] + (["--cold-only"] if cold_only else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first_line = p.stdout.readline().decode()
    cold = time.perf_counter() - t
    rest = p.stdout.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0 or not first_line.startswith("FIRST"):
        raise SystemExit(f"bench: worker {engine} failed: {err.strip()[-800:]}")
    _, first_inference, load = first_line.split()
    result = json.loads(rest.strip().splitlines()[-1]) if not cold_only else {}
    result.update(cold_start_s=cold, first_inference_s=float(first_inference), load_s=float(load),
                  process_peak_rss_mb=usage.ru_maxrss / 1024)
    return result


def bench_inference(build: Path, bundle: Path, args: argparse.Namespace) -> dict:
    engines = [e for e in ENGINES if not (args.quick and e == "keras_predict")]
    out = {}
    for threads in (1, 0):  # 0: each library's default thread count
        rows = {}
        for engine in engines:
            n_cold = 1 if args.quick and engine.startswith("keras") else args.cold_runs
            colds = [run_worker(engine, threads, build, bundle, args, True) for _ in range(n_cold)]
            full = run_worker(engine, threads, build, bundle, args, False)
            lat = full["batch1_s"]
            rows[engine] = {
                "cold_start_s": stats([c["cold_start_s"] for c in colds]),
                "first_inference_ms": stats([c["first_inference_s"] * 1e3 for c in colds]),
                "batch1_us": {"p50": pct(lat, 50) * 1e6, "p90": pct(lat, 90) * 1e6, "p99": pct(lat, 99) * 1e6,
                              "calls": len(lat)},
                "batch1_calls_per_s": 1 / statistics.median(lat),
                "large_batch_values_per_s": stats([args.large_batch / s for s in full["large_s"]]),
                "peak_rss_mb": full["process_peak_rss_mb"],
                "cold_peak_rss_mb": stats([c["process_peak_rss_mb"] for c in colds]),
            }
        for engine, row in rows.items():
            row["vs_onnxruntime"] = _ratios(row, rows["onnxruntime"])
            row["vs_numpy"] = _ratios(row, rows["numpy"])
        out["threads_1" if threads == 1 else "threads_default"] = rows
    return out


def bench_variants(build: Path, bundle: Path, args: argparse.Namespace) -> dict:
    """The variants verify built, each in its own runtime (one thread, through the pipeline's
    runners, as verify measures them), beside onnx-fp32 through the same runner: ratios to it."""
    index = json.loads((build / "variants" / "index.json").read_text())["variants"]
    names = ["onnx-fp32", *(n for n, v in index.items() if v["built"])]
    rows = {}
    for name in names:  # onnx-fp32: build/model.onnx through the same runner class
        full = run_worker(name, 1, build, bundle, args, False)
        lat = full["batch1_s"]
        size = (build / "model.onnx").stat().st_size if name == "onnx-fp32" else index[name]["bytes"]
        rows[name] = {"batch1_p50_us": pct(lat, 50) * 1e6,
                      "large_batch_values_per_s": stats([args.large_batch / s for s in full["large_s"]]),
                      "size_bytes": size}
    base = rows["onnx-fp32"]
    for row in rows.values():
        row["p50_vs_onnx_fp32"] = row["batch1_p50_us"] / base["batch1_p50_us"]
        row["values_per_s_vs_onnx_fp32"] = (row["large_batch_values_per_s"]["median"]
                                            / base["large_batch_values_per_s"]["median"])
        row["size_vs_onnx_fp32"] = row["size_bytes"] / base["size_bytes"]
    return rows


def _ratios(row: dict, base: dict) -> dict:
    return {
        "cold_start": row["cold_start_s"]["median"] / base["cold_start_s"]["median"],
        "batch1_p50": row["batch1_us"]["p50"] / base["batch1_us"]["p50"],
        "large_batch_time": base["large_batch_values_per_s"]["median"] / row["large_batch_values_per_s"]["median"],
        "peak_rss": row["peak_rss_mb"] / base["peak_rss_mb"],
    }


def bench_cli_vs_bare(bundle: Path, runs: int) -> dict:
    """`python -m runtime predict 100` against a bare onnxruntime script, alternating, pair by pair."""
    cli, bare = [], []
    env = {**os.environ, "PYTHONPATH": ""}
    for _ in range(runs + 1):
        cli.append(timed([PY, "-m", "runtime", "predict", "100"], cwd=bundle, env=env))
        bare.append(timed([PY, str(ROOT / "bench" / "bare_ort.py"), "model.onnx"], cwd=bundle, env=env))
    cli, bare = cli[1:], bare[1:]  # the first pair warms the page cache
    return {
        "runtime_predict_s": stats([c["wall_s"] for c in cli]),
        "bare_script_s": stats([b["wall_s"] for b in bare]),
        "wall_ratio": stats([c["wall_s"] / b["wall_s"] for c, b in zip(cli, bare)]),
        "runtime_peak_rss_mb": stats([c["peak_rss_mb"] for c in cli]),
        "bare_peak_rss_mb": stats([b["peak_rss_mb"] for b in bare]),
        "rss_ratio": stats([c["peak_rss_mb"] / b["peak_rss_mb"] for c, b in zip(cli, bare)]),
    }


def bench_predict_overhead(bundle: Path, pairs: int) -> dict:
    r = subprocess.run([PY, str(ROOT / "bench" / "overhead.py"), str(bundle), str(pairs)],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return {"runner_us": stats([v * 1e6 for v in d["runner_s"]]), "raw_us": stats([v * 1e6 for v in d["raw_s"]]),
            "ratio": stats(d["ratios"]), "calls_per_block": d["calls_per_block"]}


def bench_stream(bundle: Path, work: Path, lines: int, runs: int) -> dict:
    import numpy as np

    src = work / "stream-input.txt"
    x = np.random.default_rng(0).uniform(-273.15, 1000.0, lines)
    src.write_text("\n".join(f"{v:.4f}" for v in x) + "\n")
    walls = []
    for _ in range(runs):
        with open(src, "rb") as fin:
            walls.append(timed([PY, "-m", "runtime", "stream"], cwd=bundle, stdin=fin,
                               env={**os.environ, "PYTHONPATH": ""})["wall_s"])
    src.unlink()
    return {"lines": lines, "wall_s": stats(walls), "lines_per_s": stats([lines / w for w in walls])}


def du(path: Path) -> int | None:
    if not path.exists():
        return None
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def sizes(build: Path, dist: Path) -> dict:
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pipe = du(Path(PY).parent.parent / "lib" / py / "site-packages")
    # The device's install: the runtime venv `make bench` makes for this Python (deploy/devicecheck/runtime_check.py).
    rt = du(ROOT / ".cache" / "runtime-venv" / f"py{sys.version_info.major}.{sys.version_info.minor}" / "lib" / py
            / "site-packages")
    return {
        "model_onnx_bytes": (build / "model.onnx").stat().st_size,
        "model_tflite_bytes": (build / "model.tflite").stat().st_size,
        "bundle_tarball_bytes": (dist / "bundle.tar.gz").stat().st_size,
        "pipeline_site_packages_mb": pipe / 2**20 if pipe else None,
        "runtime_site_packages_mb": rt / 2**20 if rt else None,
        "runtime_vs_pipeline_install": (rt / pipe) if rt and pipe else None,
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pkgs = {}
    for name in ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy"):
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "packages": pkgs}


# --- the report ---


def targets(r: dict) -> list[dict]:
    p = r["pipeline"]
    rows = []
    if "train_loop_vs_fit" in p:
        tvf = p["train_loop_vs_fit"]
        rows.append(("train loop vs model.fit(epochs=500), same weights", ">= 10x", tvf["speedup"]["median"],
                     lambda v: v >= 10 and tvf["identical_weights"],
                     f"{tvf['speedup']['median']:.1f}x, identical weights: {tvf['identical_weights']}"))
    rows += [
        ("make all from an empty build/", "<= 8 s", p["make_all_from_empty_s"]["median"], lambda v: v <= 8,
         f"{p['make_all_from_empty_s']['median']:.2f} s"),
        ("make all with nothing changed", "< 1 s, no stage", p["make_all_noop_s"]["median"],
         lambda v: v < 1 and p["noop_stages_run"] == 0,
         f"{p['make_all_noop_s']['median']:.3f} s, stages run: {p['noop_stages_run']}"),
        ("runtime predict 100 cold vs bare onnxruntime script", "<= 1.15x wall",
         r["cli_vs_bare"]["wall_ratio"]["median"], lambda v: v <= 1.15, f"{r['cli_vs_bare']['wall_ratio']['median']:.3f}x"),
        ("runtime predict 100 peak RSS vs bare script", "<= 1.1x",
         r["cli_vs_bare"]["rss_ratio"]["median"], lambda v: v <= 1.1, f"{r['cli_vs_bare']['rss_ratio']['median']:.3f}x"),
        ("Runner.predict vs raw session.run, batch 1, alternating blocks", "<= 1.25x",
         r["predict_overhead"]["ratio"]["median"], lambda v: v <= 1.25,
         f"{r['predict_overhead']['ratio']['median']:.3f}x"),
        ("stream, text in and out", ">= 500,000 lines/s", r["stream"]["lines_per_s"]["median"],
         lambda v: v >= 500_000, f"{r['stream']['lines_per_s']['median']:,.0f} lines/s"),
    ]
    if "serve" in r:
        rows += serve_targets(r["serve"])
    return [{"target": t, "goal": g, "measured": text, "met": bool(ok(v))} for t, g, v, ok, text in rows]


def serve_targets(sv: dict) -> list[tuple]:
    s8, b, rss = sv["single"]["8"], sv["batch"], sv["rss"]
    real, const = s8["real"], s8["constant"]
    clean = real["errors"] == 0 and const["errors"] == 0
    pred = sv["predict_100"]["peak_rss_mb"]["median"]
    return [
        ("serve, 8 keep-alive clients, single values: throughput vs the same server answering a constant",
         ">= 0.7x", s8["throughput_ratio"]["median"], lambda v: v >= 0.7 and clean,
         f"{s8['throughput_ratio']['median']:.2f}x ({real['req_per_s']['median']:,.0f} vs "
         f"{const['req_per_s']['median']:,.0f} req/s)" + ("" if clean else ", with errors")),
        ("serve, 8 clients: p99 latency vs the constant server", "<= 2x", s8["p99_ratio"]["median"],
         lambda v: v <= 2, f"{s8['p99_ratio']['median']:.2f}x ({real['p99_ms']['median']:.2f} vs "
                           f"{const['p99_ms']['median']:.2f} ms)"),
        (f"serve, requests of {serve_bench.BATCH_VALUES:,} values (1 client)", ">= 2M values/s",
         b["real"]["values_per_s"]["median"], lambda v: v >= 2e6 and b["real"]["errors"] == 0,
         f"{b['real']['values_per_s']['median'] / 1e6:.2f}M values/s"),
        ("serve peak RSS (VmHWM at the end of its load) vs runtime predict 100", "<= 1.2x", rss["ratio_vs_predict"],
         lambda v: v <= 1.2, f"{rss['ratio_vs_predict']:.2f}x ({rss['after_batch_mb']:.1f} vs {pred:.1f} MB)"),
    ]


def serve_markdown(sv: dict, s) -> list[str]:
    """The serve section of results.md; ``s`` formats a stats dict as median [min, max]."""
    m = sv["method"]
    cpus = m["client_cpus"]
    L = ["", "## Serving over HTTP (python -m runtime serve)", "",
         "`real` is `python -m runtime serve`; `constant` is the same server code answering a ready constant "
         "instead of calling the model (bench/const_server.py), the floor of this server design; `cli` runs "
         "`python -m runtime predict VALUE` per request, that many at a time. The two servers run side by side "
         "on 127.0.0.1 and are loaded alternately; ratios are pair by pair. Clients: http.client keep-alive "
         f"connections in {m['client_procs']['8']} processes (1 for 1 client) "
         + (f"confined to CPU {','.join(map(str, cpus))}" if cpus else "on any CPU")
         + f"; {m['rounds']} rounds of {m['requests_per_run']:,} requests (at most {m['time_cap_s']:g} s) per "
           "server and client count. Latency: request written to answer read. Cores: CPU seconds per second "
           "of the run (client processes; server process).", "",
         "| clients | server | req/s | p50 ms | p99 ms | req/s vs constant | p99 vs constant | client cores | "
         "server cores |", "|---|---|---|---|---|---|---|---|---|"]

    def single_rows(block: dict, with_cli: bool) -> list[str]:
        out = []
        for c, v in block.items():
            for key in ("real", "constant"):
                x = v[key]
                ratio = (f"{s(v['throughput_ratio'])}x | {s(v['p99_ratio'])}x" if key == "real" else "1 | 1")
                name = key + (f" ({x['errors']} failed requests)" if x["errors"] else "")
                out.append(f"| {c} | {name} | {s(x['req_per_s'], '{:,.0f}')} | {x['p50_ms']['median']:.2f} | "
                           f"{s(x['p99_ms'])} | {ratio} | {x['client_cores']['median']:.2f} | "
                           f"{x['server_cores']['median']:.2f} |")
            if with_cli:
                k = sv["cli"][c]
                out.append(f"| {c} | cli (process per request, {k['requests']} requests) | {k['req_per_s']:,.1f} | "
                           f"{k['latency_ms']['p50']:.0f} | {k['latency_ms']['p99']:.0f} | "
                           f"{k['req_per_s'] / v['constant']['req_per_s']['median']:.4f}x | | | |")
        return out

    L += single_rows(sv["single"], True)
    L += ["", "Against a process per request: " + "; ".join(
        f"{c} client{'s' if c != '1' else ''} {v['real']['req_per_s']['median'] / sv['cli'][c]['req_per_s']:,.0f}x "
        f"the requests per second, p50 {v['real']['p50_ms']['median']:.2f} ms vs "
        f"{sv['cli'][c]['latency_ms']['p50']:.0f} ms" for c, v in sv["single"].items()) + "."]
    if "single_unpinned" in sv:
        L += ["", "The same with the connection threads not pinned to one CPU (`serve --cpu any`; the default, "
                  "`--cpu auto`, pins them to the last CPU, above):", "",
              "| clients | server | req/s | p50 ms | p99 ms | req/s vs constant | p99 vs constant | client cores | "
              "server cores |", "|---|---|---|---|---|---|---|---|---|"]
        L += single_rows(sv["single_unpinned"], False)
    L += ["", f"Requests of {m['batch_values']:,} values, {m['batch_requests_per_run']} per run:", "",
          "| clients | server | values/s | p50 ms | p99 ms | server cores |", "|---|---|---|---|---|---|"]
    for blk in (sv["batch"], sv.get("batch_8")):
        if blk:
            for key in ("real", "constant"):
                x = blk[key]
                L.append(f"| {blk['clients']} | {key} | {s(x['values_per_s'], '{:,.0f}')} | "
                         f"{x['p50_ms']['median']:.2f} | {x['p99_ms']['median']:.2f} | "
                         f"{x['server_cores']['median']:.2f} |")
    rss, pr = sv["rss"], sv["predict_100"]
    L += ["", "Peak RSS (VmHWM of the real server, MB, as its load went on; `predict 100` from os.wait4):", "",
          "| process | peak RSS MB |", "|---|---|",
          f"| python -m runtime predict 100 | {s(pr['peak_rss_mb'], '{:.1f}')} |",
          f"| serve, after the self-check and model load | {rss['start_mb']:.1f} |",
          f"| serve, after the single-value runs | {rss['after_single_mb']:.1f} |",
          f"| serve, after the {m['batch_values']:,}-value requests (the target's figure) | "
          f"{rss['after_batch_mb']:.1f} |"]
    if "after_batch_8_mb" in rss:
        L.append(f"| serve, after 8 clients of {m['batch_values']:,}-value requests at once | "
                 f"{rss['after_batch_8_mb']:.1f} |")
    L.append(f"| constant server, at the end of its load | {rss['constant_mb']:.1f} |")
    return L


def markdown(r: dict) -> str:
    m = r["machine"]
    L = [f"# Benchmark results ({'quick' if r['quick'] else 'full'})", "",
         f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
         + ", ".join(f"{k} {v}" for k, v in m["packages"].items()), "",
         "Medians with [min, max] over repeated runs; ratios are computed within this run.", "",
         "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    L += [f"| {t['target']} | {t['goal']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in r["targets"]]
    p = r["pipeline"]

    def s(x, fmt="{:.2f}"):
        return f"{fmt.format(x['median'])} [{fmt.format(x['min'])}, {fmt.format(x['max'])}]"

    L += ["", "## Pipeline (seconds)", "", "| what | time |", "|---|---|",
          f"| make all, empty build/ | {s(p['make_all_from_empty_s'])} |",
          f"| make all, nothing changed | {s(p['make_all_noop_s'], '{:.3f}')} |"]
    L += [f"| stage {k} (own process) | {s(v)} |" for k, v in p["stages_s"].items()]
    L += [f"| train stage, tutorial preset (process) | {s(p['tutorial_train_stage_s'])} |"]
    if "train_loop_vs_fit" in p:
        L += [f"| compiled loop, 500 steps (in process) | {s(p['train_loop_vs_fit']['compiled_loop_s'], '{:.3f}')} |",
              f"| model.fit(epochs=500) (in process) | {s(p['train_loop_vs_fit']['fit_500_epochs_s'])} |"]
    if "plain_way_s" in p:
        L += [f"| the plain way: tutorial fit + TFLite + tf2onnx + compare (process) | {s(p['plain_way_s'])} |",
              f"| plain way / make all | {s(p['plain_way_ratio'])}x |"]
    else:
        L += ["| model.fit and the plain way | skipped in quick mode |"]
    for key, title in (("threads_1", "1 thread (the device setting)"), ("threads_default", "default threads")):
        rows = r["inference"][key]
        L += ["", f"## Inference, {title}", "",
              "| engine | cold start s | first inf. ms | batch-1 p50 / p90 / p99 us | batch-1 calls/s | "
              f"batch {r['args']['large_batch']:,} values/s | peak RSS MB | p50 vs ORT | p50 vs numpy | cold vs ORT |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for e, row in rows.items():
            b = row["batch1_us"]
            L.append(
                f"| {e} | {s(row['cold_start_s'], '{:.3f}')} | {row['first_inference_ms']['median']:.3f} | "
                f"{b['p50']:.1f} / {b['p90']:.1f} / {b['p99']:.1f} | {row['batch1_calls_per_s']:,.0f} | "
                f"{row['large_batch_values_per_s']['median']:,.0f} | {row['peak_rss_mb']:.0f} | "
                f"{row['vs_onnxruntime']['batch1_p50']:.2f}x | {row['vs_numpy']['batch1_p50']:.1f}x | "
                f"{row['vs_onnxruntime']['cold_start']:.2f}x |")
    if "variants" in r:
        L += ["", "## Reduced-precision variants, 1 thread", "",
              "Each in its own runtime through the pipeline's runners (what verify measures), against "
              "onnx-fp32 through the same runner, in this run. Which pass their budgets: build/verify/report.md.", "",
              f"| model | batch-1 p50 us | vs onnx-fp32 | batch {r['args']['large_batch']:,} values/s | vs onnx-fp32 | "
              "file bytes | vs onnx-fp32 |", "|---|---|---|---|---|---|---|"]
        for name, v in r["variants"].items():
            L.append(f"| {name} | {v['batch1_p50_us']:.1f} | {v['p50_vs_onnx_fp32']:.2f}x | "
                     f"{v['large_batch_values_per_s']['median']:,.0f} | {v['values_per_s_vs_onnx_fp32']:.2f}x | "
                     f"{v['size_bytes']:,} | {v['size_vs_onnx_fp32']:.2f}x |")
    c = r["cli_vs_bare"]
    st = r["stream"]
    z = r["sizes"]
    L += ["", "## Runner cold start against a bare onnxruntime script", "",
          "| | wall s | peak RSS MB |", "|---|---|---|",
          f"| python -m runtime predict 100 | {s(c['runtime_predict_s'], '{:.3f}')} | {c['runtime_peak_rss_mb']['median']:.1f} |",
          f"| bare script (import, session, run once) | {s(c['bare_script_s'], '{:.3f}')} | {c['bare_peak_rss_mb']['median']:.1f} |",
          f"| ratio (pair by pair) | {s(c['wall_ratio'], '{:.3f}')} | {s(c['rss_ratio'], '{:.3f}')} |",
          "", "## Runner.predict against raw InferenceSession.run (batch 1, same process)", "",
          f"Blocks of {r['predict_overhead']['calls_per_block']:,} calls alternate between the two; per call: "
          f"Runner.predict {s(r['predict_overhead']['runner_us'])} us, session.run {s(r['predict_overhead']['raw_us'])} us, "
          f"ratio pair by pair {s(r['predict_overhead']['ratio'], '{:.3f}')}.",
          "", "## Stream", "",
          f"{st['lines']:,} lines through `python -m runtime stream`, process start to exit: "
          f"{s(st['lines_per_s'], '{:,.0f}')} lines/s.",
          "", "## Sizes", "", "| what | size |", "|---|---|",
          f"| model.onnx | {z['model_onnx_bytes']:,} B |", f"| model.tflite | {z['model_tflite_bytes']:,} B |",
          f"| bundle.tar.gz | {z['bundle_tarball_bytes']:,} B |"]
    if z["runtime_site_packages_mb"]:
        L += [f"| runtime requirements installed | {z['runtime_site_packages_mb']:.0f} MB |",
              f"| pipeline requirements installed | {z['pipeline_site_packages_mb']:.0f} MB |",
              f"| runtime / pipeline | {z['runtime_vs_pipeline_install']:.3f} |"]
    if "serve" in r:
        L += serve_markdown(r["serve"], s)
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer runs, smaller batches, no plain-way or Keras predict")
    p.add_argument("--build", type=Path, default=ROOT / "build")
    p.add_argument("--dist", type=Path, default=ROOT / "dist")
    a = p.parse_args(argv)
    a.runs = 1 if a.quick else 3
    a.cold_runs = 2 if a.quick else 5
    a.budget = 0.2 if a.quick else 1.0
    a.large_batch = 100_000 if a.quick else 1_000_000
    a.large_runs = 3 if a.quick else 5
    bundle = a.dist / "bundle"
    for need in (a.build / "model.onnx", a.build / "model.keras", bundle / "manifest.json"):
        if not need.exists():
            print(f"error: {need}: not found (run `make all` first)", file=sys.stderr)
            return 3
    out_dir = a.build / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out_dir))
    try:
        t0 = time.perf_counter()
        r = {"quick": a.quick, "machine": machine(),
             "args": {"runs": a.runs, "cold_runs": a.cold_runs, "large_batch": a.large_batch}}
        print("bench: pipeline ...", file=sys.stderr, flush=True)
        r["pipeline"] = bench_pipeline(work, a.runs, a.quick)
        print("bench: inference engines ...", file=sys.stderr, flush=True)
        r["inference"] = bench_inference(a.build, bundle, a)
        print("bench: reduced-precision variants ...", file=sys.stderr, flush=True)
        r["variants"] = bench_variants(a.build, bundle, a)
        print("bench: runner cold start, stream, sizes ...", file=sys.stderr, flush=True)
        r["cli_vs_bare"] = bench_cli_vs_bare(bundle, 5 if a.quick else 15)
        r["predict_overhead"] = bench_predict_overhead(bundle, 10 if a.quick else 40)
        r["stream"] = bench_stream(bundle, work, 200_000 if a.quick else 2_000_000, a.runs)
        print("bench: serve (HTTP) against its constant floor and a process per request ...", file=sys.stderr,
              flush=True)
        r["serve"] = serve_bench.run(bundle.resolve(), work, a.quick)
        r["sizes"] = sizes(a.build, a.dist)
        r["targets"] = targets(r)
        r["seconds"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.path.insert(0, str(ROOT))
    from pipeline import fsutil

    fsutil.write_json(out_dir / "results.json", r)
    md = markdown(r)
    fsutil.write_text(out_dir / "results.md", md)
    print(md)
    print(f"bench: {r['seconds']:.0f} s; {out_dir / 'results.md'}, {out_dir / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
