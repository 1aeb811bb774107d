"""The offline install's wheels: the bundle's requirements, per device platform and Python, with sha256 pins.

Run on the deploying machine (the playbook does, once per deploy, for the targets its
devices reported). For each target, ``pip download --only-binary=:all:`` fetches the
wheels of the bundle's requirements.txt for that platform and Python into a cache folder
(default .cache/wheelhouse), beside a ``requirements.lock`` that pins every wheel by name,
version and sha256, and pip's own wheel. The device installs with
``pip install --no-index --require-hashes -r requirements.lock``: it never reaches an
index, and a wheel that changed in transit or in the cache is refused.

``install()`` is the one way this project installs a target's requirements on this
machine too, the way the device does (offline, hash-checked, with the wheelhouse's own pip
wheel): ``make runtime-check`` into an x86_64 venv per Python found, ``make pi-check`` into
an aarch64 site folder for the emulated Python (``pip --target`` with the target's tags,
run by this Python: an emulated one cannot run pip quickly).

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
    python -m deploy.wheelhouse --requirements FILE --target ...   # FILE's packages instead ("bundle": null)
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


def _packaging():
    """packaging's markers, requirements and utils: the package, else pip's vendored copy (a
    plain Python such as `make runtime-check`'s $(PYTHON) may have pip but not packaging)."""
    try:
        from packaging import markers, requirements, utils
    except ImportError:
        try:
            from pip._vendor.packaging import markers, requirements, utils
        except ImportError:
            raise WheelhouseError(f"{sys.executable} has neither packaging nor pip; use the project's venv") from None
    return markers, requirements, utils


def resolve_markers(text: str, arch: str, python: tuple[int, int]) -> list[str]:
    """The requirement lines that apply to the target, markers evaluated for it and removed."""
    markers, requirements, _ = _packaging()
    default_environment, Requirement = markers.default_environment, requirements.Requirement

    env = default_environment()
    env.update(python_version=f"{python[0]}.{python[1]}", python_full_version=f"{python[0]}.{python[1]}.0",
               platform_machine=arch, sys_platform="linux", platform_system="Linux", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except requirements.InvalidRequirement as e:
            raise WheelhouseError(f"requirement {line!r}: {e}") from None
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def wheel_name_version(filename: str) -> tuple[str, str]:
    name, version, _, _ = _packaging()[2].parse_wheel_filename(filename)
    return str(name), str(version)


def parse_target(target: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """``aarch64:3.11:2.36`` -> ("aarch64", (3, 11), (2, 36)); WheelhouseError otherwise."""
    m = TARGET.match(target)
    if not m:
        raise WheelhouseError(f"target {target!r}: expected <arch>:<python X.Y>:<glibc X.Y> with arch one of "
                              f"{', '.join(ARCHES)}, e.g. aarch64:3.11:2.36")
    return m[1], (int(m[2]), int(m[3])), (int(m[4]), int(m[5]))


def build(requirements: str, target: str, cache: Path) -> dict:
    """The wheelhouse folder for one target (made once, then reused); returns what the playbook needs."""
    arch, python, glibc = parse_target(target)
    cache = Path(cache)
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


def pip_failure(stderr: str) -> str:
    """pip's reason in one line: its ERROR line, and for a hash mismatch the packages named."""
    lines = stderr.splitlines()
    errors = [ln[len("ERROR: "):] for ln in lines if ln.startswith("ERROR: ")]
    if any("DO NOT MATCH THE HASHES" in e for e in errors):
        named = [m[1] for ln in lines if (m := re.match(r"^\s+(\S+==\S+) from ", ln))]
        return f"THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE: {', '.join(named) or '?'}"
    return (errors[-1:] or [ln.strip() for ln in lines if ln.strip()][-1:] or ["(no output)"])[0]


def install(requirements: str, target: str, cache: Path, *, into: str | Path | None = None,
            target_dir: str | Path | None = None) -> dict:
    """Install ``requirements`` for ``target`` from its wheelhouse (``build``, made or reused
    under ``cache``) the way the device does: offline (``--no-index``, the wheelhouse's
    wheels only), every wheel checked against requirements.lock's sha256
    (``--require-hashes``), by the wheelhouse's own pip wheel, itself checked against pip.txt.
    pip runs ``--isolated``: no PIP_* variable or pip.conf of this machine adds an index or
    a folder of wheels.

    Exactly one destination:
      ``into``: the ``bin/python`` of a venv of the target's Python, which runs pip (as on
        the device). Installs every time: whoever made the venv knows whether it is current.
      ``target_dir``: a folder for ``pip install --target``, run by this Python with the
        target's platform, Python and implementation (for an interpreter that cannot run pip
        here, e.g. an emulated arm64 one; put the folder on its PYTHONPATH). Made under a
        temporary name and renamed, with ``.complete`` holding the wheelhouse id; reused when
        that id matches, so a killed run is redone and a changed lock reinstalls.

    Returns ``build``'s dict plus ``installed`` (the destination) and ``reused``. Raises
    WheelhouseError (one line) when pip refuses, e.g. a wheel whose sha256 is not the lock's."""
    if (into is None) == (target_dir is None):
        raise ValueError("install: give exactly one of into= and target_dir=")
    arch, python, glibc = parse_target(target)
    cache = Path(cache)
    house = build(requirements, target, cache)
    dest = Path(target_dir) if target_dir is not None else None
    if dest is not None:
        marker = dest / ".complete"
        if marker.is_file() and marker.read_text().strip() == house["id"]:
            return {**house, "installed": os.path.abspath(dest), "reused": True}
    work = Path(tempfile.mkdtemp(prefix=".install.", dir=cache))
    site = None
    try:
        with tarfile.open(house["tar"]) as tar:
            tar.extractall(work, filter="data")
        pip_wheel = work / house["pip_wheel"]
        got = sha256_file(pip_wheel)
        if got != house["pip_sha256"]:
            raise WheelhouseError(f"{target}: {house['pip_wheel']}: sha256 mismatch: expected "
                                  f"{house['pip_sha256']}, got {got}")
        args = ["install", "--isolated", "--quiet", "--disable-pip-version-check", "--no-index", "--no-cache-dir",
                "--find-links", str(work), "--require-hashes", "-r", str(work / "requirements.lock")]
        if dest is None:
            cmd = [str(into), str(pip_wheel / "pip"), *args]
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            site = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            site.chmod(0o755)
            cmd = [sys.executable, str(pip_wheel / "pip"), *args, "--target", str(site), "--no-compile",
                   "--only-binary=:all:", "--implementation", "cp", "--python-version", f"{python[0]}.{python[1]}"]
            for plat in platforms(arch, glibc):
                cmd += ["--platform", plat]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise WheelhouseError(f"{target}: offline install refused: {pip_failure(r.stderr)}")
        if site is not None:
            (site / ".complete").write_text(house["id"] + "\n")
            shutil.rmtree(dest, ignore_errors=True)
            site.replace(dest)
            site = None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if site is not None:
            shutil.rmtree(site, ignore_errors=True)
    return {**house, "installed": os.path.abspath(dest if dest is not None else into), "reused": False}


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


def bundle_files(tarball: Path, *names: str) -> list[bytes]:
    """The bytes of bundle/<name> for each name, from the bundle tarball."""
    try:
        tar = tarfile.open(tarball)
    except tarfile.TarError as e:
        raise WheelhouseError(f"{tarball}: not a readable tarball ({str(e).splitlines()[0].rstrip(':')})") from None
    with tar:
        out = []
        for name in names:
            try:
                member = tar.extractfile(f"bundle/{name}")
            except KeyError:
                raise WheelhouseError(f"{tarball}: no bundle/{name} in it") from None
            if member is None:
                raise WheelhouseError(f"{tarball}: bundle/{name} is not a file")
            out.append(member.read())
        return out


def bundle_requirements(tarball: Path) -> str:
    """The bundle's own requirements.txt (what a device installs), from its tarball."""
    [text] = bundle_files(tarball, "requirements.txt")
    try:
        return text.decode()
    except UnicodeDecodeError:
        raise WheelhouseError(f"{tarball}: bundle/requirements.txt is not UTF-8 text") from None


def read_bundle(tarball: Path, cache: Path) -> tuple[str, dict]:
    """The bundle's requirements.txt, and what a deploy names and checks it by."""
    requirements = bundle_requirements(tarball)
    manifest = json.loads(bundle_files(tarball, "manifest.json")[0])
    digest = sha256_file(tarball)
    return requirements, {
        "tarball": str(tarball.resolve()),
        "sha256": digest,
        "release": digest[:12],  # the release's folder name on the device
        "model_sha256": manifest["files"][manifest["model"]["file"]],  # what /healthz must report
        "script": str(release_script(tarball, digest, cache).resolve()),
    }


# What wheelhouses() raises for a bundle, requirements file, target or pip run it cannot use.
FAILURES = (WheelhouseError, OSError, tarfile.TarError, KeyError, ValueError)


def wheelhouses(targets: list[str], cache: Path, *, tarball: Path | None = None, requirements: Path | None = None) -> dict:
    """What main prints: the bundle's (tarball) or the requirements file's wheelhouse for each
    target, and the bundle's names and checks (None with requirements). Raises FAILURES."""
    if requirements is not None:
        text, bundle = Path(requirements).read_text(), None
    else:
        text, bundle = read_bundle(Path(tarball), Path(cache))
    return {"bundle": bundle, "wheelhouses": {t: build(text, t, Path(cache)) for t in dict.fromkeys(targets)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.wheelhouse", description=__doc__.splitlines()[0])
    p.add_argument("--tarball", type=Path, default=Path("dist/bundle.tar.gz"),
                   help="the bundle whose requirements.txt to fetch (default: dist/bundle.tar.gz)")
    p.add_argument("--target", action="append", default=[], help="<arch>:<python X.Y>:<glibc X.Y> (repeatable)")
    p.add_argument("--cache", type=Path, default=Path(".cache/wheelhouse"))
    p.add_argument("--requirements", type=Path,
                   help="fetch this requirements file's packages instead of the bundle's (the bundle is then not read), "
                        "e.g. ansible-core for a device in pull mode")
    a = p.parse_args(argv)
    try:
        out = wheelhouses(a.target, a.cache, tarball=a.tarball, requirements=a.requirements)
    except FAILURES as e:
        print(f"error: wheelhouse: {e}", file=sys.stderr)
        return 3
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_NO_INPUT", "1")
    sys.exit(main())
