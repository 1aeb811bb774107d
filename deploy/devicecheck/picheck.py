"""`make pi-check`: run the bundle as a 64-bit Raspberry Pi 4 and 5 would, under QEMU.

On this x86-64 machine: an arm64 Python 3.11 userland (Debian bookworm's arm64 packages,
downloaded with a private APT config and unpacked, not installed), the bundle's own
requirements.txt installed from its aarch64 wheelhouse (deploy/wheelhouse.py, target
aarch64:3.11:2.36: offline and hash-checked, as a device installs it) into a site folder
on the emulated Python's PYTHONPATH, and ``qemu-aarch64-static -cpu cortex-a72``
(Pi 4) then ``-cpu cortex-a76`` (Pi 5). Under each it unpacks the bundle, runs
``deploy/devicecheck/pi_smoke.py`` (selfcheck, predict, a short stream) and compares the answers with
the same smoke run done natively here, within the manifest's tolerances. Any bundle: the
tutorial's gets fixed celsius values, any other signature its golden inputs (every output
value, flattened, within the golden atol/rtol; a classification's labels equal too).

Setup goes under a cache folder (default .cache/pi: root/, wheelhouse/, site-<id>/) and is
reused. QEMU 7.2 passes the host's x86 /proc/cpuinfo through, and onnxruntime's CPU
detection then crashes; ``-L ROOT`` redirects the guest's open of /proc/cpuinfo to
ROOT/proc/cpuinfo, so a Pi-style one is written there for each CPU model. What this cannot show: QEMU accepts some instructions a
real Pi 4 rejects (onnxruntime 1.21.0's SIGILL on real Pi 4s passed under emulation), and
emulated timings are not a Pi's.

    python -m deploy.devicecheck.picheck --tarball dist/bundle.tar.gz [--cache .cache/pi] [--out build/pi-check]

Exit codes: 0 both devices gave x86's answers and passed the selfcheck; 1 a check did not
hold (or an emulated run failed or timed out); 3 setup failed (tarball missing or unreadable,
QEMU, the arm64 userland, the wheelhouse). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from deploy import wheelhouse

HERE = Path(__file__).resolve().parent
SMOKE = HERE / "pi_smoke.py"
PACKAGES = ("python3.11", "libstdc++6")  # onnxruntime needs libstdc++; python3.11 brings the rest
TARGET = "aarch64:3.11:2.36"  # the wheelhouse target: Debian bookworm's (and Raspberry Pi OS's) Python and glibc

# The devices: QEMU CPU model and what their /proc/cpuinfo says (Raspberry Pi OS, 64-bit).
DEVICES = {
    "Raspberry Pi 4": {
        "qemu_cpu": "cortex-a72", "part": "0xd08", "variant": "0x0", "revision": "3",
        "features": "fp asimd evtstrm crc32 cpuid",
        "model": "Raspberry Pi 4 Model B Rev 1.4",
    },
    "Raspberry Pi 5": {
        "qemu_cpu": "cortex-a76", "part": "0xd0b", "variant": "0x4", "revision": "1",
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "model": "Raspberry Pi 5 Model B Rev 1.0",
    },
}


class PiCheckError(Exception):
    """Setup failed or a check did not hold; the message is one line."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message, self.code = message, code


def say(msg: str) -> None:
    print(f"pi-check: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("text", True)
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode != 0:
        err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")
        tail = err.strip().splitlines()[-1:] or ["(no output)"]
        raise PiCheckError(f"{what} failed ({' '.join(cmd[:3])} ...): {tail[0]}", 3)
    return r


def cpuinfo(device: dict, cores: int) -> str:
    """A Pi-style /proc/cpuinfo with one entry per host core."""
    entry = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n"
    )
    text = "".join(entry.format(n=n, **device) for n in range(cores))
    return text + f"Hardware\t: BCM2835\nModel\t\t: {device['model']}\n"


