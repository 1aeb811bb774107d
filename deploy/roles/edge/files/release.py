"""The device side of a release: unpack, gate, measure, switch, prune, in one run (stdlib only).

Ansible's `script` sends this file to the device and runs it with the device's Python (no
module, so no Ansible code is sent along: a model-only update costs the bundle's bytes).
For `install`, the deploying machine sends it as a zip application with the bundle
tarball inside (deploy/wheelhouse.py makes it; python runs a zip's __main__.py). Prints one JSON object; exit 0 when done, 1 when
the gate refused the release (nothing switched), 2 on bad usage or a damaged layout, 3 when
another deploy held the device's lock for longer than --lock-timeout (nothing changed).

    release.py install  ROOT RELEASE VENV [--launcher WORDS] [--keep N] [--trust-changed] [TRUST] [LOCK]
    release.py gate     ROOT RELEASE [--launcher WORDS] [TRUST] [LOCK]  # gate an installed release only (new trust)
    release.py rollback ROOT [--launcher WORDS] [TRUST] [LOCK]  # gate previous, then swap current and previous
    release.py revert   ROOT CURRENT PREVIOUS [LOCK]  # put both links back ("" = no link)

LOCK: --lock-timeout S (default 120). One deploy at a time per device: every mode takes an
exclusive flock(2) on ROOT/.deploy.lock first and holds it to the end (unpack, gate, switch,
prune), waiting up to S seconds for another holder; then it exits 3 with the reason
"busy: another deploy (pid N, since T)" (what the holder wrote in the file, T in UTC). The
kernel drops a flock with its process, so a lock left by a killed deploy is free: the next
run takes it at once, and reports "lock_taken_over" (the holder removes the file as it lets
go, so a file still naming a holder means that holder died). The trusted-keys steps
(trusted_keys.py) take the same lock.

install decides under the lock whether there is anything to do: when RELEASE is already
current and linked to VENV, a complete one (another deploy of the same bundle switched to it
while this one waited: the role's probe saw the device before either took the lock), it
changes nothing and prints "unchanged": true, and the role restarts nothing. With
--trust-changed (the role staged new trusted keys) that release is gated under them, as
`gate` does.

install measures the release once its gate passed, before the switch: `runtime bench`, bounded
(a few hundred batch-1 calls, no cold-start processes, 60 s at most), its p50, p99, peak RSS and
threads written to releases/<release>/.edge-speed.json (atomically) and printed as "speed". A
bench that fails is recorded as such, with why, and the release goes on: timing never refuses.

TRUST: --trusted-keys FILE (the gate's selfcheck verifies the bundle's signature against
it; without it the selfcheck gets no trusted keys from the deploy, and $EDGE_TRUSTED_KEYS is
not passed on) and --ssh-keygen PATH (the selfcheck's $EDGE_SSH_KEYGEN).

Layout under ROOT: releases/<release>/ (the unpacked bundle; .venv -> ROOT/venvs/<id>),
current and previous (relative symlinks into releases/). A link is replaced by making the
new one under a temporary name and renaming it over the old (rename(2) is atomic), so a
reader sees the old target or the new one, never neither. A release folder appears by
renaming a complete one into releases/.
"""

import errno
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

LOCK = ".deploy.lock"
BUSY = 3
# The gate's speed record, in the release folder (docs/deploy.md, "Each device's own speed"):
# what `runtime bench` measured there, bounded by these options and a timeout.
SPEED = ".edge-speed.json"
BENCH_ARGS = ["bench", "--calls", "300", "--large-batch", "1", "--cold-runs", "0"]
BENCH_TIMEOUT = 60


def bundle_bytes():
    """The tarball inside the zip application this runs from (install only)."""
    try:
        with zipfile.ZipFile(sys.argv[0]) as z:
            return z.read("bundle.tar.gz")
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise Refused("no bundle in %s (install runs from the .pyz the deploy makes): %s" % (sys.argv[0], e))


class Refused(Exception):
    pass


class Busy(Exception):
    pass


def holder(text):
    """'pid N, since T' from what a holder wrote in the lock file (JSON), or what is known."""
    try:
        doc = json.loads(text)
        return "pid %s, since %s" % (doc.get("pid", "?"), doc.get("since", "?"))
    except ValueError:
        return "pid ?, since ?"


