"""Pull mode's repository: the playbook, the bundle and the devices' wheels, committed to a Git repository devices pull.

A device behind NAT that the deploying machine cannot reach runs the deploy itself: its
`edge-pull.timer` starts `edge-pull.service`, which runs ``ansible-pull`` on this
repository's `deploy/deploy.yml` against `localhost` (docs/deploy.md, "Pull mode"). This
command writes what that run needs, and nothing of the deploying machine's own (no
inventory, no key):

    deploy/                 the playbooks, the role (its wheelhouse action among it), the
                            table's callback, wheelhouse.py
    runtime/                what wheelhouse.py imports (runtime.manifest), as in this checkout
    dist/bundle.tar.gz      the bundle to run (signed, if the build signed it)
    .cache/wheelhouse/      the wheels for each --target (the bundle's, and ansible-core's for
                            pull mode's own venv), so the device's run stays offline

The repository (REPO: a folder, made bare on first use) gets one commit on branch
`--branch` (default main) when any of that changed, and none when nothing did.

    python -m deploy.publish --repo /srv/git/edge-pull.git --target aarch64:3.11:2.36 [--bundle dist/bundle.tar.gz]

Exit codes: 0 published (or already up to date), 2 bad arguments or a missing bundle,
3 the wheelhouse could not be built, 4 git failed; each with one `error:` line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
# The parts of deploy/ a device's run uses (not devicecheck/, the inventory or __main__).
DEPLOY_FILES = ("__init__.py", "ansible.cfg", "deploy.yml", "pull-requirements.txt", "rollback.yml", "status.yml",
                "wheelhouse.py")
DEPLOY_DIRS = ("plugins", "roles")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
IDENTITY = ("-c", "user.name=edge-publish", "-c", "user.email=edge-publish@localhost")


class PublishError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def git(*args: str, env: dict, cwd: Path | None = None, check: bool = True) -> str | None:
    """git's stdout; a failure is a PublishError, or None with check=False."""
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    if r.returncode != 0 and not check:
        return None
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or "(no output)").splitlines()[-1]
        raise PublishError(f"git {args[0]} failed: {last}", 4)
    return r.stdout


def wheelhouse(args: list[str], targets: list[str]) -> dict:
    """`python -m deploy.wheelhouse ARGS` for the targets, into the project's cache: its JSON."""
    r = subprocess.run([sys.executable, "-m", "deploy.wheelhouse", *args, "--cache", str(PROJECT / ".cache" / "wheelhouse"),
                        *(f"--target={t}" for t in targets)], cwd=PROJECT, capture_output=True, text=True)
    if r.returncode != 0:
        raise PublishError((r.stderr.strip().splitlines() or ["wheelhouse failed"])[-1].removeprefix("error: "), 3)
    return json.loads(r.stdout)


def tree(work: Path, bundle: Path, targets: list[str]) -> dict:
    """Write the repository's files into work/ (an empty folder); returns the wheelhouse's JSON."""
    (work / "deploy").mkdir()
    for name in DEPLOY_FILES:
        shutil.copy2(HERE / name, work / "deploy" / name)
    for name in DEPLOY_DIRS:
        shutil.copytree(HERE / name, work / "deploy" / name, ignore=IGNORE)
    shutil.copytree(PROJECT / "runtime", work / "runtime", ignore=IGNORE)
    (work / "dist").mkdir()
    shutil.copy2(bundle, work / "dist" / "bundle.tar.gz")
    info = wheelhouse(["--tarball", str(bundle)], targets)
    # The device's run builds the ansible-core wheelhouse for itself too (pull mode's venv).
    pull = wheelhouse(["--requirements", str(HERE / "pull-requirements.txt")], targets)
    for w in [*info["wheelhouses"].values(), *pull["wheelhouses"].values()]:
        # The complete folder, as the device's wheelhouse.build() reuses it (wheels.tar, the
        # lock, pip's wheel, .complete); the release script is made there, per bundle.
        src = Path(w["dir"])
        shutil.copytree(src, work / ".cache" / "wheelhouse" / src.name)
    (work / "README.md").write_text(
        "# Pull mode's repository (written by `python -m deploy.publish`; do not edit)\n\n"
        f"Bundle {info['bundle']['release']} (sha256 {info['bundle']['sha256']}), wheels for "
        f"{', '.join(info['wheelhouses']) or 'no target'}. Devices run `deploy/deploy.yml` from here "
        "with ansible-pull (edge-pull.service); see the project's docs/deploy.md, \"Pull mode\".\n")
    return info


