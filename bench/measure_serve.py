"""The `serve` section of `python -m bench`: the HTTP service beside its floor and beside a process per request.

Measured in this one run, on 127.0.0.1 ephemeral ports:

- real: ``python -m runtime serve --bundle DIST/bundle --port 0``, the service as shipped;
- constant: ``python -m bench.const_server`` (same arguments), the very same server code with
  ``Runner.predict`` replaced by a ready constant array: the floor of this server design, so
  real/constant is what the model call costs inside the service and nothing else;
- cli: ``python -m runtime predict VALUE``, one process per request, C at a time: what a shell
  script does without the service.

The two servers run side by side and are loaded alternately (which goes first flips every
round) at 1, 8 and 32 keep-alive clients, single-value requests; ratios are taken pair by pair
and quoted as median [min, max]. Then requests of 10,000 values. The load generator is
bench/serve_load.py in processes of its own, confined to all CPUs but one when there are two or
more, so that it cannot take the whole machine from the server it measures; its CPU use is
recorded with every run. Peak RSS of the real server is VmHWM from /proc at the end of its load,
against ``python -m runtime predict 100``'s (os.wait4, through a small spawner: see peak_rss_run in
bench/proc.py, through which every process here is started).
The server pins its connection threads to one CPU by default (``--cpu auto``); in the full run
the same single-value rounds are repeated with ``--cpu any`` (not pinned), to show what that buys.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from bench import proc
from bench.proc import PY, ROOT
from bench.scalar import Scalar
from bench.stats import nearest_rank, stats

CLIENTS = (1, 8, 32)
BATCH_VALUES = 10_000
# Start a command with its affinity set (inherited by every thread it will start), then exec it.
PIN = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
       "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def cpu_plan() -> tuple[int | None, list[int] | None]:
    """(the CPU a pinned server gets, the CPUs the load generator gets); (None, None) on one CPU."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(allowed) < 2:
        return None, None
    return allowed[-1], allowed[:-1]


def client_procs(clients: int) -> int:
    """Client processes for C clients: two once there is more than one client.

    Measured here (2 CPUs, clients confined to one): one process carries 8 or 32 http.client
    connections at well under one core, but its GIL queues the answers; a second process took
    8-client throughput against the constant server from ~12-15k to ~16-17k req/s, a fourth
    added nothing. The client CPU of every run is in the results.
    """
    return 1 if clients == 1 else 2