def lock(root, timeout, what, poll=0.05):
    """ROOT/.deploy.lock held (flock, exclusive) by this process: (fd, what a dead holder left or
    None). Waits up to `timeout` seconds, then Busy("busy: another deploy (pid N, since T)")."""
    path = os.path.join(root, LOCK)
    os.makedirs(root, exist_ok=True)
    deadline = time.monotonic() + timeout
    seen = ""
    while True:  # the holder removes the file as it lets go: then take the new one
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited: the gate's children do not hold it
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            seen = text or seen  # the holder may be between its truncate and its write
            if time.monotonic() >= deadline:
                os.close(fd)
                raise Busy("busy: another deploy (%s)" % holder(seen))
            time.sleep(poll)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    left = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since, "what": what}).encode() + b"\n", 0)
    os.fsync(fd)
    taken = None
    if left:
        try:
            taken = json.loads(left)
        except ValueError:
            taken = {"text": left}
    return fd, taken


def unlock(fd, path):
    """Cleared, then released: a lock file that still names a holder was left by a dead one."""
    os.unlink(path)  # removed while held: a file still there names a holder that died
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def clean_temporaries(root):
    """What an interrupted run left (under the lock, nothing else is writing these): unpack
    folders, half-made links, venv links."""
    releases = os.path.join(root, "releases")
    for n in (os.listdir(releases) if os.path.isdir(releases) else []):
        path = os.path.join(releases, n)
        if n.startswith(".incoming-"):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.isdir(path) and not os.path.islink(path):
            for m in os.listdir(path):
                if m.startswith((".venv.new", SPEED + ".tmp-")):
                    os.unlink(os.path.join(path, m))
    for n in os.listdir(root):
        if n.startswith(("current.new-", "previous.new-")):
            os.unlink(os.path.join(root, n))


def target(root, name):
    path = os.path.join(root, name)
    return os.path.basename(os.readlink(path).rstrip("/")) if os.path.islink(path) else ""


