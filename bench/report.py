"""results.md (also printed as the console table) and results.json from the measurements."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.proc import ROOT


def s(x: dict, fmt: str = "{:.2f}") -> str:
    """A stats dict as median [min, max]."""
    return f"{fmt.format(x['median'])} [{fmt.format(x['min'])}, {fmt.format(x['max'])}]"


def met(value: bool | None) -> str:
    """A target's verdict: yes, NO, or a dash when this run did not measure it."""
    return "-" if value is None else "yes" if value else "NO"


def markdown(r: dict) -> str:
    m = r["machine"]
    L = [f"# Benchmark results ({'quick' if r['quick'] else 'full'})", "",
         f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
         + ", ".join(f"{k} {v}" for k, v in m["packages"].items()), "",
         "Medians with [min, max] over repeated runs; ratios are computed within this run.", "",
         "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    L += [f"| {t['target']} | {t['goal']} | {t['measured']} | {met(t['met'])} |" for t in r["targets"]]
    p = r["pipeline"]
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
        L += serve_markdown(r["serve"])
    if "digits" in r:
        L += digits_markdown(r["digits"])
    if "device_speed" in r:
        L += device_speed_markdown(r["device_speed"])
    return "\n".join(L) + "\n"


def digits_markdown(d: dict) -> list[str]:
    """The digits example's section of results.md: pipeline, runner, stream, serve, int8."""
    o, st, sv, i8 = d["predict_overhead"], d["stream"], d["serve"], d["int8"]
    L = ["", "## The digits example (examples/digits: Conv2D classifier, 8x8x1)", "",
         f"`make all` from an empty build folder, alternating with bench/plain_digits.py (fit, TFLite, tf2onnx "
         f"and nothing else), {d['counts']['pairs']} pair(s):", "",
         "| what | seconds |", "|---|---|",
         f"| make all (train, export, verify, 6 variants, bundle) | {s(d['make_all_s'])} |",
         f"| plain script | {s(d['plain_s'])} |"]
    L += [f"| plain script: {k} | {s(v)} |" for k, v in d["plain_parts_s"].items() if k != "total"]
    L += [f"| make all / plain (pair by pair) | {s(d['make_all_vs_plain'])}x |",
          "", "On the bundle that run built, one onnxruntime thread everywhere:", "",
          "| what | measured | bare session.run | ratio |", "|---|---|---|---|",
          f"| Runner.predict, batch 1 ({o['calls_per_block']:,} calls a block, blocks alternating) | "
          f"{s(o['runner_us'], '{:.1f}')} us | {s(o['raw_us'], '{:.1f}')} us | {s(o['ratio'], '{:.3f}')}x |"]
    if "one_example_ratio" in o:  # results from before it: no row
        L.append(f"| Runner.predict, the same example without the batch dimension (8, 8, 1) | "
                 f"{s(o['one_example_us'], '{:.1f}')} us | {s(o['one_example_raw_us'], '{:.1f}')} us (batch 1) | "
                 f"{s(o['one_example_ratio'], '{:.3f}')}x |")
    L += [f"| stream, {st['lines']:,} JSON lines, process start to exit | {s(st['examples_per_s'], '{:,.0f}')} "
          f"examples/s | {d['bare'][str(st['bare_batch'])]:,.0f} examples/s at batch {st['bare_batch']:,} | "
          f"{st['vs_bare']:.3f}x |",
          f"| serve, POST /predict of {sv['batch']} examples, {sv['clients']} clients, {sv['requests']:,} requests"
          + (f" ({sv['errors']} failed)" if sv["errors"] else "") + f", p50 {sv['p50_ms']['median']:.1f} ms, "
          f"p99 {sv['p99_ms']['median']:.1f} ms | {s(sv['examples_per_s'], '{:,.0f}')} examples/s | "
          f"{d['bare'][str(sv['bare_batch'])]:,.0f} examples/s at batch {sv['bare_batch']} | {sv['vs_bare']:.3f}x |"]
    for kind, v in d.get("serve_v2", {}).items():
        data = "binary data both ways" if kind == "v2-binary" else "JSON data"
        L.append(f"| serve, v2 infer of {v['batch']} examples with {data}, {v['requests']:,} requests"
                 + (f" ({v['errors']} failed)" if v["errors"] else "") + f", p50 {v['p50_ms']['median']:.1f} ms "
                 f"({v['vs_predict']:.2f}x /predict's examples/s) | {s(v['examples_per_s'], '{:,.0f}')} examples/s | "
                 f"{d['bare'][str(v['bare_batch'])]:,.0f} examples/s at batch {v['bare_batch']} | {v['vs_bare']:.3f}x |")
    L += ["", "Static int8 (build/variants/onnx-int8-static.onnx) against build/model.onnx, onnxruntime, 1 thread, "
              "blocks alternating:", "",
          "| what | int8 | fp32 | int8 / fp32 |", "|---|---|---|---|",
          f"| file bytes | {i8['int8_bytes']:,} | {i8['fp32_bytes']:,} | {i8['bytes_ratio']:.3f}x |"]
    for b in ("1", "256"):
        x = i8[f"batch{b}"]
        L.append(f"| batch {b} latency, us | {s(x['int8_us'], '{:.1f}')} | {s(x['fp32_us'], '{:.1f}')} | "
                 f"{s(x['ratio'], '{:.3f}')}x |")
    return L


def device_speed_markdown(ds: dict) -> list[str]:
    """The device-speed section (issue 28): per model, the runner, bare onnxruntime and LiteRT at
    batch 1 and 32, and each variant against float32 in its own runtime."""
    L = ["", "## Device speed: runner, onnxruntime, LiteRT (1 thread)", "",
         f"Per model, in one process, blocks of calls alternating ({ds['blocks']} blocks a figure, the order "
         "rotating), ratios block by block; the bundle's golden inputs. The runner is `Runner.predict` (checks "
         "included), onnxruntime a bare `session.run` on build/model.onnx, LiteRT the interpreter (XNNPACK) on "
         "build/model.tflite.", ""]
    if not ds["models"]:
        return L + ["No model measured in this run."]
    L += ["| model | graph pass, nodes | batch | runner us | onnxruntime us | LiteRT us | runner / onnxruntime | "
          "runner / LiteRT | onnxruntime / LiteRT |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in ds["models"].items():
        g = m["graph_pass"]
        nodes = f"{g['nodes_before']} -> {g['nodes_after']}" if g.get("nodes_before") is not None else "-"
        for b, e in m["engines"].items():
            L.append(f"| {name} | {nodes} | {b} | {s(e['runner_us'], '{:,.1f}')} | {s(e['onnxruntime_us'], '{:,.1f}')} | "
                     f"{s(e['litert_us'], '{:,.1f}')} | {s(e['runner_vs_onnxruntime'], '{:.3f}')}x | "
                     f"{s(e['runner_vs_litert'], '{:.2f}')}x | {s(e['onnxruntime_vs_litert'], '{:.2f}')}x |")
    built = [f"{name} {m['make_all_s']:.0f} s" for name, m in ds["models"].items() if "make_all_s" in m]
    if built:
        L += ["", f"Built here by `make all` from empty: {', '.join(built)}."]
    L += ["", "Each variant verify built against float32 in the same runtime (ONNX in onnxruntime against "
              "model.onnx, TFLite in LiteRT against model.tflite), through the pipeline's runners:", "",
          "| model | variant | bytes | vs fp32 | batch 1 us | vs fp32 | batch 32 us | vs fp32 |",
          "|---|---|---|---|---|---|---|---|"]
    for name, m in ds["models"].items():
        for v, row in m["variants"].items():
            L.append(f"| {name} | {v} | {row['bytes']:,} | {row['bytes_vs_fp32']:.3f}x | "
                     + " | ".join(f"{row[b]['variant_us']['median']:,.1f} | {s(row[b]['ratio'], '{:.2f}')}x"
                                  for b in ("1", "32")) + " |")
    return L


def serve_markdown(sv: dict) -> list[str]:
    """The serve section of results.md."""
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


def write(out_dir: Path, r: dict) -> str:
    """Write results.json and results.md into ``out_dir``; the markdown."""
    sys.path.insert(0, str(ROOT))
    from pipeline import fsutil

    fsutil.write_json(out_dir / "results.json", r)
    text = markdown(r)
    fsutil.write_text(out_dir / "results.md", text)
    return text