class Server:
    """A server process started for the benchmark; learns its port from the 'serving model' line."""

    def __init__(self, name: str, module: str, bundle: Path, work: Path, cpu: int | None = None,
                 args: tuple[str, ...] = ()):
        self.name = name
        cmd = [PY, "-m", module, *(["serve"] if module == "runtime" else []), "--bundle", str(bundle), "--port", "0",
               *args]
        if cpu is not None:
            cmd = [PY, "-c", PIN, str(cpu), *cmd[1:]]
        self.err_path = work / f"{name}.stderr"
        self.proc = proc.start(cmd, self.err_path)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 120
        while True:
            text = self.err_path.read_text(errors="replace")
            line = next((ln for ln in text.splitlines() if "serving model" in ln), None)
            if line:
                found = re.findall(r" on (\S+):(\d+)", line)
                if not found:
                    self.stop()
                    raise SystemExit(f"bench: {name}: no host:port in {line!r}")
                self.port = int(found[-1][1])
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench: {name} server did not start: {text.strip()[-800:]}")
            time.sleep(0.02)  # waiting for the self-check and the listening socket
        self.start_hwm_mb = self.hwm_mb()

    def hwm_mb(self) -> float:
        """Peak resident set so far (VmHWM), MB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise SystemExit(f"bench: no VmHWM for {self.name} (pid {self.pid})")

    def stop(self) -> int | None:
        return proc.stop(self.proc)


def load(server: Server, model: Scalar, clients: int, requests: int, cap: float, client_cpus: list[int] | None,
         values: int = 1) -> dict:
    """One run of bench/serve_load.py against ``server`` (requests of ``model``'s feature); its JSON summary."""
    cmd = [PY, "-m", "bench.serve_load", "--port", str(server.port), "--clients", str(clients),
           "--procs", str(client_procs(clients)), "--requests", str(requests), "--time-cap", str(cap),
           "--values", str(values), "--warmup", "20" if values == 1 else "2", "--server-pid", str(server.pid),
           "--feature", model.feature, "--range", repr(model.lo), repr(model.hi)]
    if client_cpus:
        cmd += ["--cpus", ",".join(map(str, client_cpus))]
    r = proc.run(cmd, capture=True, timeout=cap + 180, what=f"load on {server.name}")
    if server.proc.poll() is not None:
        raise SystemExit(f"bench: {server.name} server exited: {server.err_path.read_text(errors='replace')[-800:]}")
    return r.json()


def cli_per_request(bundle: Path, model: Scalar, clients: int, requests: int, cap: float) -> dict:
    """C shell-script clients, each running `python -m runtime predict VALUE` per request (values
    over ``model``'s working range), until ``requests`` are done or ``cap`` seconds have passed
    (each started request finishes)."""
    lock = threading.Lock()
    walls: list[float] = []
    left = [requests]
    failure: list[BaseException] = []
    t0 = time.perf_counter()
    deadline = t0 + cap

    def client(k: int) -> None:
        i = 0
        while time.perf_counter() < deadline and not failure:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            value = repr(model.at(((k * 7919 + i) % 97) / 96, 2))
            i += 1
            try:
                w = proc.run([PY, "-m", "runtime", "predict", value, "--bundle", str(bundle)],
                             stdin=proc.DEVNULL).wall_s
            except BaseException as e:  # SystemExit from a failed predict: stop every client, re-raise below
                failure.append(e)
                return
            with lock:
                walls.append(w)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failure:
        raise failure[0]
    wall = time.perf_counter() - t0
    lat = sorted(walls)
    return {"clients": clients, "requests": len(lat), "wall_s": wall, "capped": len(lat) < requests,
            "req_per_s": len(lat) / wall,
            "latency_ms": {"p50": nearest_rank(lat, 50) * 1e3, "p99": nearest_rank(lat, 99) * 1e3, "max": lat[-1] * 1e3}}


def _summary(real: list[dict], const: list[dict]) -> dict:
    """Medians [min, max] of each server's runs and the pair-by-pair ratios real/constant."""

    def side(runs: list[dict]) -> dict:
        return {"req_per_s": stats([r["req_per_s"] for r in runs]),
                "values_per_s": stats([r["values_per_s"] for r in runs]),
                "p50_ms": stats([r["latency_ms"]["p50"] for r in runs]),
                "p99_ms": stats([r["latency_ms"]["p99"] for r in runs]),
                "client_cores": stats([r["client_cores"] for r in runs]),
                "server_cores": stats([r["server_cores"] for r in runs]),
                "errors": sum(r["errors"] for r in runs), "requests": sum(r["requests"] for r in runs)}

    return {"real": side(real), "constant": side(const),
            "throughput_ratio": stats([a["req_per_s"] / b["req_per_s"] for a, b in zip(real, const)]),
            "p99_ratio": stats([a["latency_ms"]["p99"] / b["latency_ms"]["p99"] for a, b in zip(real, const)])}


def _rounds(real: Server, const: Server, model: Scalar, rounds: int, requests: int, cap: float,
            client_cpus: list[int] | None) -> dict:
    runs: dict[int, dict[str, list[dict]]] = {c: {"real": [], "constant": []} for c in CLIENTS}
    for s in (real, const):  # connections, threads and caches warm before anything counts
        load(s, model, 8, requests, min(cap, 0.5), client_cpus)
    for rnd in range(rounds):
        for c in CLIENTS:
            pair = ((real, "real"), (const, "constant")) if rnd % 2 == 0 else ((const, "constant"), (real, "real"))
            for server, key in pair:
                runs[c][key].append(load(server, model, c, requests, cap, client_cpus))
    return {str(c): {"runs": v, **_summary(v["real"], v["constant"])} for c, v in runs.items()}


def run(bundle: Path, work: Path, quick: bool, model: Scalar) -> dict:
    rounds = 3 if quick else 5
    requests, cap = (2_000, 1.0) if quick else (10_000, 4.0)
    batch_requests, batch_rounds = (100, 2) if quick else (300, 3)
    cli_requests = {1: 5, 8: 16, 32: 32} if quick else {1: 15, 8: 40, 32: 96}
    server_cpu, client_cpus = cpu_plan()
    out: dict = {"method": {
        "rounds": rounds, "requests_per_run": requests, "time_cap_s": cap,
        "client_procs": {str(c): client_procs(c) for c in CLIENTS}, "client_cpus": client_cpus,
        "batch_values": BATCH_VALUES,
        "batch_requests_per_run": batch_requests, "cli_requests": {str(k): v for k, v in cli_requests.items()},
    }}

    # A process per request, before any server runs; and `predict 100` alone for its peak RSS.
    out["cli"] = {str(c): cli_per_request(bundle, model, c, cli_requests[c], 30.0 if quick else 60.0) for c in CLIENTS}
    predict = [proc.peak_rss_run([PY, "-m", "runtime", "predict", "100", "--bundle", str(bundle)], ROOT)
               for _ in range(4 if quick else 8)][1:]  # the first warms the page cache
    out["predict_100"] = {"wall_s": stats([w for w, _ in predict]), "peak_rss_mb": stats([m for _, m in predict])}

    # The servers as shipped (no affinity); the clients on all CPUs but one.
    servers = []
    try:
        real = Server("real", "runtime", bundle, work)
        servers.append(real)
        const = Server("constant", "bench.const_server", bundle, work)
        servers.append(const)
        out["single"] = _rounds(real, const, model, rounds, requests, cap, client_cpus)
        rss = {"start_mb": real.start_hwm_mb, "after_single_mb": real.hwm_mb()}
        batch = {"real": [], "constant": []}
        for rnd in range(batch_rounds):
            pair = ((real, "real"), (const, "constant")) if rnd % 2 == 0 else ((const, "constant"), (real, "real"))
            for server, key in pair:
                batch[key].append(load(server, model, 1, batch_requests, cap, client_cpus, BATCH_VALUES))
        out["batch"] = {"clients": 1, "runs": batch, **_summary(batch["real"], batch["constant"])}
        rss["after_batch_mb"] = real.hwm_mb()  # the end of its load: the goal's figure
        rss["constant_mb"] = const.hwm_mb()
        if not quick:  # 8 batch requests in flight at once: memory the goal's load does not show
            b8 = {"real": [load(real, model, 8, batch_requests, cap, client_cpus, BATCH_VALUES)],
                  "constant": [load(const, model, 8, batch_requests, cap, client_cpus, BATCH_VALUES)]}
            out["batch_8"] = {"clients": 8, "runs": b8, **_summary(b8["real"], b8["constant"])}
            rss["after_batch_8_mb"] = real.hwm_mb()
        out["rss"] = rss
        for s in servers:
            out.setdefault("exit_codes", {})[s.name] = s.stop()
        servers.clear()

        # The full run: the same rounds with the connection threads not pinned (--cpu any).
        if not quick and server_cpu is not None:
            real = Server("real-unpinned", "runtime", bundle, work, args=("--cpu", "any"))
            servers.append(real)
            const = Server("constant-unpinned", "bench.const_server", bundle, work, args=("--cpu", "any"))
            servers.append(const)
            out["single_unpinned"] = _rounds(real, const, model, max(3, rounds - 2), requests, cap, client_cpus)
    finally:
        for s in servers:
            s.stop()
    cli8, real8 = out["cli"]["8"], out["single"]["8"]["real"]
    out["rss"]["ratio_vs_predict"] = out["rss"]["after_batch_mb"] / out["predict_100"]["peak_rss_mb"]["median"]
    out["real_vs_cli_8"] = real8["req_per_s"]["median"] / cli8["req_per_s"]
    return out
