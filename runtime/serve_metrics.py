"""`serve`'s counters and latency histogram, rendered as Prometheus text. Stdlib only.

Every update and every read of the counters holds the one lock: connection threads and the
main thread (reloads) update them at once.
"""

from __future__ import annotations

import os
import threading

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters and a latency histogram, rendered in Prometheus's text exposition format."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.values = 0
        self.reloads = {"ok": 0, "failed": 0}
        self.refused_connections = 0
        self.outside: dict[str, int] = {}  # feature name -> inputs outside the observed range

    def observe(self, endpoint: str, status: int, seconds: float, values: int = 0) -> None:
        """One answered request: its endpoint, status, time and the values it predicted."""
        i = next((k for k, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        with self.lock:
            key = (endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.buckets[i] += 1
            self.latency_sum += seconds
            self.values += values

    def outside_observed(self, counts: dict[str, int]) -> None:
        """Inputs answered although outside the training rows' observed range, by feature."""
        with self.lock:
            for name, n in counts.items():
                self.outside[name] = self.outside.get(name, 0) + n

    def reloaded(self, ok: bool) -> None:
        """One SIGHUP reload, passed or failed."""
        with self.lock:
            self.reloads["ok" if ok else "failed"] += 1

    def refused(self) -> None:
        """One connection answered 503 at the connection limit."""
        with self.lock:
            self.refused_connections += 1

    def render(self, snapshot) -> bytes:
        """The text for GET /metrics; the model's lines come from ``snapshot`` (one serve_state.Snapshot)."""
        with self.lock:
            requests = dict(self.requests)
            buckets, total_s, values = list(self.buckets), self.latency_sum, self.values
            reloads, refused = dict(self.reloads), self.refused_connections
            outside = dict(self.outside)
        out = ["# HELP edge_model_requests_total HTTP requests answered, by endpoint and status.",
               "# TYPE edge_model_requests_total counter"]
        out += [f'edge_model_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(requests.items())]
        out += ["# HELP edge_model_request_duration_seconds Time from a request's first byte to its answer.",
                "# TYPE edge_model_request_duration_seconds histogram"]
        running = 0
        for b, n in zip((*LATENCY_BUCKETS, "+Inf"), buckets):
            running += n
            out.append(f'edge_model_request_duration_seconds_bucket{{le="{b}"}} {running}')
        out += [f"edge_model_request_duration_seconds_sum {total_s:.6f}",
                f"edge_model_request_duration_seconds_count {running}",
                "# HELP edge_model_values_predicted_total Examples answered (Celsius values, for the tutorial's model).",
                "# TYPE edge_model_values_predicted_total counter",
                f"edge_model_values_predicted_total {values}",
                "# HELP edge_model_reloads_total SIGHUP reloads, by result.",
                "# TYPE edge_model_reloads_total counter"]
        out += [f'edge_model_reloads_total{{result="{k}"}} {v}' for k, v in sorted(reloads.items())]
        out += ["# HELP edge_model_refused_connections_total Connections answered 503 at the connection limit.",
                "# TYPE edge_model_refused_connections_total counter",
                f"edge_model_refused_connections_total {refused}",
                "# HELP edge_inputs_outside_observed_total Input values answered although outside the training "
                "rows' observed range, by feature.",
                "# TYPE edge_inputs_outside_observed_total counter"]
        model = snapshot.model
        sig = model.signature
        if sig.multi:  # every input's features, as <input>.<feature>
            features = [f"{t.name}.{f}" for t in sig.inputs if t.observed_min is not None for f in t.features]
        else:
            features = sig.features if model.checker.obs_lo is not None else []
        names = list(dict.fromkeys([*features, *sorted(outside)]))  # the model's features, then any from before a reload
        out += [f'edge_inputs_outside_observed_total{{feature="{label_value(n)}"}} {outside.get(n, 0)}' for n in names]
        out += [
                "# HELP edge_model_info The model being served.",
                "# TYPE edge_model_info gauge",
                f'edge_model_info{{sha256="{snapshot.model.sha256}"}} 1',
                "# HELP edge_model_healthy 1 when the last self-check (start or reload) passed.",
                "# TYPE edge_model_healthy gauge",
                f"edge_model_healthy {int(snapshot.healthy)}",
                "# HELP process_resident_memory_bytes Resident memory of this process.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes {rss_bytes()}"]
        return ("\n".join(out) + "\n").encode()


def label_value(text: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
