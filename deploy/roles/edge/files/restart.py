"""The device side of a restart: restart the service, wait until /healthz answers 200 for the model (stdlib only).

Ansible's `script` runs this with the device's Python (tasks/restart.yml), as root (become)
with the systemd manager: one process where a module per step and one per health poll ran
before. In order:

1. the restart: ``systemctl restart edge-model.service`` (--systemd), or the argv of
   edge_service_restart_command (--command JSON, run as it is);
2. ``GET URL`` once a second, each with a 5 s timeout, until it answers 200 with the expected
   model's sha256 in its JSON (--expect; empty: any healthy model), at most TIMEOUT + 1 tries;
3. with --systemd, once the restart happened, healthy or not: ``systemctl reset-failed
   edge-model.service``. StartLimitBurst=5 in 300 s counts a deploy's or rollback's restart as
   much as a crash's, and without this a few rollbacks in five minutes would leave no restart
   for the next crash or watchdog kill (a daemon-reload clears the count too, but a rollback
   does none). An unhealthy restart is followed by the role's revert, which restarts again.

Prints one JSON object; exit 0 when healthy, 1 when a step failed ("reason": the step's name,
as the role's tasks had them, and why), 2 on bad usage.

    restart.py (--systemd | --command JSON_ARGV) --url URL --timeout SECONDS [--expect SHA256]
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

UNIT = "edge-model.service"


class Failed(Exception):
    """One line: the step that failed and why."""


def run(step, argv):
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    except OSError as e:
        raise Failed("%s: %s" % (step, e))
    if p.returncode != 0:
        lines = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
        raise Failed("%s: %s" % (step, (lines or ["exit %d" % p.returncode])[-1]))


def health(url):
    """(status, model or None, what went wrong or '') of one GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (OSError, ValueError) as e:  # refused, reset, timed out, not a URL
        return -1, None, "Request failed: %s" % (getattr(e, "reason", None) or e)
    try:
        model = json.loads(body.decode("utf-8")).get("model")
    except (ValueError, AttributeError):
        model = None
    return status, model, ""


def wait(url, timeout, expect):
    status, model, why = -1, None, ""
    for attempt in range(int(timeout) + 1):
        if attempt:
            time.sleep(1)
        status, model, why = health(url)
        if status == 200 and (not expect or model == expect):
            return
    raise Failed("Wait for /healthz to answer 200 for the model: after %d tries, %s" % (
        int(timeout) + 1, why or "status %d, model %s (expected %s)" % (status, model, expect or "any")))


def option(argv, name, default=None):
    return argv[argv.index(name) + 1] if name in argv[:-1] else default


def main(argv):
    url, timeout, expect, command = option(argv, "--url"), option(argv, "--timeout"), option(argv, "--expect", ""), \
        option(argv, "--command")
    systemd = "--systemd" in argv
    try:
        timeout = float(timeout)
        restart = ["systemctl", "restart", UNIT] if systemd else json.loads(command)
        if not url or systemd == (command is not None) or not isinstance(restart, list) or not restart:
            raise ValueError
    except (TypeError, ValueError):
        print(json.dumps({"ok": False, "reason": "usage: " + __doc__.strip().splitlines()[-1].strip()}))
        return 2
    try:
        run("Restart the service with " + ("systemd" if systemd else "edge_service_restart_command"),
            [str(a) for a in restart])
        failed = None
        try:
            wait(url, timeout, expect)
        except Failed as e:
            failed = e
        if systemd:
            try:
                run("Clear the service's start count (systemctl reset-failed)", ["systemctl", "reset-failed", UNIT])
            except Failed as e:
                failed = failed or e  # the health's reason first
        if failed:
            raise failed
    except Failed as e:
        print(json.dumps({"ok": False, "reason": str(e)}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
