# What a deploy needs to know about a device, in one round trip: run by Ansible's `raw`
# (no module, so it works before anything is known about the device's Python) as
# `<python> -c <this> <edge_root> [<trusted keys file>]`. Prints one JSON line. Parses and runs on Python 2.7
# too, so that an old Python is reported as such rather than failing to start.
import hashlib
import json
import os
import platform
import pwd
import struct
import sys

root = sys.argv[1]
SPEED = ".edge-speed.json"
trust_file = sys.argv[2] if len(sys.argv) > 2 else ""


def link(name):
    path = os.path.join(root, name)
    target = os.readlink(path) if os.path.islink(path) else None
    return os.path.basename(target.rstrip("/")) if target else None


def listdir(sub):
    path = os.path.join(root, sub)
    names = os.listdir(path) if os.path.isdir(path) else []
    return sorted(n for n in names if not n.startswith("."))


def writable(path):
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.access(path, os.W_OK | os.X_OK)


def user():
    # Who the deploy logs in as (the owner edge_root gets when the deploy creates it), and
    # that user's primary group: [name, group]; numbers when the user database lacks them.
    try:
        entry = pwd.getpwuid(os.getuid())
        import grp
        try:
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            group = str(entry.pw_gid)
        return [entry.pw_name, group]
    except KeyError:
        return [str(os.getuid()), str(os.getgid())]


def glibc():
    # The C library the device runs (what pip's manylinux tags are about), as packaging
    # reads it; platform.libc_ver() gives only the newest symbol python itself links to.
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return version if name == "glibc" else None
    except (AttributeError, OSError, ValueError):
        return None


def trust():
    # The trusted-keys file the deploy installed (edge_trusted_keys_file): its sha256, which
    # the deploy compares with the inventory's list, and how many keys it lists. None: no file.
    if not trust_file or not os.path.lexists(trust_file):
        return None
    try:
        with open(trust_file, "rb") as f:
            data = f.read(1 << 20)
    except (IOError, OSError) as e:
        return {"sha256": "unreadable", "count": 0, "error": str(e)}
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]
    return {"sha256": hashlib.sha256(data).hexdigest(), "count": len([ln for ln in lines if ln and ln[0] != "#"])}


def number(v):
    # A figure as the table shows it: 3 significant digits' worth, never an exponent.
    return "%.0f" % v if v >= 100 else "%.1f" % v if v >= 10 else "%.2f" % v


def speed_text(rec):
    # One line for fleet-status: "p50 9.89 us, p99 11.7 us, 57.7 MB, 1 thread" (an emulated
    # device's marked so: its figures are QEMU's), or "not measured: <why>".
    if rec.get("ok") is not True:
        return "not measured: %s" % (rec.get("reason") or "no reason recorded")
    try:
        threads = int(rec["threads"])
        text = u"p50 %s \u00b5s, p99 %s \u00b5s, %s MB, %d thread%s" % (
            number(float(rec["p50_us"])), number(float(rec["p99_us"])), number(float(rec["peak_rss_mb"])),
            threads, "" if threads == 1 else "s")
    except (KeyError, TypeError, ValueError) as e:
        return "unreadable: %s lacks %s" % (SPEED, e)
    return text + (", emulated" if rec.get("emulated") else "")


def speed():
    # What the deploy's gate measured for the current release (release.py writes SPEED in its
    # folder), with "text" for the table; None when there is none (a release deployed before the
    # gate measured). A garbled or unreadable record says so instead of failing the probe.
    path = os.path.join(root, "current", SPEED)
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as f:
            rec = json.loads(f.read(1 << 16).decode("utf-8"))
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
    except (IOError, OSError, ValueError) as e:
        return {"ok": False, "text": "unreadable: %s: %s" % (SPEED, e)}
    rec["text"] = speed_text(rec)
    return rec


releases = listdir("releases")
venvs = [v for v in listdir("venvs") if os.path.exists(os.path.join(root, "venvs", v, ".edge-complete"))]
print(json.dumps({
    "machine": platform.machine(),
    "bits": struct.calcsize("P") * 8,
    "python": "%d.%d.%d" % sys.version_info[:3],
    "executable": sys.executable,
    "glibc": glibc(),
    "root_exists": os.path.isdir(root),
    "root_writable": writable(root),
    "user": user(),
    "current": link("current"),
    "previous": link("previous"),
    "releases": releases,
    "venvs": venvs,
    "trust": trust(),
    "speed": speed(),
    # Pull mode's units, installed by a deploy with edge_pull_url (a deploy without removes them).
    "pull": os.path.exists("/etc/systemd/system/edge-pull.timer"),
    "pull_venvs": [v for v in listdir("pull") if os.path.exists(os.path.join(root, "pull", v, ".edge-complete"))],
    # A release counts as complete once it was renamed into releases/ with its venv link.
    "release_venv": dict((r, os.path.basename(os.readlink(os.path.join(root, "releases", r, ".venv")).rstrip("/")))
                         for r in releases if os.path.islink(os.path.join(root, "releases", r, ".venv"))),
}, sort_keys=True))