def relink(root, name, release):
    """ROOT/name -> releases/<release> atomically; release "" removes the link."""
    path = os.path.join(root, name)
    if not release:
        if os.path.islink(path):
            os.unlink(path)
        return
    tmp = "%s.new-%d" % (path, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", release), tmp)
    os.replace(tmp, path)


def precompile(folder, venv):
    """Byte-compile the release's runtime/ with the venv's Python, so that neither the service
    (which cannot write __pycache__: its release folder is read-only to it) nor a command compiles
    it at every start. checked-hash: Python uses a .pyc only while its source's hash matches, so
    an edited source is never shadowed by a stale .pyc. Best effort: without it, Python compiles
    in memory as before. Whether it worked, for the role's record."""
    try:
        r = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "compileall", "-q", "--invalidation-mode",
                            "checked-hash", os.path.join(folder, "runtime")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    except OSError:
        return False
    return r.returncode == 0


def unpack(root, release, venv):
    """releases/<release>, linked to venv (its runtime/ byte-compiled by that venv's Python); made
    under a temporary name, then renamed into place."""
    releases = os.path.join(root, "releases")
    final = os.path.join(releases, release)
    if os.path.isdir(final):  # already there (a redeploy, or the device's Python changed): relink only
        tmp = os.path.join(final, ".venv.new-%d" % os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(venv, tmp)
        os.replace(tmp, os.path.join(final, ".venv"))
        precompile(final, venv)  # another Python's tag, if the device's Python changed
        return False
    incoming = os.path.join(releases, ".incoming-%s-%d" % (release, os.getpid()))
    os.makedirs(incoming)
    with tarfile.open(fileobj=io.BytesIO(bundle_bytes())) as tar:
        for m in tar.getmembers():  # the bundle: plain files and folders under bundle/ only
            if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in m.name.split("/") \
                    or m.name.split("/")[0] != "bundle":
                raise Refused("the bundle holds %r, which is not a plain file under bundle/" % m.name)
        tar.extractall(incoming, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    os.symlink(venv, os.path.join(incoming, "bundle", ".venv"))
    os.rename(os.path.join(incoming, "bundle"), final)
    precompile(final, venv)  # in place: the .pyc files name the sources where they stay
    shutil.rmtree(incoming, ignore_errors=True)
    return True


def runtime_cmd(folder, launcher, args, trusted_keys="", ssh_keygen=""):
    """`python -m runtime ARGS` in the release's own venv (through the launcher), against the
    trusted keys given (none: none from the deploy, and $EDGE_TRUSTED_KEYS is not passed on):
    (argv, environment)."""
    cmd = launcher + [os.path.join(folder, ".venv", "bin", "python"), "-m", "runtime"] + args
    cmd += ["--trusted-keys", trusted_keys] if trusted_keys else []
    env = {k: v for k, v in os.environ.items() if k != "EDGE_TRUSTED_KEYS"}
    if ssh_keygen:
        env["EDGE_SSH_KEYGEN"] = ssh_keygen
    return cmd, env


def gate(root, release, launcher, trusted_keys="", ssh_keygen="", what="selfcheck of %s failed"):
    """The release's selfcheck in its own venv, against the trusted keys given (none: none from
    the deploy); Refused with its last stderr line."""
    folder = os.path.join(root, "releases", release)
    cmd, env = runtime_cmd(folder, launcher, ["selfcheck"], trusted_keys, ssh_keygen)
    r = subprocess.run(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines() or ["(no output)"]
        line = lines[-1]
        if trusted_keys and "unrecognized arguments" in line and "--trusted-keys" in line:
            line += " (its runtime predates signed bundles: it cannot check a signature)"
        raise Refused("%s (exit %d): %s" % (what % release, r.returncode, line))


def bench_record(doc):
    """The figures the speed record keeps from `runtime bench`'s JSON; ValueError when it lacks them."""
    try:
        lat = doc["batch1_latency"]
        rec = {"threads": int(doc["threads"]), "calls": int(lat["calls"]), "p50_us": float(lat["p50_us"]),
               "p99_us": float(lat["p99_us"]), "peak_rss_mb": float(doc["peak_rss_mb"]),
               "machine": str(doc["machine"]["machine"]), "onnxruntime": str(doc["onnxruntime"])}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError("bench printed no figures (%s: %s)" % (type(e).__name__, e))
    return rec


def measure(root, release, launcher, trusted_keys="", ssh_keygen="", timeout=BENCH_TIMEOUT):
    """The release's own speed on this device, once its gate passed: `runtime bench` in its venv,
    bounded (BENCH_ARGS: a few hundred batch-1 calls after bench's own warm-up, a batch of one
    for its throughput figure, no cold-start processes; killed after `timeout` seconds), at the
    runtime's default threads, which the deploy's service runs with. Recorded in the release
    folder (SPEED, written atomically) whatever happened: a bench that fails, is killed or prints
    no figures is recorded with why, and never refuses the release (the selfcheck is the gate).
    Returns the record."""
    folder = os.path.join(root, "releases", release)
    cmd, env = runtime_cmd(folder, launcher, BENCH_ARGS, trusted_keys, ssh_keygen)
    rec = {"release": release, "emulated": bool(launcher),
           "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.monotonic()
    try:
        # A session of its own: at the timeout the whole of it is killed (a launcher that forks
        # the venv's Python included), and nothing it started keeps the pipes open.
        p = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
        if p.returncode != 0:
            lines = (err or out).strip().splitlines() or ["(no output)"]
            raise ValueError("bench exit %d: %s" % (p.returncode, lines[-1]))
        try:
            doc = json.loads(out)
        except ValueError:
            raise ValueError("bench printed no JSON: %s" % ((out.strip().splitlines() or ["(no output)"])[-1]))
        rec.update(bench_record(doc), ok=True)
    except subprocess.TimeoutExpired:
        rec.update(ok=False, reason="bench did not finish within %g s (killed)" % timeout)
    except (OSError, ValueError) as e:
        rec.update(ok=False, reason=str(e)[:500])
    rec["seconds"] = round(time.monotonic() - t0, 3)
    path = os.path.join(folder, SPEED)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "w") as f:
            json.dump(rec, f, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:  # a record that cannot be written refuses nothing either
        rec.update(ok=False, reason="not recorded: %s" % e)
    return rec


def prune(root, keep, pinned):
    """Keep `keep` releases (pinned first, then the newest); remove the rest and unused venvs."""
    releases = os.path.join(root, "releases")
    names = [n for n in os.listdir(releases) if not n.startswith(".")]
    names.sort(key=lambda n: os.stat(os.path.join(releases, n)).st_mtime, reverse=True)
    kept = [p for p in pinned if p in names]
    kept += [n for n in names if n not in kept][:max(keep - len(kept), 0)]
    removed = [n for n in names if n not in kept]
    for n in removed:
        shutil.rmtree(os.path.join(releases, n), ignore_errors=True)
    used = set()
    for n in kept:
        link = os.path.join(releases, n, ".venv")
        if os.path.islink(link):
            used.add(os.path.basename(os.readlink(link).rstrip("/")))
    venvs = os.path.join(root, "venvs")
    for v in (os.listdir(venvs) if os.path.isdir(venvs) else []):
        if v not in used:
            shutil.rmtree(os.path.join(venvs, v), ignore_errors=True)
    return removed


def running(root, current, release, venv):
    """Whether `release` is current and linked to `venv`, a complete one: what the role's probe
    calls unchanged, checked again under the lock."""
    link = os.path.join(root, "releases", release, ".venv")
    return (current == release and os.path.islink(link)
            and os.path.realpath(link) == os.path.realpath(venv)
            and os.path.exists(os.path.join(venv, ".edge-complete")))


def switch(root, to, previous):
    relink(root, "previous", previous)
    relink(root, "current", to)
    os.utime(os.path.join(root, "releases", to))  # the newest: pruned last


def model_sha256(root, release):
    """The sha256 of the release's model file, as its manifest lists it (what /healthz reports)."""
    with open(os.path.join(root, "releases", release, "manifest.json")) as f:
        manifest = json.load(f)
    return manifest["files"][manifest["model"]["file"]]


def option(argv, name, default):
    return argv[argv.index(name) + 1] if name in argv[:-1] else default


def main(argv):
    mode, root = argv[0], argv[1]
    launcher = option(argv, "--launcher", "").split()
    trust = {"trusted_keys": option(argv, "--trusted-keys", ""), "ssh_keygen": option(argv, "--ssh-keygen", "")}
    try:
        fd, taken = lock(root, float(option(argv, "--lock-timeout", "120")), mode)
    except Busy as e:
        print(json.dumps({"ok": False, "busy": True, "reason": str(e)}))
        return BUSY
    try:
        return locked(mode, root, argv, launcher, trust, taken)
    finally:
        unlock(fd, os.path.join(root, LOCK))


def locked(mode, root, argv, launcher, trust, taken):
    before = {"current": target(root, "current"), "previous": target(root, "previous")}
    out = {"before": before}
    if taken:
        out["lock_taken_over"] = taken
    try:
        if mode == "install" and running(root, before["current"], argv[2], argv[3]):
            # Another deploy of this release got here first (both decided before the lock):
            # nothing to switch, and nothing for this deploy to restart. New trusted keys are
            # still gated, as gate mode does.
            out["unchanged"] = True
            if "--trust-changed" in argv:
                gate(root, argv[2], launcher, what="the running release %s fails its selfcheck under the new "
                     "trusted keys", **trust)
        elif mode == "install":
            release, venv = argv[2], argv[3]
            clean_temporaries(root)
            out["unpacked"] = unpack(root, release, venv)
            try:
                gate(root, release, launcher, **trust)
            except Refused:
                if out["unpacked"]:  # refused: not kept as a release (it was never switched to)
                    shutil.rmtree(os.path.join(root, "releases", release), ignore_errors=True)
                raise
            out["speed"] = measure(root, release, launcher, **trust)
            old = before["current"]
            previous = old if old and old != release else before["previous"]
            switch(root, release, previous)
            out["removed"] = prune(root, int(option(argv, "--keep", "3")), [r for r in (release, previous) if r])
        elif mode == "gate":  # the trusted keys changed, the release did not: nothing to switch
            release = argv[2]
            if not os.path.isdir(os.path.join(root, "releases", release)):
                raise Refused("release %s is not on the device" % release)
            gate(root, release, launcher, what="the running release %s fails its selfcheck under the new "
                 "trusted keys", **trust)
        elif mode == "rollback":
            if not before["previous"] or not os.path.isdir(os.path.join(root, "releases", before["previous"])):
                raise Refused("no previous release to roll back to (current: %s)" % (before["current"] or "none"))
            gate(root, before["previous"], launcher, **trust)
            switch(root, before["previous"], before["current"])
        elif mode == "revert":
            relink(root, "previous", argv[3])
            relink(root, "current", argv[2])
        else:
            raise ValueError(mode)
    except Refused as e:
        out.update(ok=False, reason=str(e))
        print(json.dumps(out))
        return 1
    out.update(ok=True, current=target(root, "current"), previous=target(root, "previous"))
    if out["current"]:
        out["model"] = model_sha256(root, out["current"])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
