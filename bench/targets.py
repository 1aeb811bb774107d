"""The goals the benchmark is held to, and whether this run's measurements meet them."""

from __future__ import annotations

from bench.measure_serve import BATCH_VALUES


def targets(r: dict) -> list[dict]:
    p = r["pipeline"]
    rows = []
    if "train_loop_vs_fit" in p:
        tvf = p["train_loop_vs_fit"]
        rows.append(("train loop vs model.fit(epochs=500), same weights", ">= 10x", tvf["speedup"]["median"],
                     lambda v: v >= 10 and tvf["identical_weights"],
                     f"{tvf['speedup']['median']:.1f}x, identical weights: {tvf['identical_weights']}"))
    rows.append(plain_way_target(p))
    rows += [
        ("make all from an empty build/", "<= 8 s", p["make_all_from_empty_s"]["median"], lambda v: v <= 8,
         f"{p['make_all_from_empty_s']['median']:.2f} s"),
        ("make all with nothing changed", "< 1 s, no stage", p["make_all_noop_s"]["median"],
         lambda v: v < 1 and p["noop_stages_run"] == 0,
         f"{p['make_all_noop_s']['median']:.3f} s, stages run: {p['noop_stages_run']}"
         + (f" ({', '.join(p['noop_stages'])})" if p.get("noop_stages") else "")),
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
    if "digits" in r:
        rows += digits_targets(r["digits"])
    if "device_speed" in r:
        rows += device_speed_targets(r["device_speed"])
    # met None: not measured in this run (the row keeps the goal in the table)
    return [{"target": t, "goal": g, "measured": text, "met": None if v is None else bool(ok(v))}
            for t, g, v, ok, text in rows]


def plain_way_target(p: dict) -> tuple:
    """The default config's `make all` against the plain tutorial script (full run only)."""
    what, goal = "make all (default config) vs the plain tutorial script (fit + TFLite + tf2onnx + compare)", "<= 0.35x"
    if "make_all_vs_plain_way" not in p:
        return what, goal, None, None, "not measured (--quick)"
    x = p["make_all_vs_plain_way"]
    return (what, goal, x["median"], lambda v: v <= 0.35,
            f"{x['median']:.2f}x [{x['min']:.2f}, {x['max']:.2f}] ({p['make_all_from_empty_s']['median']:.1f} vs "
            f"{p['plain_way_s']['median']:.1f} s)")


def digits_targets(d: dict) -> list[tuple]:
    """The digits example's goals (issue 17): its make all against a plain script, and the runner's cost."""
    m, o = d["make_all_vs_plain"], d["predict_overhead"]["ratio"]
    return [
        ("digits: make all from empty (verify, 6 variants, bundle) vs a plain fit + TFLite + tf2onnx script",
         "<= 1.0x", m["median"], lambda v: v <= 1.0,
         f"{m['median']:.2f}x [{m['min']:.2f}, {m['max']:.2f}] ({d['make_all_s']['median']:.1f} vs "
         f"{d['plain_s']['median']:.1f} s)"),
        ("digits: Runner.predict vs raw session.run, batch 1, alternating blocks", "<= 1.15x", o["median"],
         lambda v: v <= 1.15, f"{o['median']:.3f}x [{o['min']:.3f}, {o['max']:.3f}] "
                              f"({d['predict_overhead']['runner_us']['median']:.1f} vs "
                              f"{d['predict_overhead']['raw_us']['median']:.1f} us)"),
    ]


def device_speed_targets(ds: dict) -> list[tuple]:
    """Issue 28's goal: MobileNetV3Small in onnxruntime (the graph after the pass) within 2x of LiteRT,
    at batch 1 and at batch 32 (a dash when this run did not build it: --quick)."""
    m = ds["models"].get("mobilenet_v3_small")
    rows = []
    for b in ("1", "32"):
        what = f"MobileNetV3Small: onnxruntime (after the graph pass) vs LiteRT, batch {b}, alternating blocks"
        if m is None:
            rows.append((what, "<= 2x", None, None, "not measured (--quick)"))
            continue
        e = m["engines"][b]
        x = e["onnxruntime_vs_litert"]
        rows.append((what, "<= 2x", x["median"], lambda v: v <= 2,
                     f"{x['median']:.2f}x [{x['min']:.2f}, {x['max']:.2f}] ({e['onnxruntime_us']['median']:,.0f} vs "
                     f"{e['litert_us']['median']:,.0f} us)"))
    return rows


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
        (f"serve, requests of {BATCH_VALUES:,} values (1 client)", ">= 2M values/s",
         b["real"]["values_per_s"]["median"], lambda v: v >= 2e6 and b["real"]["errors"] == 0,
         f"{b['real']['values_per_s']['median'] / 1e6:.2f}M values/s"),
        ("serve peak RSS (VmHWM at the end of its load) vs runtime predict 100", "<= 1.2x", rss["ratio_vs_predict"],
         lambda v: v <= 1.2, f"{rss['ratio_vs_predict']:.2f}x ({rss['after_batch_mb']:.1f} vs {pred:.1f} MB)"),
    ]
