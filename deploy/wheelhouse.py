"""The offline install's wheels: the bundle's requirements, per device platform and Python, with sha256 pins.

Run on the deploying machine (the playbook does, once per deploy, for the targets its
devices reported). For each target, ``pip download --only-binary=:all:`` fetches the
wheels of the bundle's requirements.txt for that platform and Python into a cache folder
(default .cache/wheelhouse), beside a ``requirements.lock`` that pins every wheel by name,
version and sha256, and pip's own wheel. The device installs with
``pip install --no-index --require-hashes -r requirements.lock``: it never reaches an
index, and a wheel that changed in transit or in the cache is refused.

A target is ``<arch>:<python major.minor>:<glibc major.minor>``, e.g. ``aarch64:3.11:2.36``
(Raspberry Pi OS bookworm 64-bit). The folder is keyed by the requirements' content and
the target, and reused once complete.

pip evaluates environment markers (``; python_version < "3.11"``) with the Python that
runs pip, not with ``--python-version``; so the requirements' own markers are evaluated
here for the target first, and pip is given plain pins. (Markers inside the packages'
metadata would still be pip's; onnxruntime's and numpy's have none that depend on the
Python version.)

    python -m deploy.wheelhouse [--tarball dist/bundle.tar.gz] --target aarch64:3.11:2.36 [--target ...]
        [--cache .cache/wheelhouse]
    # prints one JSON object: the bundle (sha256, release name, model sha256) and, per
    # target, the folder, the venv id, the wheels and pip's wheel
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from runtime.manifest import sha256_file

# pip itself, as a wheel: the device runs it straight from the wheel file
# (`python pip-….whl/pip install …`), so its venv needs no ensurepip (Debian's python3
# lacks it without the python3-venv package) and no pip from an index.
PIP = "pip==26.3"
ARCHES = ("aarch64", "x86_64")
TARGET = re.compile(r"^(aarch64|x86_64):(3)\.(\d+):(\d+)\.(\d+)$")


class WheelhouseError(Exception):
    """One line: what failed, for which target."""


def platforms(arch: str, glibc: tuple[int, int]) -> list[str]:
    """manylinux tags a device with this glibc accepts, newest first (pip takes them all)."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)] if major == 2 else []
    return tags + [f"manylinux2014_{arch}"] if minor >= 17 else tags


