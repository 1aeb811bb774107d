"""edge_wheelhouse: deploy/wheelhouse.py's JSON, made inside Ansible's own process.

The deploy's wheelhouse step (roles/edge/tasks/preflight.yml). An action runs where Ansible
runs, the deploying machine (or, in pull mode, the device that runs ansible-pull): no module is
packed, sent and started for it, and no second Python either; the step is wheelhouse.py's
``wheelhouses()``, which ``python -m deploy.wheelhouse`` prints. A failure fails the task with
the line that command prints: ``error: wheelhouse: ...``.

    - name: Build the wheelhouse
      edge_wheelhouse:
        tarball: dist/bundle.tar.gz      # or requirements: FILE (its packages instead; bundle: null)
        cache: .cache/wheelhouse
        targets: [aarch64:3.11:2.36]
        chdir: "{{ playbook_dir }}/.."   # what relative paths are relative to (default: Ansible's cwd)
      run_once: true
      register: edge_wheelhouse          # .bundle, .wheelhouses[target]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ansible.plugins.action import ActionBase

# deploy/roles/edge/action_plugins/ (the role's own, which Ansible finds with the role, whatever
# its config) -> the folder that holds deploy/ and runtime/ (a checkout, or pull mode's
# published repository: deploy/publish.py copies both).
PROJECT = Path(__file__).resolve().parents[4]
ARGS = {"tarball", "requirements", "cache", "targets", "chdir"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True  # it changes nothing on a device: --check runs it as a deploy would

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        unknown = sorted(set(args) - ARGS)
        if unknown or "cache" not in args or ("tarball" in args) == ("requirements" in args):
            return {**result, "failed": True,
                    "msg": f"edge_wheelhouse takes cache, targets and one of tarball or requirements; got {sorted(args)}"}
        if str(PROJECT) not in sys.path:
            sys.path.insert(0, str(PROJECT))
        os.environ.setdefault("PIP_NO_INPUT", "1")  # this worker's own environment: it ends with the task
        from deploy import wheelhouse

        here = Path(args.get("chdir") or ".")
        path = lambda name: here / args[name] if args.get(name) else None  # noqa: E731 - absolute stays absolute
        try:
            out = wheelhouse.wheelhouses([str(t) for t in args.get("targets") or []], path("cache"),
                                         tarball=path("tarball"), requirements=path("requirements"))
        except wheelhouse.FAILURES as e:
            return {**result, "failed": True, "msg": f"error: wheelhouse: {e}"}
        return {**result, "changed": False, **out}
