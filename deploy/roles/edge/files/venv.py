"""The device side of an offline install: a venv from the wheels' tar the deploy copied, in one run (stdlib only).

Ansible's `script` sends this file and runs it with the device's Python (tasks/venv.yml),
after `copy` sent the wheelhouse's tar (the wheels, requirements.lock and pip's own wheel) to
ROOT/wheels/<id>/wheels.tar: one process for what was a module per step. In order:

1. the tar unpacked beside itself, and deleted;
2. pip's wheel checked against PIP_SHA256 (pip checks every other wheel against the lock);
3. ``PYTHON -m venv --clear --without-pip VENV`` (the device's Python, as the role names it:
   edge_python, which may be a wrapper; default: the one running this script);
4. ``pip install --no-index --require-hashes -r requirements.lock``, pip run from its wheel
   by the venv's Python (through the launcher), compiling no bytecode (--no-compile: most of
   the packages' files are never imported);
5. ``import IMPORTS`` in the venv, which leaves the bytecode of what it imports;
6. VENV/.edge-complete: the venv is complete, and later deploys reuse it.

ROOT/wheels/<id>/ is deleted at the end, whatever happened. Prints one JSON object; exit 0
when the venv is complete, 1 when a step failed ("reason": the step and its last error line;
"output": the last lines that step printed), 2 on bad usage. Nothing else is printed: Ansible
runs scripts on a terminal, where stdout and stderr are one stream, and the role reads the
reason from the first line.

    venv.py ROOT ID VENV PIP_WHEEL PIP_SHA256 IMPORTS [--python PYTHON] [--launcher WORDS]
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile


class Failed(Exception):
    """One line: the step that failed and why; output: the last lines it printed."""

    def __init__(self, reason, output=""):
        super().__init__(reason)
        self.output = output


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(step, cmd):
    """cmd; Failed naming the step with its last error line, and the last lines it printed."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    except OSError as e:  # the Python or the launcher named cannot be run
        raise Failed("%s: %s" % (step, e))
    if p.returncode != 0:
        lines = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        raise Failed("%s: %s" % (step, (errors or lines or ["exit %d" % p.returncode])[-1]), "\n".join(lines[-20:]))


def unpack(tar, wheels):
    try:
        with tarfile.open(tar) as t:
            if hasattr(tarfile, "data_filter"):  # Python 3.12, and the 3.10/3.11 security releases
                t.extractall(wheels, filter="data")
            else:
                for m in t.getmembers():
                    if not m.isfile() or os.path.isabs(m.name) or ".." in m.name.split("/"):
                        raise Failed("Copy the wheels this device needs: %s is not a plain file in the tar" % m.name)
                t.extractall(wheels)
    except (OSError, tarfile.TarError) as e:
        raise Failed("Copy the wheels this device needs: %s" % e)
    finally:
        if os.path.exists(tar):
            os.unlink(tar)


def install(root, wheel_id, venv, pip_wheel, pip_sha256, imports, python, launcher):
    wheels = os.path.join(root, "wheels", wheel_id)
    try:
        unpack(os.path.join(wheels, "wheels.tar"), wheels)
        pip = os.path.join(wheels, pip_wheel)
        got = sha256(pip) if os.path.isfile(pip) else "no file"
        if got != pip_sha256:
            raise Failed("%s | sha256 mismatch: expected %s, got %s" % (pip_wheel, pip_sha256, got))
        try:
            os.makedirs(os.path.dirname(venv), exist_ok=True)
        except OSError as e:
            raise Failed("Create the venv: %s" % e)
        run("Create the venv", [python, "-m", "venv", "--clear", "--without-pip", venv])
        python = os.path.join(venv, "bin", "python")
        run("Install the wheels, offline and hash-checked",
            launcher + [python, os.path.join(pip, "pip"), "install", "--quiet", "--disable-pip-version-check",
                        "--no-index", "--no-cache-dir", "--no-compile", "--find-links", wheels, "--require-hashes",
                        "-r", os.path.join(wheels, "requirements.lock")])
        run("Check that the venv imports its packages", launcher + [python, "-c", "import " + imports])
        try:
            with open(os.path.join(venv, ".edge-complete"), "w"):
                pass
        except OSError as e:
            raise Failed("Mark the venv complete: %s" % e)
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
        try:
            os.rmdir(os.path.join(root, "wheels"))  # only when no other install is using it
        except OSError:
            pass


def option(argv, name, default):
    """The value after --name, and argv without both."""
    if name not in argv[:-1]:
        return default, argv
    i = argv.index(name)
    return argv[i + 1], argv[:i] + argv[i + 2:]


def main(argv):
    python, argv = option(argv, "--python", sys.executable)
    launcher, argv = option(argv, "--launcher", "")
    if len(argv) != 6:
        print(json.dumps({"ok": False, "reason": "usage: " + __doc__.strip().splitlines()[-1].strip()}))
        return 2
    try:
        install(*argv, python=python, launcher=launcher.split())
    except Failed as e:
        print(json.dumps({"ok": False, "reason": str(e), "output": e.output}))
        return 1
    print(json.dumps({"ok": True, "venv": argv[2]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
