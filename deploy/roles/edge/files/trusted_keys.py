"""The device's trusted-keys file, changed so that a refused deploy keeps the old one (stdlib only).

Ansible's `script` runs this on the device (with become when the file is root's, as under
/etc). FILE is edge_trusted_keys_file; the new content travels as base64 on the command line
(public keys only). Prints one JSON object; exit 0, or 1 with a one-line "reason".

    trusted_keys.py stage  FILE [BASE64]   # FILE.incoming = the new content, for the gate;
                                           # no content (trust no key): FILE moved aside to FILE.previous
    trusted_keys.py commit FILE [--keep-previous]  # FILE.incoming renamed over FILE (the old one
                                           # kept as FILE.previous until `forget`, for a revert)
    trusted_keys.py forget FILE            # FILE.previous removed
    trusted_keys.py revert FILE OLD_SHA256|-  # FILE back to the content it had (sha256), or absent
    ... [--lock EDGE_ROOT/.deploy.lock [--lock-timeout S]]

With --lock, each mode holds the device's deploy lock (the one files/release.py takes, an
exclusive flock) while it works, waiting up to S seconds (default 120); then it exits 3 with
"busy: another deploy (pid N, since T)" and has changed nothing. Run as root, it gives a lock
file it creates to the owner of its folder (edge_root's owner, who runs release.py).

The file is written as FILE.incoming (mode 0644, fsynced) and renamed over FILE (rename(2)
is atomic: a reader sees the old list or the new one, never a part). Its folder is made
0755 when missing, and refused when group or others may write it: the service user must not
be able to replace the keys. Moving FILE aside when the list becomes empty happens before the
gate because the runtime reads /etc/edge-model/trusted_keys by itself when it exists: the gate
must see what the device will trust.
"""

import base64
import errno
import fcntl
import hashlib
import json
import os
import stat
import sys
import time

BUSY = 3


class Refused(Exception):
    pass


class Busy(Exception):
    pass


def lock(path, timeout, what, poll=0.05):
    """The device's deploy lock, as files/release.py takes it (kept the same: both are sent alone)."""
    deadline = time.monotonic() + timeout
    seen = ""
    while True:  # the holder removes the file as it lets go: then take the new one
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        folder = os.stat(os.path.dirname(os.path.abspath(path)))
        if os.geteuid() == 0 and os.fstat(fd).st_uid != folder.st_uid:
            os.fchown(fd, folder.st_uid, folder.st_gid)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            seen = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or seen
            if time.monotonic() >= deadline:
                os.close(fd)
                try:
                    doc = json.loads(seen)
                    who = "pid %s, since %s" % (doc.get("pid", "?"), doc.get("since", "?"))
                except ValueError:
                    who = "pid ?, since ?"
                raise Busy("busy: another deploy (%s)" % who)
            time.sleep(poll)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since, "what": what}).encode() + b"\n", 0)
    return fd


def unlock(fd, path):
    os.unlink(path)  # removed while held: a file still there names a holder that died
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def sha256(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except (IOError, OSError):
        return None


def sync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path):
    if os.path.lexists(path):
        os.unlink(path)


def folder_for(path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
        os.chmod(folder, 0o755)
    mode = os.stat(folder).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Refused("%s is writable by %s (mode %o): the service user could replace the trusted keys; "
                      "make it 0755" % (folder, "others" if mode & stat.S_IWOTH else "its group",
                                        stat.S_IMODE(mode)))
    return folder


def stage(path, content):
    folder = folder_for(path)
    remove(path + ".incoming")  # what an interrupted deploy left
    remove(path + ".previous")
    if content is None:  # trust no key: the gate must not find the old file
        if os.path.lexists(path):
            os.rename(path, path + ".previous")
            sync_folder(folder)
        return None
    fd = os.open(path + ".incoming", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path + ".incoming"


def commit(path, keep_previous):
    incoming, previous = path + ".incoming", path + ".previous"
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.lexists(incoming):
        if os.path.lexists(path):
            remove(previous)
            os.link(path, previous)
        os.rename(incoming, path)
        sync_folder(folder)
    if not keep_previous:
        remove(previous)


def revert(path, old):
    """FILE as it was before `stage`: the content whose sha256 is `old`, or no file ("-")."""
    incoming, previous = path + ".incoming", path + ".previous"
    remove(incoming)
    if old == "-":
        remove(path)
        remove(previous)
        return
    if sha256(path) != old:
        if sha256(previous) != old:
            raise Refused("%s: cannot put back the trusted keys it had (sha256 %s): %s holds something else"
                          % (path, old[:12], previous))
        os.rename(previous, path)
    remove(previous)


def option(argv, name, default):
    return argv[argv.index(name) + 1] if name in argv[:-1] else default


def main(argv):
    mode, path = argv[0], argv[1]
    lock_path, timeout = option(argv, "--lock", ""), float(option(argv, "--lock-timeout", "120"))
    if "--lock" in argv:
        argv = argv[:argv.index("--lock")] + argv[argv.index("--lock") + 2:]
    if "--lock-timeout" in argv:
        argv = argv[:argv.index("--lock-timeout")] + argv[argv.index("--lock-timeout") + 2:]
    fd = None
    if lock_path:
        try:
            fd = lock(lock_path, timeout, "trusted keys " + mode)
        except Busy as e:
            print(json.dumps({"file": path, "ok": False, "busy": True, "reason": str(e)}))
            return BUSY
        except OSError as e:
            print(json.dumps({"file": path, "ok": False, "reason": "the deploy lock %s: %s" % (lock_path, e)}))
            return 1
    try:
        return run(mode, path, argv)
    finally:
        if fd is not None:
            unlock(fd, lock_path)


def run(mode, path, argv):
    out = {"file": path}
    try:
        if mode == "stage":
            content = base64.b64decode(argv[2]) if len(argv) > 2 and argv[2] else None
            out["staged"] = stage(path, content)
        elif mode == "commit":
            commit(path, "--keep-previous" in argv[2:])
        elif mode == "forget":
            remove(path + ".previous")
        elif mode == "revert":
            revert(path, argv[2])
        else:
            raise ValueError(mode)
        out["sha256"] = sha256(path)
    except (Refused, OSError) as e:
        out.update(ok=False, reason="trusted keys %s: %s" % (path, e))
        print(json.dumps(out))
        return 1
    out["ok"] = True
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
