"""The device side of the service: its systemd units, its drop-in, its restart (stdlib only).

Ansible's `script` runs this with the device's Python (tasks/service.yml, tasks/dropin.yml,
tasks/restart.yml): one process where a module ran for each step, and one for each health
poll. ``install`` and ``dropin`` run as root (become); ``restart`` as root with the systemd
manager, as the deploy user with the command manager. Each file is written only when its
bytes differ (a temporary file renamed over it, mode 0644).

``install`` (every deploy with edge_service and the systemd manager), in order:

1. the service user ``edge-model`` (User= in the unit), a system user without a home or a
   login shell, when it does not exist;
2. edge-model.socket and edge-model.service from the release's systemd/ folder into
   /etc/systemd/system/;
3. the drop-in, as ``dropin`` writes it;
4. ``systemctl daemon-reload`` (which also clears the service's start count), ``systemctl
   enable`` both units and ``systemctl start edge-model.socket``.

``dropin`` writes /etc/systemd/system/edge-model.service.d/deploy.conf only: the release the
service runs (EDGE_BUNDLE=ROOT/current) and, when given, EDGE_TRUSTED_KEYS and
EDGE_SSH_KEYGEN; with --reload, ``systemctl daemon-reload`` after it (the revert's case).

``restart`` (every restart by the role: a deploy's, a rollback's, a revert's), in order:

1. the restart: ``systemctl restart edge-model.service`` (--systemd), or the argv of
   edge_service_restart_command (--command JSON, run as it is);
2. ``GET URL`` once a second, each with a 5 s timeout, until it answers 200 with the expected
   model's sha256 in its JSON (--expect; empty: any healthy model), at most TIMEOUT + 1 tries;
3. with --systemd, once the restart happened, healthy or not: ``systemctl reset-failed
   edge-model.service``. StartLimitBurst=5 in 300 s counts a deploy's or rollback's restart as
   much as a crash's, and without this a few rollbacks in five minutes would leave no restart
   for the next crash or watchdog kill (a daemon-reload clears the count too, but a rollback
   does none). An unhealthy restart is followed by the role's revert, which restarts again.

Prints one JSON object ("changed", for install and dropin: whether a file, the user or an
enablement changed); exit 0 when done (restart: healthy), 1 when a step failed ("reason": the
step's name, as the role's tasks had them, and why), 2 on bad usage.

    service.py install UNITS_DIR ROOT [--trusted-keys FILE] [--ssh-keygen PATH]
    service.py dropin ROOT [--trusted-keys FILE] [--ssh-keygen PATH] [--reload]
    service.py restart (--systemd | --command JSON_ARGV) --url URL --timeout SECONDS [--expect SHA256]
"""

import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SYSTEM = "/etc/systemd/system"
UNITS = ("edge-model.socket", "edge-model.service")
UNIT = UNITS[1]
USER = "edge-model"
DROPIN = os.path.join(SYSTEM, "edge-model.service.d", "deploy.conf")


class Failed(Exception):
    """One line: the step that failed and why."""


def run(step, argv):
    """argv's output; Failed naming the step with its last line."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    except OSError as e:
        raise Failed("%s: %s" % (step, e))
    if p.returncode != 0:
        lines = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
        raise Failed("%s: %s" % (step, (lines or ["exit %d" % p.returncode])[-1]))
    return p.stdout


def write(path, data):
    """path holds data (mode 0644) afterwards; True when it had to be written."""
    try:
        with open(path, "rb") as f:
            if f.read() == data and (os.stat(path).st_mode & 0o777) == 0o644:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".deploy-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def dropin(root, trusted_keys, ssh_keygen):
    lines = ["# Written by the deploy (deploy/roles/edge): the release the service runs, and the keys it trusts.",
             "[Service]", "Environment=EDGE_BUNDLE=%s/current" % root]
    if trusted_keys:
        lines.append("Environment=EDGE_TRUSTED_KEYS=%s" % trusted_keys)
    if ssh_keygen:
        lines.append("Environment=EDGE_SSH_KEYGEN=%s" % ssh_keygen)
    try:
        return write(DROPIN, ("\n".join(lines) + "\n").encode())
    except OSError as e:
        raise Failed("Write the drop-in (edge_root/current, the trusted keys): %s" % e)


def install(units_dir, root, trusted_keys, ssh_keygen):
    changed = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        run("Create the service user", ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER])
        changed = True
    for unit in UNITS:
        try:
            with open(os.path.join(units_dir, unit), "rb") as f:
                changed = write(os.path.join(SYSTEM, unit), f.read()) or changed
        except OSError as e:
            raise Failed("Install the bundle's units: %s" % e)
    changed = dropin(root, trusted_keys, ssh_keygen) or changed
    run("Reload systemd's units", ["systemctl", "daemon-reload"])
    enabled = run("Enable the socket and the service", ["systemctl", "enable"] + list(UNITS))
    changed = changed or "Created symlink" in enabled
    run("Start the socket", ["systemctl", "start", UNITS[0]])
    return changed


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


def restart(argv, systemd, url, timeout, expect):
    """Restart (systemd, else argv), wait for the model, then (systemd) clear the start count."""
    run("Restart the service with " + ("systemd" if systemd else "edge_service_restart_command"), argv)
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


VALUED = ("--trusted-keys", "--ssh-keygen", "--command", "--url", "--timeout", "--expect")


def usage():
    lines = __doc__.strip().splitlines()[-3:]
    print(json.dumps({"ok": False, "reason": "usage: " + " | ".join(ln.strip() for ln in lines)}))
    return 2


def main(argv):
    opts, positional, i = {}, [], 0
    while i < len(argv):
        if argv[i] in VALUED and i + 1 < len(argv):
            opts[argv[i]], i = argv[i + 1], i + 2
        else:
            positional.append(argv[i])
            i += 1
    flags = {a for a in positional if a in ("--reload", "--systemd")}
    positional = [a for a in positional if a not in flags]
    mode = positional[0] if positional else ""
    trust = {"trusted_keys": opts.get("--trusted-keys", ""), "ssh_keygen": opts.get("--ssh-keygen", "")}
    if (mode, len(positional)) not in (("install", 3), ("dropin", 2), ("restart", 1)):
        return usage()
    if mode == "restart":
        systemd = "--systemd" in flags
        try:
            timeout = float(opts["--timeout"])
            argv = ["systemctl", "restart", UNIT] if systemd else json.loads(opts["--command"])
            if not opts.get("--url") or systemd == ("--command" in opts) or not isinstance(argv, list) or not argv:
                raise ValueError
        except (KeyError, ValueError):
            return usage()
    try:
        if mode == "install":
            out = {"changed": install(positional[1], positional[2], **trust)}
        elif mode == "dropin":
            out = {"changed": dropin(positional[1], **trust)}
            if "--reload" in flags:
                run("Reload systemd's units", ["systemctl", "daemon-reload"])
        else:
            restart([str(a) for a in argv], systemd, opts["--url"], timeout, opts.get("--expect", ""))
            out = {}
    except Failed as e:
        print(json.dumps({"ok": False, "reason": str(e)}))
        return 1
    print(json.dumps({"ok": True, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
