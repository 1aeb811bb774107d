"""The table at the end of a deploy, rollback or fleet-status run: one row per device.

Each play's tasks keep a fact ``edge_report`` per host (architecture, Python, releases,
result); a host that failed gets its last failure's message as the result (the role's
"refused: ...", "rolled back: ...", "busy: another deploy (pid N, since T)" as they are), an
unreachable one "unreachable: <why>", and one whose variables Ansible refused against the
role's meta/argument_specs.yml "refused: " and Ansible's lines, each naming the variable and
what it expected. Printed after Ansible's recap; with EDGE_REPORT_JSON set, also written
there as JSON (tests and scripts read that).
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: edge_table
type: aggregate
short_description: one row per device at the end of the run
description: The result of each device's deploy, rollback or status check, as a table.
requirements: [enable in ansible.cfg (callbacks_enabled)]
"""

ORDER = ["arch", "python", "current", "previous", "new", "from", "to", "releases", "trust", "selfcheck", "service", "speed",
         "result"]


def _last_line(text) -> str:
    lines = [ln.strip() for ln in str(text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "edge_table"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}

    def v2_playbook_on_play_start(self, play) -> None:
        """Rows in inventory order (--limit applied), whatever order the devices answer in."""
        try:
            hosts = play.get_variable_manager()._inventory.get_hosts(play.hosts)
        except Exception:  # noqa: BLE001 - an internal API: without it, rows come in answer order
            return
        for host in hosts:
            self.rows.setdefault(host.get_name(), {})

    def _row(self, result) -> dict:
        return self.rows.setdefault(result.host.get_name(), {})

    def v2_runner_on_ok(self, result) -> None:
        report = (result.result.get("ansible_facts") or {}).get("edge_report")
        if isinstance(report, dict):
            self._row(result).update({k: str(v) for k, v in report.items()})

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        r = result.result
        if r.get("argument_errors"):  # the role's meta/argument_specs.yml: each line names the variable
            self._row(result)["result"] = "refused: " + "; ".join(str(e) for e in r["argument_errors"])
            return
        why = _last_line(r.get("msg")) if r.get("msg") and r.get("msg") != "non-zero return code" else ""
        why = why or _last_line(r.get("stderr")) or _last_line(r.get("msg")) or "failed"
        if not why.startswith(("refused", "rolled back", "not rolled back", "busy: ")):
            why = f"failed: {result.task.get_name()}: {why}"
        self._row(result)["result"] = why

    def v2_runner_on_unreachable(self, result) -> None:
        self._row(result)["result"] = f"unreachable: {_last_line(result.result.get('msg'))}"

    def v2_playbook_on_stats(self, stats) -> None:
        if not self.rows:
            return
        keys = [k for k in ORDER if any(k in r for r in self.rows.values())]
        keys += sorted({k for r in self.rows.values() for k in r} - set(keys))
        head = ["host", *keys]
        body = [[h, *(r.get(k, "-") for k in keys)] for h, r in self.rows.items()]
        widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
        self._display.display("")
        for row in [head, ["-" * w for w in widths], *body]:
            self._display.display(fmt.format(*row).rstrip())
        path = os.environ.get("EDGE_REPORT_JSON")
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump({h: {"host": h, **r} for h, r in self.rows.items()}, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