def resolve_markers(text: str, arch: str, python: tuple[int, int]) -> list[str]:
    """The requirement lines that apply to the target, markers evaluated for it and removed."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = default_environment()
    env.update(python_version=f"{python[0]}.{python[1]}", python_full_version=f"{python[0]}.{python[1]}.0",
               platform_machine=arch, sys_platform="linux", platform_system="Linux", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def wheel_name_version(filename: str) -> tuple[str, str]:
    from packaging.utils import parse_wheel_filename

    name, version, _, _ = parse_wheel_filename(filename)
    return str(name), str(version)


def build(requirements: str, target: str, cache: Path) -> dict:
    """The wheelhouse folder for one target (made once, then reused); returns what the playbook needs."""
    m = TARGET.match(target)
    if not m:
        raise WheelhouseError(f"target {target!r}: expected <arch>:<python X.Y>:<glibc X.Y> with arch one of "
                              f"{', '.join(ARCHES)}, e.g. aarch64:3.11:2.36")
    arch, python, glibc = m[1], (int(m[2]), int(m[3])), (int(m[4]), int(m[5]))
    pins = resolve_markers(requirements, arch, python)
    key = hashlib.sha256(("\n".join(pins) + "\n" + PIP).encode()).hexdigest()[:12]
    name = f"cp{python[0]}{python[1]}-{arch}-glibc{glibc[0]}.{glibc[1]}-{key}"
    folder = cache / name
    if not (folder / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache))
        try:
            (tmp / "requirements.in").write_text("\n".join(pins) + "\n")
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary=:all:", "--implementation", "cp", "--python-version", f"{python[0]}.{python[1]}",
                   "--dest", str(tmp)]
            for p in platforms(arch, glibc):
                cmd += ["--platform", p]
            r = subprocess.run([*cmd, "-r", str(tmp / "requirements.in"), PIP], capture_output=True, text=True)
            if r.returncode != 0:
                last = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")][-1:] or r.stderr.strip().splitlines()[-1:]
                raise WheelhouseError(f"{target}: pip download failed: {(last or ['(no output)'])[0]}")
            lock, pip_wheel = [], None
            for whl in sorted(tmp.glob("*.whl")):
                n, v = wheel_name_version(whl.name)
                if n == "pip":
                    pip_wheel = whl.name
                else:
                    lock.append(f"{n}=={v} --hash=sha256:{sha256_file(whl)}")
            if pip_wheel is None:
                raise WheelhouseError(f"{target}: pip download gave no pip wheel")
            (tmp / "requirements.lock").write_text(
                f"# {target}: the bundle's requirements for this device, every wheel pinned by sha256.\n"
                + "\n".join(lock) + "\n")
            (tmp / "pip.txt").write_text(f"{pip_wheel} {sha256_file(tmp / pip_wheel)}\n")
            pack(tmp, [*sorted(p.name for p in tmp.glob("*.whl")), "requirements.lock"])
            for whl in tmp.glob("*.whl"):  # they are in wheels.tar
                whl.unlink()
            (tmp / ".complete").touch()
            shutil.rmtree(folder, ignore_errors=True)
            tmp.replace(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    pip_wheel, pip_sha = (folder / "pip.txt").read_text().split()
    lock = (folder / "requirements.lock").read_bytes()
    with tarfile.open(folder / "wheels.tar") as tar:
        wheels = sorted(n for n in tar.getnames() if n.endswith(".whl") and n != pip_wheel)
    return {
        "dir": str(folder.resolve()),
        # The device's venv is named after this: the same wheels make the same venv.
        "id": f"cp{python[0]}{python[1]}-{arch}-{hashlib.sha256(lock).hexdigest()[:12]}",
        "wheels": wheels,
        "pip_wheel": pip_wheel,
        "pip_sha256": pip_sha,
        "tar": str((folder / "wheels.tar").resolve()),
        "bytes": (folder / "wheels.tar").stat().st_size,
    }


def pack(folder: Path, names: list[str]) -> None:
    """folder/wheels.tar: what the device gets, in one transfer (one Ansible task rather than
    one per wheel, which counts on an emulated or slow device). Uncompressed: wheels already
    are. Dated 0 and owned by 0, so the same wheels make the same bytes."""
    with tarfile.open(folder / "wheels.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(folder / name, arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with open(folder / name, "rb") as f:
                tar.addfile(info, f)


RELEASE_PY = Path(__file__).resolve().parent / "roles" / "edge" / "files" / "release.py"


def release_script(tarball: Path, digest: str, cache: Path) -> Path:
    """The device-side release script with this bundle inside: a zip application
    (python runs its __main__.py) holding release.py and the tarball as it is, stored, not
    re-encoded, so what `script` sends is the bundle's bytes plus a few KiB."""
    import zipfile

    source = RELEASE_PY.read_bytes()
    path = cache / "releases" / f"release-{digest[:12]}-{hashlib.sha256(source).hexdigest()[:8]}.pyz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr(zipfile.ZipInfo("__main__.py", (2026, 1, 1, 0, 0, 0)), source, zipfile.ZIP_DEFLATED)
            z.writestr(zipfile.ZipInfo("bundle.tar.gz", (2026, 1, 1, 0, 0, 0)), tarball.read_bytes(), zipfile.ZIP_STORED)
        tmp.replace(path)
    return path


def read_bundle(tarball: Path, cache: Path) -> tuple[str, dict]:
    """The bundle's requirements.txt, and what a deploy names and checks it by."""
    with tarfile.open(tarball) as tar:
        def read(name: str) -> bytes:
            member = tar.extractfile(f"bundle/{name}")
            if member is None:
                raise WheelhouseError(f"{tarball}: bundle/{name} is not a file")
            return member.read()

        requirements, manifest = read("requirements.txt").decode(), json.loads(read("manifest.json"))
    digest = sha256_file(tarball)
    return requirements, {
        "tarball": str(tarball.resolve()),
        "sha256": digest,
        "release": digest[:12],  # the release's folder name on the device
        "model_sha256": manifest["files"][manifest["model"]["file"]],  # what /healthz must report
        "script": str(release_script(tarball, digest, cache).resolve()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.wheelhouse", description=__doc__.splitlines()[0])
    p.add_argument("--tarball", type=Path, default=Path("dist/bundle.tar.gz"),
                   help="the bundle whose requirements.txt to fetch (default: dist/bundle.tar.gz)")
    p.add_argument("--target", action="append", default=[], help="<arch>:<python X.Y>:<glibc X.Y> (repeatable)")
    p.add_argument("--cache", type=Path, default=Path(".cache/wheelhouse"))
    a = p.parse_args(argv)
    try:
        text, bundle = read_bundle(a.tarball, a.cache)
        out = {"bundle": bundle, "wheelhouses": {t: build(text, t, a.cache) for t in dict.fromkeys(a.target)}}
    except (WheelhouseError, OSError, tarfile.TarError, KeyError, ValueError) as e:
        print(f"error: wheelhouse: {e}", file=sys.stderr)
        return 3
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_NO_INPUT", "1")
    sys.exit(main())
