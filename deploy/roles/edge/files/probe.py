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
    # Pull mode's units, installed by a deploy with edge_pull_url (a deploy without removes them).
    "pull": os.path.exists("/etc/systemd/system/edge-pull.timer"),
    "pull_venvs": [v for v in listdir("pull") if os.path.exists(os.path.join(root, "pull", v, ".edge-complete"))],
    # A release counts as complete once it was renamed into releases/ with its venv link.
    "release_venv": dict((r, os.path.basename(os.readlink(os.path.join(root, "releases", r, ".venv")).rstrip("/")))
                         for r in releases if os.path.islink(os.path.join(root, "releases", r, ".venv"))),
}, sort_keys=True))