def publish(repo: Path, bundle: Path, targets: list[str], branch: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="edge-publish-") as t:
        work = Path(t) / "work"
        work.mkdir()
        info = tree(work, bundle, targets)
        # A global git config of its own that trusts the repository (safe.directory: it may
        # belong to the user that serves it, and git before 2.41 takes that from no command line).
        (Path(t) / "gitconfig").write_text(f"[safe]\n\tdirectory = {repo.resolve()}\n")
        env = {**os.environ, "GIT_CONFIG_GLOBAL": str(Path(t) / "gitconfig")}
        if not (repo / "HEAD").exists():
            repo.mkdir(parents=True, exist_ok=True)
            git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(repo), env=env)
        git("init", "--quiet", f"--initial-branch={branch}", cwd=work, env=env)
        head = git("--git-dir", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}",
                   env=env, check=False)
        # The repository's objects borrowed (objects/info/alternates), not fetched: `git add` then
        # writes only what the repository has not got (a release's files, not the wheels it holds
        # already, tens of MB), nothing is packed to come here, and the push sends only the new.
        info_dir = work / ".git" / "objects" / "info"
        info_dir.mkdir(parents=True, exist_ok=True)
        (info_dir / "alternates").write_text(f"{(repo / 'objects').resolve()}\n")
        git("add", "--all", cwd=work, env=env)
        if head is not None:
            head = head.strip()
            git("reset", "--soft", head, cwd=work, env=env)
            if not git("status", "--porcelain", cwd=work, env=env).strip():
                return {**info, "commit": head, "changed": False}
        git(*IDENTITY, "commit", "--quiet", "-m", f"release {info['bundle']['release']}", cwd=work, env=env)
        git("push", "--quiet", str(repo.resolve()), f"HEAD:refs/heads/{branch}", cwd=work, env=env)
        return {**info, "commit": git("rev-parse", "HEAD", cwd=work, env=env).strip(), "changed": True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.publish", description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True, help="the Git repository devices pull (a bare one is made if missing)")
    p.add_argument("--bundle", type=Path, default=Path("dist/bundle.tar.gz"), help="the bundle (default: %(default)s)")
    p.add_argument("--target", action="append", default=[], required=True,
                   help="a device platform <arch>:<python X.Y>:<glibc X.Y>, e.g. aarch64:3.11:2.36 (repeatable)")
    p.add_argument("--branch", default="main", help="the branch devices check out (default: %(default)s)")
    a = p.parse_args(argv)
    try:
        if not a.bundle.is_file():
            raise PublishError(f"bundle {a.bundle}: not found; run `make bundle` first", 2)
        if a.repo.exists() and not (a.repo / "HEAD").exists() and any(a.repo.iterdir()):
            raise PublishError(f"repo {a.repo}: not a bare Git repository and not empty; give a new or a bare one", 2)
        if not shutil.which("git"):
            raise PublishError("git not found: install Git (Debian's git package)", 4)
        out = publish(a.repo, a.bundle.resolve(), a.target, a.branch)
    except PublishError as e:
        print(f"error: publish: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"error: publish: {e}", file=sys.stderr)
        return 2
    print(f"{'published' if out['changed'] else 'up to date'}: {a.repo} {a.branch} {out['commit'][:12]} "
          f"release {out['bundle']['release']} for {', '.join(out['wheelhouses'])}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_NO_INPUT", "1")
    sys.exit(main())
