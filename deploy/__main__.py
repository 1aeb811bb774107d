"""`make deploy`, `make rollback`, `make fleet-status`: Ansible's playbooks in deploy/, with the checks first.

    python -m deploy deploy   --inventory deploy/inventory.ini [--bundle dist/bundle.tar.gz] [ANSIBLE ARGS...]
    python -m deploy rollback --inventory deploy/inventory.ini [ANSIBLE ARGS...]
    python -m deploy status   --inventory deploy/inventory.ini [ANSIBLE ARGS...]

Arguments it does not know (--limit, --check, -e, -f, -v, ...) go to ansible-playbook as
they are. The table at the end is also written as JSON (--report, default
build/deploy/<command>.json). Exit codes: ansible-playbook's (0 every device done,
2 a device failed, was refused or was busy with another deploy (its row: "busy: another
deploy (pid N, since T)"), 4 a device unreachable, ...), or 2 when the inventory or
bundle is missing and 5 when ansible-playbook is not installed, each with one `error:` line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAYBOOKS = {"deploy": "deploy.yml", "rollback": "rollback.yml", "status": "status.yml"}


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0],
                                epilog="Other arguments go to ansible-playbook (e.g. --limit, --check, -e).")
    p.add_argument("command", choices=sorted(PLAYBOOKS))
    p.add_argument("--inventory", "-i", type=Path, required=True, help="an Ansible inventory (INI or YAML)")
    p.add_argument("--bundle", type=Path, default=Path("dist/bundle.tar.gz"), help="deploy: the bundle (default: %(default)s)")
    p.add_argument("--report", type=Path, help="the table as JSON (default: build/deploy/<command>.json)")
    a, rest = p.parse_known_args(argv)
    if not a.inventory.exists():
        example = HERE / "inventory.example.ini"
        return fail(f"inventory {a.inventory}: not found; copy {os.path.relpath(example)} to it and list your devices", 2)
    if a.command == "deploy" and not a.bundle.is_file():
        return fail(f"bundle {a.bundle}: not found; run `make bundle` first (make deploy does)", 2)
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    playbook_bin = str(playbook_bin) if playbook_bin.exists() else shutil.which("ansible-playbook")
    if not playbook_bin:
        return fail("ansible-playbook not found: the deploy needs the project's venv (make venv), which pins ansible-core", 5)
    report = a.report or Path("build") / "deploy" / f"{a.command}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    env = {**os.environ, "ANSIBLE_CONFIG": str(HERE / "ansible.cfg"), "EDGE_REPORT_JSON": str(report.resolve())}
    cmd = [playbook_bin, str(HERE / PLAYBOOKS[a.command]), "-i", str(a.inventory)]
    if a.command == "deploy":
        cmd += ["-e", f"edge_bundle={a.bundle.resolve()}"]
    try:
        return subprocess.run(cmd + rest, env=env).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