def ensure_qemu() -> str:
    qemu = shutil.which("qemu-aarch64-static")
    if qemu:
        return qemu
    if os.geteuid() != 0:
        raise PiCheckError("qemu-aarch64-static not found; install Debian's qemu-user-static (needs root)", 3)
    say("installing qemu-user-static (Debian package) ...")
    run(["apt-get", "update", "-qq"], "apt-get update")
    run(["apt-get", "install", "-y", "-qq", "qemu-user-static"], "apt-get install qemu-user-static",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    qemu = shutil.which("qemu-aarch64-static")
    if not qemu:
        raise PiCheckError("qemu-user-static installed but qemu-aarch64-static is not on PATH", 3)
    return qemu


def debian_mirrors() -> tuple[str, str]:
    """The Debian and Debian-security mirrors the host's own APT sources use."""
    text = ""
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and not p.name.endswith(".disabled-by-farm"):
            text += p.read_text(errors="replace") + "\n"
    uris = re.findall(r"(?:URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M)
    main = next((u for u in uris if "security" not in u), "http://deb.debian.org/debian")
    security = next((u for u in uris if "security" in u), "http://deb.debian.org/debian-security")
    return main.rstrip("/"), security.rstrip("/")


def ensure_root(cache: Path) -> Path:
    """An unpacked arm64 Debian bookworm userland with python3.11, under cache/root."""
    root = cache / "root"
    if (root / "usr" / "bin" / "python3.11").exists():
        return root
    say("downloading Debian bookworm's arm64 python3.11 (private APT config) ...")
    apt = cache / "apt"
    for d in ("lists/partial", "cache/archives/partial", "etc/parts"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    main, security = debian_mirrors()
    key = "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
    (apt / "etc" / "sources.list").write_text(
        f"deb [arch=arm64 {key}] {main} bookworm main\n"
        f"deb [arch=arm64 {key}] {main} bookworm-updates main\n"
        f"deb [arch=arm64 {key}] {security} bookworm-security main\n"
    )
    conf = apt / "apt.conf"
    conf.write_text(
        'APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\n'
        f'Dir::State "{apt}";\nDir::State::Lists "{apt}/lists";\nDir::State::status "{apt}/status";\n'
        f'Dir::Cache "{apt}/cache";\nDir::Etc::SourceList "{apt}/etc/sources.list";\n'
        f'Dir::Etc::SourceParts "{apt}/etc/parts";\nDir::Etc::Preferences "{apt}/etc/preferences";\n'
        f'Dir::Etc::PreferencesParts "{apt}/etc/parts";\n'
    )
    env = {**os.environ, "APT_CONFIG": str(conf)}
    run(["apt-get", "update", "-qq"], "apt-get update (arm64)", env=env)
    run(["apt-get", "-qq", "-y", "--download-only", "--no-install-recommends", "install", *PACKAGES],
        "apt-get download (arm64)", env=env)
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise PiCheckError("no arm64 packages were downloaded", 3)
    tmp = Path(tempfile.mkdtemp(prefix="root.", dir=cache))
    for d in ("bin", "sbin", "lib"):  # bookworm's merged /usr: keep these as symlinks
        (tmp / "usr" / d).mkdir(parents=True, exist_ok=True)
        (tmp / d).symlink_to(f"usr/{d}")
    for deb in debs:
        data = run(["dpkg-deb", "--fsys-tarfile", str(deb)], f"dpkg-deb {deb.name}", text=False).stdout
        r = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(tmp)], input=data, capture_output=True)
        if r.returncode != 0:
            raise PiCheckError(f"unpacking {deb.name} failed: {r.stderr.decode().strip()[:200]}", 3)
    (tmp / "proc").mkdir(exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    tmp.replace(root)
    say(f"arm64 userland ready: {len(debs)} packages in {root}")
    return root


def ensure_site(cache: Path, requirements: str) -> Path:
    """The bundle's requirements for the emulated Pi, installed the one way (deploy/wheelhouse.py:
    the aarch64 wheelhouse, offline, hash-checked) into a site folder for its PYTHONPATH,
    ``cache/site-<wheelhouse id>`` (the id is the lock's sha256; reused once complete)."""
    houses = cache / "wheelhouse"
    try:
        house = wheelhouse.build(requirements, TARGET, houses)
        site = cache / f"site-{house['id']}"
        if not (site / ".complete").is_file():
            say(f"installing the {TARGET} wheelhouse ({len(house['wheels'])} wheels) into {site.name} ...")
        return Path(wheelhouse.install(requirements, TARGET, houses, target_dir=site)["installed"])
    except wheelhouse.WheelhouseError as e:
        raise PiCheckError(str(e), 3) from None


def smoke(python: list[str], bundle: Path, env: dict, timeout: float) -> tuple[dict, float]:
    t = time.perf_counter()
    r = subprocess.run([*python, str(SMOKE), str(bundle)], cwd=bundle, capture_output=True, text=True,
                       env=env, timeout=timeout)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise PiCheckError(f"smoke run failed (exit {r.returncode}): {tail[0]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), wall


def compare(guest: dict, host: dict, atol: float, rtol: float) -> tuple[float, list[str]]:
    """Max |guest - host| over predict outputs; and the problems found (empty when all hold)."""
    problems = []
    if not guest["selfcheck"]["passed"]:
        bad = [c for c in guest["selfcheck"]["checks"] or [] if not c["ok"]]
        problems.append("selfcheck failed: " + (bad[0]["detail"] if bad else guest["selfcheck"]["stderr"].strip()))
    if guest["predict"]["exit"] != 0 or not guest["predict"]["output"]:
        problems.append(f"predict exited {guest['predict']['exit']}: {guest['predict']['stderr'].strip()}")
        return float("inf"), problems
    go, ho = guest["predict"]["output"], host["predict"]["output"]
    if "fahrenheit" in ho:  # the tutorial's answers
        g, h = go.get("fahrenheit") or [], ho["fahrenheit"]
    else:  # any signature: every output value of every golden example, flattened
        g, h = flatten(go.get("outputs")), flatten(ho["outputs"])
    if len(g) != len(h):
        problems.append(f"predict gave {len(g)} values, x86 {len(h)}")
        return float("inf"), problems
    diffs = [abs(a - b) for a, b in zip(g, h)]
    worst = max(diffs, default=0.0)
    for a, b, d in zip(g, h, diffs):
        if not d <= atol + rtol * abs(b):
            problems.append(f"predict differs from x86: {a!r} vs {b!r} (allowed {atol:g} + {rtol:g} * |x86|)")
            break
    if "labels" in ho:  # a classification: the same label for every example too
        gl, hl = go.get("labels") or [], ho["labels"]
        differ = [i for i, (a, b) in enumerate(zip(gl, hl)) if a != b]
        if len(gl) != len(hl) or differ:
            i = differ[0] if differ else min(len(gl), len(hl))
            problems.append(f"predict labels differ from x86: {len(differ)} of {len(hl)}, first at "
                            f"input[{i}]: {gl[i] if i < len(gl) else None!r} vs {hl[i] if i < len(hl) else None!r}")
    gs, hs = guest["stream"]["lines"], host["stream"]["lines"]
    if len(gs) != len(hs) or guest["stream"]["exit"] != host["stream"]["exit"]:
        problems.append(f"stream gave {len(gs)} lines (exit {guest['stream']['exit']}), x86 {len(hs)} "
                        f"(exit {host['stream']['exit']})")
    else:
        for a, b in zip(gs, hs):
            if a.startswith("error:") or b.startswith("error:"):
                if a != b:
                    problems.append(f"stream error lines differ: {a!r} vs {b!r}")
            elif not line_close(a, b, atol, rtol):
                problems.append(f"stream differs from x86: {a} vs {b}")
    return worst, problems


def flatten(x) -> list[float]:
    """The numbers of a nested list, in order."""
    if not isinstance(x, list):
        return [] if x is None else [x]
    return [v for item in x for v in flatten(item)]


def line_close(a: str, b: str, atol: float, rtol: float) -> bool:
    """Two answer lines of `stream` agree: the same cells, numbers within tolerance, any other
    cell (a classification's label) equal."""
    ca, cb = a.split(","), b.split(",")
    if len(ca) != len(cb):
        return False
    for x, y in zip(ca, cb):
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            if x != y:
                return False
            continue
        if not abs(fx - fy) <= atol + rtol * abs(fy):
            return False
    return True


def batch_timing(t: dict) -> tuple[str, float]:
    """(the big batch's size as the table names it, its time in ms): 100k for the tutorial, 1k otherwise."""
    key = next((k for k in t if k.startswith("batch_") and k.endswith("_ms")), "batch_100k_ms")
    return key[len("batch_"):-len("_ms")], t.get(key, float("nan"))


def table(rows: list[dict]) -> str:
    size = batch_timing(rows[0]["timings"])[0] if rows else "100k"
    head = ("| device (emulated) | QEMU CPU | CPU part seen | onnxruntime | selfcheck | max diff vs x86 | "
            f"import (s, emulated) | predict batch 1 (us, emulated) | batch {size} (ms, emulated) | smoke wall (s) | result |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        t = r["timings"]
        lines.append(
            f"| {r['device']} | {r['qemu_cpu']} | {r['cpu_part']} | {r['onnxruntime']} | {'passed' if r['selfcheck'] else 'FAILED'} | "
            f"{r['max_diff']:.3g} | {t['start_to_imported_s']:.2f} | {t['predict_batch1_us']:.0f} | "
            f"{batch_timing(t)[1]:.1f} | {r['wall_s']:.1f} | {'ok' if not r['problems'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.devicecheck.picheck", description=__doc__.splitlines()[0])
    p.add_argument("--tarball", type=Path, default=Path("dist/bundle.tar.gz"))
    p.add_argument("--cache", type=Path, default=Path(".cache/pi"))
    p.add_argument("--out", type=Path, default=Path("build/pi-check"))
    p.add_argument("--timeout", type=float, default=300, help="seconds per emulated run (default: 300)")
    a = p.parse_args(argv)
    try:
        if not a.tarball.is_file():
            raise PiCheckError(f"{a.tarball}: not found (run `make bundle` first)", 3)
        try:
            requirements = wheelhouse.bundle_requirements(a.tarball)  # read first: a bad tarball fails before setup
        except wheelhouse.WheelhouseError as e:
            raise PiCheckError(str(e), 3) from None
        cache = a.cache.resolve()
        cache.mkdir(parents=True, exist_ok=True)
        qemu = ensure_qemu()
        root = ensure_root(cache)
        work = Path(tempfile.mkdtemp(prefix="run.", dir=cache))
        try:
            with tarfile.open(a.tarball) as tar:
                tar.extractall(work, filter="data")
            bundle = work / "bundle"
            site = ensure_site(cache, requirements)
            manifest = json.loads((bundle / "manifest.json").read_text())
            atol, rtol = manifest["golden"]["atol"], manifest["golden"]["rtol"]
            host_env = {**os.environ, "PYTHONPATH": ""}
            host, host_wall = smoke([sys.executable], bundle, host_env, a.timeout)
            rows = []
            for name, device in DEVICES.items():
                (root / "proc" / "cpuinfo").write_text(cpuinfo(device, os.cpu_count() or 1))
                say(f"{name}: qemu-aarch64-static -cpu {device['qemu_cpu']} ...")
                env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1",
                       "LANG": "C.UTF-8"}
                guest, wall = smoke([qemu, "-cpu", device["qemu_cpu"], "-L", str(root),
                                     str(root / "usr" / "bin" / "python3.11")], bundle, env, a.timeout)
                if guest["machine"] != "aarch64":
                    raise PiCheckError(f"{name}: the smoke run saw machine {guest['machine']!r}, expected aarch64")
                worst, problems = compare(guest, host, atol, rtol)
                rows.append({"device": name, "qemu_cpu": device["qemu_cpu"], "cpu_part": guest["cpu_part"],
                             "onnxruntime": guest["onnxruntime"], "numpy": guest["numpy"],
                             "python": guest["python"], "selfcheck": bool(guest["selfcheck"]["passed"]),
                             "max_diff": worst, "problems": problems, "timings": guest["timings"],
                             "wall_s": wall})
        finally:
            shutil.rmtree(work, ignore_errors=True)
        md = (f"# pi-check: {a.tarball} under QEMU (emulated arm64)\n\n{table(rows)}\n\n"
              f"x86 reference on this machine: onnxruntime {host['onnxruntime']}, "
              f"predict batch 1 {host['timings']['predict_batch1_us']:.1f} us, smoke wall {host_wall:.1f} s.\n"
              "Timings under QEMU are emulated, not a Pi's. Emulation cannot catch instructions a real Pi 4 "
              "rejects (onnxruntime 1.21.0's SIGILL on real Pi 4s passed under QEMU).\n")
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps({"rows": rows, "host": host}, indent=2) + "\n")
        (a.out / "results.md").write_text(md)
        print(md)
        failed = [f"{r['device']}: {r['problems'][0]}" for r in rows if r["problems"]]
        if failed:
            raise PiCheckError("; ".join(failed))
        return 0
    except PiCheckError as e:
        print(f"error: pi-check: {e.message}", file=sys.stderr)
        return e.code
    except subprocess.TimeoutExpired as e:
        print(f"error: pi-check: an emulated run took longer than {e.timeout:g} s", file=sys.stderr)
        return 1
    except (tarfile.TarError, OSError, KeyError, ValueError) as e:  # an unreadable or incomplete bundle, a full disk
        what = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else f"{type(e).__name__}: {e}"
        print(f"error: pi-check: {what}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
