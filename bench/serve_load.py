"""Load generator for `python -m runtime serve`: `python -m bench.serve_load --port N --clients C ...`.

C keep-alive clients (``http.client.HTTPConnection``, one connection each, opened and warmed
before the clock starts) POST /predict (or what ``--body-file`` says) as fast as their answers
come back, until together they have sent ``--requests`` or ``--time-cap`` seconds have passed.
The clients are threads spread over ``--procs`` processes (fork): one Python process cannot
drive 32 connections faster than its GIL lets it parse answers, so the load would measure the
client, not the server. Each process reports the CPU time it used, so the output says how busy
the load generator was.

Prints one JSON line: requests, errors, wall seconds, requests/s, values/s, latency
percentiles (ms, from just before a request is written to its last body byte read), client
CPU (cores in use on average) and, with ``--server-pid``, the server's CPU over the same span.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time

from bench.scalar import Scalar
from bench.stats import nearest_rank as pct

HEADERS = {"Content-Type": "application/json"}


def bodies(values: int, model: Scalar) -> list[tuple[str, dict, bytes]]:
    """Requests to cycle through, POST /predict {"<feature>": ...}: single numbers (97 of them,
    evenly over the working range), or lists of ``values`` numbers spread over it."""
    if values <= 1:
        docs = [{model.feature: model.at(i / 96, 2)} for i in range(97)]
    else:
        docs = [{model.feature: [model.at((i + k / 7) / values, 4) for i in range(values)]} for k in range(3)]
    return [("/predict", HEADERS, json.dumps(d).encode()) for d in docs]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _client(port: int, body_list: list[tuple[str, dict, bytes]], warmup: int, ready, go, budget, deadline,
            out: dict) -> None:
    lat, errors = [], 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = 0

    def one() -> bool:
        nonlocal conn, i
        path, headers, body = body_list[i % len(body_list)]
        i += 1
        try:
            conn.request("POST", path, body, headers)
            r = conn.getresponse()
            r.read()
            return r.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            return False

    for _ in range(warmup):
        errors += not one()
    ready()
    go.wait()
    end_at = deadline.value
    perf = time.perf_counter
    while perf() < end_at:
        with budget.get_lock():
            if budget.value <= 0:
                break
            budget.value -= 1
        t = perf()
        ok = one()
        lat.append(perf() - t)
        errors += not ok
    out["end"] = perf()
    out["lat"] = lat
    out["errors"] = errors
    conn.close()


def _process(port, threads, body_list, warmup, ready_count, go, budget, deadline, conn, cpus) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    outs = [{} for _ in range(threads)]

    def ready():
        with ready_count.get_lock():
            ready_count.value += 1

    ts = [threading.Thread(target=_client, args=(port, body_list, warmup, ready, go, budget, deadline, o))
          for o in outs]
    for t in ts:
        t.start()
    go.wait()
    c0 = os.times()
    for t in ts:
        t.join()
    c1 = os.times()
    conn.send({"lat": [x for o in outs for x in o.get("lat", ())], "errors": sum(o.get("errors", 1) for o in outs),
               "end": max(o.get("end", 0.0) for o in outs),
               "cpu_s": (c1.user - c0.user) + (c1.system - c0.system)})
    conn.close()


def read_bodies(path: str) -> list[tuple[str, dict, bytes]]:
    """Requests from a file: POST /predict bodies, one per line (any model's: {"inputs": [...]});
    or, for a file ending in .json, {"path", "headers", "bodies": [base64, ...]} (any endpoint,
    any body: the v2 protocol's binary ones)."""
    if path.endswith(".json"):
        with open(path) as f:
            doc = json.load(f)
        found = [(doc["path"], doc["headers"], base64.b64decode(b)) for b in doc["bodies"]]
    else:
        with open(path, "rb") as f:
            found = [("/predict", HEADERS, line.rstrip(b"\n")) for line in f if line.strip()]
    if not found:
        raise SystemExit(f"serve_load: {path}: no request bodies")
    return found


def run(port: int, clients: int, procs: int, requests: int, time_cap: float, values: int = 1, warmup: int = 20,
        server_pid: int | None = None, cpus: set[int] | None = None, body_file: str | None = None,
        feature: str | None = None, value_range: tuple[float, float] | None = None) -> dict:
    ctx = mp.get_context("fork")
    procs = max(1, min(procs, clients))
    if body_file:
        body_list = read_bodies(body_file)
    elif feature is None or value_range is None:
        raise SystemExit("serve_load: --feature and --range, or --body-file")
    else:
        body_list = bodies(values, Scalar(feature, *value_range))
    ready_count = ctx.Value("i", 0)
    budget = ctx.Value("q", requests)
    deadline = ctx.Value("d", 0.0, lock=False)
    go = ctx.Event()
    pipes, ps = [], []
    for k in range(procs):
        threads = clients // procs + (k < clients % procs)
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_process,
                        args=(port, threads, body_list, warmup, ready_count, go, budget, deadline, w, cpus))
        p.start()
        w.close()
        pipes.append(r)
        ps.append(p)
    setup_deadline = time.monotonic() + 60
    while ready_count.value < clients:
        if time.monotonic() > setup_deadline or not all(p.is_alive() for p in ps):
            for p in ps:
                p.kill()
            raise SystemExit(f"serve_load: clients not ready ({ready_count.value} of {clients})")
        time.sleep(0.005)  # waiting for the clients to connect and warm up; not timed
    s0 = cpu_ticks(server_pid) if server_pid else None
    t0 = time.perf_counter()
    deadline.value = t0 + time_cap
    go.set()
    try:
        results = [r.recv() for r in pipes]
    except EOFError:
        for p in ps:
            p.kill()
        raise SystemExit("serve_load: a client process died") from None
    for p in ps:
        p.join()
    end = max(r["end"] for r in results)
    s1 = cpu_ticks(server_pid) if server_pid else None
    lat = sorted(x for r in results for x in r["lat"])
    wall = end - t0
    n = len(lat)
    out = {
        "clients": clients, "procs": procs, "values_per_request": values, "requests": n,
        "errors": sum(r["errors"] for r in results), "wall_s": wall, "capped": n < requests,
        "req_per_s": n / wall, "values_per_s": n * values / wall,
        "latency_ms": {"p50": pct(lat, 50) * 1e3, "p90": pct(lat, 90) * 1e3, "p99": pct(lat, 99) * 1e3,
                       "max": lat[-1] * 1e3 if lat else float("nan"),
                       "mean": statistics.fmean(lat) * 1e3 if lat else float("nan")},
        "client_cores": sum(r["cpu_s"] for r in results) / wall,
        "client_cpus": sorted(cpus) if cpus else None,
    }
    if server_pid:
        out["server_cores"] = (s1 - s0) / os.sysconf("SC_CLK_TCK") / wall
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--procs", type=int, default=1, help="client processes the clients are spread over")
    p.add_argument("--requests", type=int, default=10_000, help="requests in all, across the clients")
    p.add_argument("--time-cap", type=float, default=5.0, help="seconds; stop earlier than --requests if reached")
    p.add_argument("--values", type=int, default=1, help="values per request (1: a bare number); with "
                   "--body-file, the examples in each body (for values/s)")
    p.add_argument("--feature", help="a one-value model's feature: the request is {FEATURE: value or [values]}")
    p.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"), help="where --feature's values lie")
    p.add_argument("--body-file", help="POST /predict bodies to cycle through, one per line, instead of "
                   "--feature's; or a .json file of requests to any endpoint (read_bodies)")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests per client before the clock starts")
    p.add_argument("--server-pid", type=int, help="also report this process's CPU over the timed span")
    p.add_argument("--cpus", help="comma-separated CPUs the client processes are confined to (default: any)")
    a = p.parse_args(argv)
    cpus = {int(c) for c in a.cpus.split(",")} if a.cpus else None
    print(json.dumps(run(a.port, a.clients, a.procs, a.requests, a.time_cap, a.values, a.warmup, a.server_pid, cpus,
                         a.body_file, a.feature, a.range)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
