"""The device side of the systemd units: install them from the release, and the drop-in (stdlib only, as root).

Ansible's `script` runs this with the device's Python and become (tasks/service.yml,
tasks/dropin.yml): one process where a module ran for each step. Each file is written only
when its bytes differ (a temporary file renamed over it, mode 0644).

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

Prints one JSON object ("changed": whether a file, the user or an enablement changed); exit 0
when done, 1 when a step failed ("reason": the step and why), 2 on bad usage.

    service.py install UNITS_DIR ROOT [--trusted-keys FILE] [--ssh-keygen PATH]
    service.py dropin ROOT [--trusted-keys FILE] [--ssh-keygen PATH] [--reload]
"""

import json
import os
import pwd
import subprocess
import sys
import tempfile

SYSTEM = "/etc/systemd/system"
UNITS = ("edge-model.socket", "edge-model.service")
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


def option(argv, name, default=""):
    return argv[argv.index(name) + 1] if name in argv[:-1] else default


def main(argv):
    trust = {"trusted_keys": option(argv, "--trusted-keys"), "ssh_keygen": option(argv, "--ssh-keygen")}
    positional, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--trusted-keys", "--ssh-keygen"):
            skip = True  # its value
        elif a != "--reload":
            positional.append(a)
    mode = positional[0] if positional else ""
    if (mode, len(positional)) not in (("install", 3), ("dropin", 2)):
        print(json.dumps({"ok": False, "reason": "usage: " + " | ".join(
            ln.strip() for ln in __doc__.strip().splitlines()[-2:])}))
        return 2
    try:
        if mode == "install":
            changed = install(positional[1], positional[2], **trust)
        else:
            changed = dropin(positional[1], **trust)
            if "--reload" in argv:
                run("Reload systemd's units", ["systemctl", "daemon-reload"])
    except Failed as e:
        print(json.dumps({"ok": False, "reason": str(e)}))
        return 1
    print(json.dumps({"ok": True, "changed": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
