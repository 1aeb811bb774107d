"""An emulated 64-bit Raspberry Pi's Python on x86-64, for deploy tests and trial deploys.

No binfmt_misc (registering a handler would change the shared kernel for every process), so
arm64 programs run through ``qemu-aarch64-static`` explicitly: the host's ``python3`` is a
wrapper script, and a venv made with it has a ``bin/python`` that again runs only through the
same QEMU command, the launcher (the inventory's ``edge_python_launcher``; empty on a real Pi,
so both paths are the same deploy code). QEMU, the arm64 userland and the Pi-style
/proc/cpuinfo come from picheck. ROOT/proc/cpuinfo is shared by everything using that
cache: the last device made there is the one every emulated host reports.

The same goes for the ssh-keygen that checks a signed bundle (runtime/trust.py): an emulated
runtime that execs ``ssh-keygen`` gets the host's x86 one, since QEMU user mode does not
redirect execve. So DIR/bin/ssh-keygen runs the userland's arm64 ssh-keygen through the same
QEMU command, and every runtime process of such a host needs ``EDGE_SSH_KEYGEN`` set to it
in its environment (the ``environment`` returned); it is printed as the inventory's
``edge_ssh_keygen``, which the deploy passes on to its gate, rollback, fleet-status and the
service. A real Pi needs none: its ssh-keygen is on its PATH.

    python -m deploy.devicecheck.emulated_pi --dir DIR [--cache .cache/pi] [--device "Raspberry Pi 4"]

prints the inventory variables for such a host on one line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .picheck import DEVICES, PiCheckError, cpuinfo, ensure_qemu, ensure_root, ssh_keygen_wrapper


def make_device(folder: Path, cache: Path = Path(".cache/pi"), device: str = "Raspberry Pi 4") -> dict:
    """folder/bin/python3 that runs arm64 Python 3.11 as `device`, and folder/bin/ssh-keygen its
    arm64 ssh-keygen; returns python, launcher, device, ssh_keygen, and environment: what every
    runtime process of the host needs in its environment (EDGE_SSH_KEYGEN)."""
    if device not in DEVICES:
        raise PiCheckError(f"unknown device {device!r} (known: {', '.join(DEVICES)})", 3)
    spec = DEVICES[device]
    cache, folder = Path(cache).resolve(), Path(folder).resolve()
    if shlex.quote(str(cache)) != str(cache):  # the deploy splits the launcher on whitespace
        raise PiCheckError(f"{cache}: the emulated Pi's cache path must not contain spaces or shell characters", 3)
    cache.mkdir(parents=True, exist_ok=True)
    qemu = ensure_qemu()
    root = ensure_root(cache)
    launcher = shlex.join([qemu, "-cpu", spec["qemu_cpu"], "-L", str(root)])
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(cpuinfo(spec, os.cpu_count() or 1))  # see the module docstring
    python = folder / "bin" / "python3"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f"#!/bin/sh\n# {device} (emulated arm64; made by deploy/devicecheck/emulated_pi.py)\n"
                      f'exec {launcher} {shlex.quote(str(root / "usr" / "bin" / "python3.11"))} "$@"\n')
    python.chmod(0o755)
    keygen = ssh_keygen_wrapper(folder / "bin" / "ssh-keygen", launcher, root)
    return {"python": str(python), "launcher": launcher, "device": device, "ssh_keygen": str(keygen),
            "environment": {"EDGE_SSH_KEYGEN": str(keygen)}}


def ini_value(text: str) -> str:
    """A value for an Ansible INI host line (shlex-split there): double-quoted when needed."""
    if text and shlex.quote(text) == text:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.devicecheck.emulated_pi", description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True, help="folder for the host's bin/python3 wrapper")
    p.add_argument("--cache", type=Path, default=Path(".cache/pi"), help="QEMU userland cache (default: .cache/pi)")
    p.add_argument("--device", default="Raspberry Pi 4", help=f"one of: {', '.join(DEVICES)} (default: Raspberry Pi 4)")
    a = p.parse_args(argv)
    try:
        d = make_device(a.dir, a.cache, a.device)
    except PiCheckError as e:
        print(f"error: emulated-pi: {e.message}", file=sys.stderr)
        return 3
    except OSError as e:
        print(f"error: emulated-pi: {f'{e.filename}: {e.strerror}' if e.filename else e}", file=sys.stderr)
        return 3
    print(f"ansible_python_interpreter={ini_value(d['python'])} edge_python_launcher={ini_value(d['launcher'])} "
          f"edge_ssh_keygen={ini_value(d['ssh_keygen'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
