"""`make pi-check`: run the bundle as a 64-bit Raspberry Pi 4 and 5 would, under QEMU.

On this x86-64 machine: an arm64 Python 3.11 userland (Debian bookworm's arm64 packages,
downloaded with a private APT config and unpacked, not installed), the bundle's own
requirements.txt installed from its aarch64 wheelhouse (deploy/wheelhouse.py, target
aarch64:3.11:2.36: offline and hash-checked, as a device installs it) into a site folder
on the emulated Python's PYTHONPATH, and ``qemu-aarch64-static -cpu cortex-a72``
(Pi 4) then ``-cpu cortex-a76`` (Pi 5). Under each it unpacks the bundle, runs
``deploy/devicecheck/pi_smoke.py`` (selfcheck, predict, a short stream) and compares the answers with
the same smoke run done natively here, within the manifest's tolerances. Any bundle: one made
before issue 25 without a signature (legacy golden {"celsius", "fahrenheit"}) gets fixed celsius
values, any other, the tutorial's of today included, its golden inputs (every output
value, flattened, within the golden atol/rtol; a classification's labels equal too). A bundle
of several inputs or outputs gets them as an .npz by input name and is compared output by
output, by name (compare_named: each output's max diff, its labels, its bad inputs refused as
on x86); the report names each output.

The signature (runtime/trust.py) is checked the device's way too, by the arm64 ssh-keygen:
an unsigned tarball is signed with a throwaway key made in the work folder (a signed one is
checked against ``--trusted-keys``, else the key its signature names); every smoke run
trusts it ($EDGE_TRUSTED_KEYS), and its selfcheck must verify it. An emulated program that
execs ``ssh-keygen`` would get the host's x86 one (QEMU user mode does not redirect execve),
so the emulated runs get $EDGE_SSH_KEYGEN, a wrapper running the userland's arm64
``usr/bin/ssh-keygen`` (openssh-client) through the same QEMU and logging each call; the
log must show that AArch64 program verifying, and refusing a copy of the bundle with one
model byte changed and every hash recomputed (selfcheck exit 8). The report also gives the
cost of verification at load: ``Runner.from_bundle`` with and without the trusted keys,
natively and on the emulated Pi 4, alternating, medians and ratios from the same run.

Setup goes under a cache folder (default .cache/pi: root/, wheelhouse/, site-<id>/) and is
reused. QEMU 7.2 passes the host's x86 /proc/cpuinfo through, and onnxruntime's CPU
detection then crashes; ``-L ROOT`` redirects the guest's open of /proc/cpuinfo to
ROOT/proc/cpuinfo, so a Pi-style one is written there for each CPU model. What this cannot show: QEMU accepts some instructions a
real Pi 4 rejects (onnxruntime 1.21.0's SIGILL on real Pi 4s passed under emulation), and
emulated timings are not a Pi's.

    python -m deploy.devicecheck.picheck --tarball dist/bundle.tar.gz [--cache .cache/pi] [--out build/pi-check]
        [--trusted-keys PATH] [--load-pairs N]

Exit codes: 0 both devices gave x86's answers, passed the selfcheck with the signature verified
by their arm64 ssh-keygen, and refused the altered copy; 1 a check did not hold (or an emulated
run failed or timed out); 3 setup failed (tarball missing or unreadable, its signature file not
one, QEMU, the arm64 userland, the wheelhouse). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from deploy import wheelhouse
from runtime.errors import BundleError

HERE = Path(__file__).resolve().parent
SMOKE = HERE / "pi_smoke.py"
# onnxruntime needs libstdc++; python3.11 brings the rest; openssh-client is the device's ssh-keygen,
# which checks a signed bundle (runtime/trust.py) and must be the arm64 one too (ssh_keygen_wrapper)
PACKAGES = ("python3.11", "libstdc++6", "openssh-client")
PROVIDES = {"python3.11": "usr/bin/python3.11", "libstdc++6": "usr/lib/aarch64-linux-gnu/libstdc++.so.6",
            "openssh-client": "usr/bin/ssh-keygen"}  # a file each package puts in the userland
LOAD_PAIRS = 5  # Runner.from_bundle with and without trusted keys, natively and on the first device
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


def missing_from(root: Path) -> list[str]:
    """The PACKAGES whose file (PROVIDES) the userland at ``root`` lacks: all of them when there is
    none, the newer ones when it was made before they were added (then it is made again)."""
    return [pkg for pkg in PACKAGES if not (root / PROVIDES[pkg]).exists()]


def apt_selected(simulated: str) -> list[str]:
    """The .deb file names ``apt-get -s install`` says it installs (``Inst NAME (VERSION ... [ARCH])``),
    as APT names them in its archives (the epoch's colon as %3a). The archives may also hold older
    versions from earlier runs (a point release since): only these are unpacked."""
    names = []
    for m in re.finditer(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[([^\]]+)\]\)", simulated, re.M):
        name, version, arch = m.group(1).split(":")[0], m.group(2), m.group(3)
        names.append(f"{name}_{version.replace(':', '%3a')}_{arch}.deb")
    return names


def ensure_root(cache: Path) -> Path:
    """An unpacked arm64 Debian bookworm userland with PACKAGES (python3.11, libstdc++6, openssh-client's
    ssh-keygen), under cache/root. Made again, beside the old one and then swapped in, when it lacks a
    package's file (a cache from before that package was added); runs using the old one keep it."""
    root = cache / "root"
    if not missing_from(root):
        return root
    with open(cache / ".root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pi-check or emulated Pi making it at the same time
        lacking = missing_from(root)
        if not lacking:
            return root
        say(f"downloading Debian bookworm's arm64 {', '.join(lacking)} and what they need (private APT config) ...")
        return make_root(cache, root)


def make_root(cache: Path, root: Path) -> Path:
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
    install = ["--no-install-recommends", "install", *PACKAGES]
    run(["apt-get", "update", "-qq"], "apt-get update (arm64)", env=env)
    run(["apt-get", "-qq", "-y", "--download-only", *install], "apt-get download (arm64)", env=env)
    names = apt_selected(run(["apt-get", "-s", *install], "apt-get -s install (arm64)", env=env).stdout)
    archives = apt / "cache" / "archives"
    debs = [archives / n for n in names]
    if not debs:
        raise PiCheckError("no arm64 packages were selected", 3)
    absent = [d.name for d in debs if not d.is_file()]
    if absent:
        raise PiCheckError(f"apt-get did not download {absent[0]} (and {len(absent) - 1} more)", 3)
    tmp = Path(tempfile.mkdtemp(prefix="root.", dir=cache))
    try:
        for d in ("bin", "sbin", "lib"):  # bookworm's merged /usr: keep these as symlinks
            (tmp / "usr" / d).mkdir(parents=True, exist_ok=True)
            (tmp / d).symlink_to(f"usr/{d}")
        for deb in debs:
            data = run(["dpkg-deb", "--fsys-tarfile", str(deb)], f"dpkg-deb {deb.name}", text=False).stdout
            r = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(tmp)], input=data, capture_output=True)
            if r.returncode != 0:
                raise PiCheckError(f"unpacking {deb.name} failed: {r.stderr.decode().strip()[:200]}", 3)
        (tmp / "proc").mkdir(exist_ok=True)
        if (root / "proc" / "cpuinfo").is_file():  # the device the old one was made for, until the next is made
            shutil.copy2(root / "proc" / "cpuinfo", tmp / "proc" / "cpuinfo")
        lacking = missing_from(tmp)
        if lacking:
            raise PiCheckError(f"the arm64 packages have no {PROVIDES[lacking[0]]} ({lacking[0]})", 3)
    except BaseException:  # a half-made userland is never left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if root.exists():  # renamed aside, not deleted first: a run using it keeps its open files
        old = Path(tempfile.mkdtemp(prefix="root-old.", dir=cache))
        root.rename(old / "root")
    tmp.rename(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
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


ELF_MACHINES = {183: "AArch64", 62: "x86-64", 40: "ARM", 3: "x86"}


def elf_machine(path: Path) -> str:
    """What an executable's ELF header says it runs on ("AArch64", "x86-64", ...), without running it."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return "not an ELF file"
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def ssh_keygen_wrapper(path: Path, launcher: str, root: Path, log: Path | None = None) -> Path:
    """A script at ``path`` that runs the arm64 userland's ssh-keygen through QEMU (``launcher``,
    shell-quoted), for $EDGE_SSH_KEYGEN of an emulated device: an emulated program that execs
    ``ssh-keygen`` gets the host's x86 one (QEMU user mode does not redirect execve, and without
    binfmt_misc the kernel cannot run the arm64 one itself). The runtime's /dev/fd/N pipes pass
    through: the script and QEMU keep the descriptors. With ``log``, each call appends a line
    there: its exit status, the program QEMU ran, and its arguments."""
    program = shlex.quote(str(root / "usr" / "bin" / "ssh-keygen"))
    head = "#!/bin/sh\n# ssh-keygen of an emulated arm64 device (made by deploy/devicecheck)\n"
    if log is None:
        body = f'exec {launcher} {program} "$@"\n'
    else:
        body = (f'{launcher} {program} "$@"\nrc=$?\n'
                f'printf \'%s\\t%s\\t%s\\n\' "$rc" {program} "$*" >> {shlex.quote(str(log))}\nexit $rc\n')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + body)
    path.chmod(0o755)
    return path


def signing(bundle: Path, work: Path, trusted: Path | None) -> dict:
    """The keys the check trusts: ``trusted`` (--trusted-keys) for a signed bundle; else the key a
    signed bundle's signature names (pi-check proves the device's verify path, not who built it:
    `make deploy` holds a release to the fleet's keys); else, for an unsigned bundle, a throwaway
    ed25519 key made in ``work``, which signs manifest.json as `make bundle` does. Returns the
    trusted-keys file, the fingerprint expected to sign, and how (for the report)."""
    from runtime import trust

    sig = bundle / trust.SIGNATURE
    keys = work / "trusted_keys"
    if sig.is_file():
        signer = trust.signer(sig.read_bytes())  # TrustError when it is not one: exit 3 below
        if trusted is not None:
            return {"trusted_keys": str(trusted), "fingerprint": signer.fingerprint,
                    "how": f"the tarball's signature, {trusted} trusted"}
        keys.write_text(f"# the key the tarball's signature names (pi-check)\n{signer.line} tarball-signer\n")
        return {"trusted_keys": str(keys), "fingerprint": signer.fingerprint,
                "how": "the tarball's signature, its key trusted"}
    if trusted is not None:
        raise PiCheckError(f"--trusted-keys {trusted}: the tarball is unsigned (without --trusted-keys pi-check "
                           "signs it with a throwaway key)", 3)
    key = work / "throwaway-key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pi-check throwaway key", "-f", str(key)],
        "ssh-keygen (a throwaway key)")
    signed = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", trust.NAMESPACE],
                            input=(bundle / "manifest.json").read_bytes(), capture_output=True)
    if signed.returncode != 0:
        raise PiCheckError(f"ssh-keygen -Y sign failed: {signed.stderr.decode(errors='replace').strip()}", 3)
    sig.write_bytes(signed.stdout)
    keys.write_text("# pi-check's throwaway key\n" + Path(f"{key}.pub").read_text())
    return {"trusted_keys": str(keys), "fingerprint": trust.parse_public_key(Path(f"{key}.pub").read_text()).fingerprint,
            "how": "unsigned tarball, signed here with a throwaway key"}


def altered_copy(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` in ``dest`` with one byte of its model changed and every hash recomputed
    (manifest.json's entry, manifest.json.sha256), its signature kept: the attack a signature stops.
    Its manifest.json then differs from the bytes that were signed."""
    copy = dest / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    name = manifest["model"]["file"]
    model = bytearray((copy / name).read_bytes())
    model[-5] ^= 0x01
    (copy / name).write_bytes(bytes(model))
    manifest["files"][name] = hashlib.sha256(model).hexdigest()
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (copy / "manifest.json").write_bytes(data)
    (copy / "manifest.json.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n")
    return copy


def verify_calls(log: Path) -> list[dict]:
    """The wrapper's log (ssh_keygen_wrapper): one {"exit", "program", "args"} per ssh-keygen run."""
    calls = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        rc, program, args = (line.split("\t", 2) + ["", ""])[:3]
        calls.append({"exit": int(rc), "program": program, "args": args})
    return calls


def signature_problems(run_: dict, fingerprint: str) -> list[str]:
    """What a smoke run's signature results lack: its selfcheck's signature check passed, verified
    (by ``fingerprint``), the Runner it loaded says the same, and the altered copy was refused with
    one line and exit 8 (docs/exit-codes.md)."""
    problems = []
    check = next((c for c in run_["selfcheck"]["checks"] or [] if c["name"] == "signature"), None)
    if check is None:
        problems.append("the bundle's selfcheck has no signature check (its runtime predates signed bundles)")
    elif not check["ok"]:
        problems.append(f"the signature check failed: {check['detail']}")
    origin = run_["signature"]["origin"]
    if check is not None and not (origin and origin["verified"] and origin["fingerprint"] == fingerprint):
        problems.append(f"the bundle loaded unverified or by another key ({origin}), expected {fingerprint}")
    refused = run_["signature"]["refused"] or {"exit": None, "stderr": ""}
    lines = refused["stderr"].splitlines()
    if refused["exit"] != 8 or len(lines) != 1 or "does not match its signature" not in lines[0]:
        problems.append(f"the altered copy was not refused as changed after signing: exit {refused['exit']}, "
                        f"{' | '.join(lines) or '(no error line)'}")
    return problems


def arm64_problems(calls: list[dict], root: Path) -> list[str]:
    """Whether the emulated run's signature checks ran the arm64 ssh-keygen (the wrapper's log):
    every call was ROOT/usr/bin/ssh-keygen, an AArch64 ELF, at least one verified (exit 0) and
    exactly one refused (the altered copy)."""
    program = root / "usr" / "bin" / "ssh-keygen"
    verifies = [c for c in calls if c["args"].startswith("-Y verify")]
    if not verifies:
        return ["no ssh-keygen -Y verify ran through the arm64 wrapper ($EDGE_SSH_KEYGEN not used?)"]
    problems = []
    if any(c["program"] != str(program) for c in calls):
        problems.append(f"an ssh-keygen other than {program} ran: {calls}")
    if elf_machine(program) != "AArch64":
        problems.append(f"{program} is {elf_machine(program)}, not AArch64")
    if not any(c["exit"] == 0 for c in verifies) or sum(c["exit"] != 0 for c in verifies) != 1:
        problems.append(f"the arm64 ssh-keygen's exits were {[c['exit'] for c in verifies]}: expected 0s and one refusal")
    return problems


def load_cost(load: dict | None) -> dict | None:
    """Medians of the smoke run's load timings (pi_smoke's --load-pairs): Runner.from_bundle with the
    trusted keys and without, alternating; the ratio pair by pair, and the difference."""
    if load and load.get("skipped"):
        return {"skipped": load["skipped"]}
    if not load or not load.get("signed_ms"):
        return None
    signed, plain = load["signed_ms"], load["unsigned_ms"]
    ratios = sorted(a / b for a, b in zip(signed, plain))
    return {"pairs": len(ratios), "signed_ms": statistics.median(signed), "unsigned_ms": statistics.median(plain),
            "ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
            "extra_ms": statistics.median(a - b for a, b in zip(signed, plain)),
            "check_ms": statistics.median(load["check_ms"]) if load.get("check_ms") else None,
            "baseline_verified": load.get("baseline_verified", False)}


def smoke(python: list[str], bundle: Path, env: dict, timeout: float, *args: str) -> tuple[dict, float]:
    t = time.perf_counter()
    r = subprocess.run([*python, str(SMOKE), str(bundle), *args], cwd=bundle, capture_output=True, text=True,
                       env=env, timeout=timeout)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise PiCheckError(f"smoke run failed (exit {r.returncode}): {tail[0]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), wall


def named(host: dict) -> bool:
    """Whether a smoke run's answers are by output name (a bundle of several inputs or outputs)."""
    output = host["predict"]["output"] or {}
    return isinstance(output.get("outputs"), dict)


def run_problems(guest: dict) -> list[str]:
    """A smoke run's failed selfcheck and failed predict, each one line (empty when both held)."""
    problems = []
    if not guest["selfcheck"]["passed"]:
        bad = [c for c in guest["selfcheck"]["checks"] or [] if not c["ok"]]
        problems.append("selfcheck failed: " + (bad[0]["detail"] if bad else guest["selfcheck"]["stderr"].strip()))
    if guest["predict"]["exit"] != 0 or not guest["predict"]["output"]:
        problems.append(f"predict exited {guest['predict']['exit']}: {guest['predict']['stderr'].strip()}")
    return problems


def compare(guest: dict, host: dict, atol: float, rtol: float) -> tuple[float, list[str]]:
    """Max |guest - host| over predict outputs; and the problems found (empty when all hold).
    A bundle of several inputs or outputs: the largest of compare_named's, its problems."""
    if named(host):
        by_output, problems = compare_named(guest, host, atol, rtol)
        return max(by_output.values(), default=float("inf")), problems
    problems = run_problems(guest)
    if guest["predict"]["exit"] != 0 or not guest["predict"]["output"]:
        return float("inf"), problems
    go, ho = guest["predict"]["output"], host["predict"]["output"]
    if "fahrenheit" in ho:  # the tutorial's answers
        g, h = go.get("fahrenheit") or [], ho["fahrenheit"]
    else:  # any signature: every output value of every golden example, flattened
        g, h = flatten(go.get("outputs")), flatten(ho["outputs"])
    if len(g) != len(h):
        problems.append(f"predict gave {len(g)} values, x86 {len(h)}")
        return float("inf"), problems
    worst, differ = values_differ(g, h, atol, rtol, "predict")
    problems += differ
    if "labels" in ho:  # a classification: the same label for every example too
        problems += labels_differ(go.get("labels") or [], ho["labels"], "predict")
    return worst, problems + stream_problems(guest, host, atol, rtol)


def stream_problems(guest: dict, host: dict, atol: float, rtol: float) -> list[str]:
    """The guest's `stream` against x86's: as many lines and the same exit, each error line word
    for word, each answer within tolerance (``line_close``)."""
    problems = []
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
    return problems


def compare_named(guest: dict, host: dict, atol: float, rtol: float) -> tuple[dict[str, float], list[str]]:
    """A bundle of several inputs or outputs: per output, by name, max |guest - host| over its values
    (inf when the guest gave none or not as many); and the problems found, each naming its output: a
    value beyond atol + rtol * |x86|, a classification's label not x86's (whatever the manifest's
    labels_equal), a bad input not refused as x86 refused it, word for word."""
    problems = run_problems(guest)
    hy = host["predict"]["output"]["outputs"]
    by_output = dict.fromkeys(hy, float("inf"))
    if guest["predict"]["exit"] != 0 or not guest["predict"]["output"]:
        return by_output, problems
    gy = guest["predict"]["output"].get("outputs")
    if not isinstance(gy, dict) or set(gy) != set(hy):
        problems.append(f"predict gave outputs {sorted(gy) if isinstance(gy, dict) else gy!r}, x86 {sorted(hy)}")
        return by_output, problems
    for name in hy:
        g, h = flatten(gy[name]), flatten(hy[name])
        if len(g) != len(h):
            problems.append(f"predict output {name!r} gave {len(g)} values, x86 {len(h)}")
            continue
        by_output[name], differ = values_differ(g, h, atol, rtol, f"predict output {name!r}")
        problems += differ
    guest_labels = guest["predict"]["output"].get("labels") or {}
    for name, hl in (host["predict"]["output"].get("labels") or {}).items():
        problems += labels_differ(guest_labels.get(name) or [], hl, f"predict output {name!r}")
    got = {r["what"]: r for r in guest.get("refusals") or []}
    for want in host.get("refusals") or []:
        r = got.get(want["what"], {"exit": None, "stderr": "(not tried)"})
        lines = r["stderr"].splitlines()
        if r["exit"] in (0, None) or len(lines) != 1 or (r["exit"], r["stderr"]) != (want["exit"], want["stderr"]):
            problems.append(f"bad input ({want['what']}) not refused as x86 refused it: exit {r['exit']}, "
                            f"{' | '.join(lines) or '(no error line)'!r} vs exit {want['exit']}, "
                            f"{want['stderr'].strip()!r}")
    if "stream" in host:
        problems += stream_problems(guest, host, atol, rtol)
    return by_output, problems


def values_differ(g: list[float], h: list[float], atol: float, rtol: float, what: str) -> tuple[float, list[str]]:
    """(max |g - h| over values of equal length; the first beyond atol + rtol * |x86| as a problem
    line starting with ``what``, or none)."""
    diffs = [abs(a - b) for a, b in zip(g, h)]
    for a, b, d in zip(g, h, diffs):
        if not d <= atol + rtol * abs(b):
            return max(diffs), [f"{what} differs from x86: {a!r} vs {b!r} (allowed {atol:g} + {rtol:g} * |x86|)"]
    return max(diffs, default=0.0), []


def labels_differ(gl: list[str], hl: list[str], what: str) -> list[str]:
    """The guest's labels ``gl`` against x86's ``hl``: none, or one problem line starting with ``what``
    (how many differ, the first)."""
    differ = [i for i, (a, b) in enumerate(zip(gl, hl)) if a != b]
    if len(gl) == len(hl) and not differ:
        return []
    i = differ[0] if differ else min(len(gl), len(hl))
    return [f"{what} labels differ from x86: {len(differ)} of {len(hl)}, first at "
            f"input[{i}]: {gl[i] if i < len(gl) else None!r} vs {hl[i] if i < len(hl) else None!r}"]


def flatten(x) -> list[float]:
    """The numbers of a nested list, in order."""
    if not isinstance(x, list):
        return [] if x is None else [x]
    return [v for item in x for v in flatten(item)]


def line_close(a: str, b: str, atol: float, rtol: float) -> bool:
    """Two answer lines of `stream` agree: the same cells, numbers within tolerance, any other
    cell (a classification's label, an output's name) equal. Cells: comma-separated values, and
    for a model of several outputs ``name=values`` cells separated by spaces."""
    ca, cb = re.split(r"[ ,=]", a), re.split(r"[ ,=]", b)
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
    head = ("| device (emulated) | QEMU CPU | CPU part seen | onnxruntime | selfcheck | signature (arm64 ssh-keygen) | "
            f"max diff vs x86 | import (s, emulated) | predict batch 1 (us, emulated) | batch {size} (ms, emulated) | "
            "smoke wall (s) | result |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        t = r["timings"]
        lines.append(
            f"| {r['device']} | {r['qemu_cpu']} | {r['cpu_part']} | {r['onnxruntime']} | {'passed' if r['selfcheck'] else 'FAILED'} | "
            f"{signature_cell(r)} | {max_diff_cell(r)} | {t['start_to_imported_s']:.2f} | {t['predict_batch1_us']:.0f} | "
            f"{batch_timing(t)[1]:.1f} | {r['wall_s']:.1f} | {'ok' if not r['problems'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def max_diff_cell(row: dict) -> str:
    """The max diff vs x86: one number, or for a bundle of several outputs each one's by name."""
    by_output = row.get("max_diff_by_output")
    if by_output is None:
        return f"{row['max_diff']:.3g}"
    return ", ".join(f"{name} {diff:.3g}" for name, diff in by_output.items())


def named_report(host: dict, atol: float, rtol: float) -> str:
    """What results.md says of a bundle of several outputs (empty for one of one): the outputs
    compared, by name, and the bad inputs refused."""
    if not named(host):
        return ""
    output = host["predict"]["output"]
    labels = output.get("labels") or {}
    counts = {name: f"{len(flatten(values))} values" for name, values in output["outputs"].items()}
    for name, each in labels.items():
        counts[name] += f", {len(each)} labels"
    outputs = ", ".join(f"{name} ({count})" for name, count in counts.items())
    refused = "; ".join(f"{r['what']} (exit {r['exit']})" for r in host.get("refusals") or [])
    lines = (host.get("stream") or {}).get("lines")
    stream = "" if lines is None else (
        f" A stream of {len(lines)} lines (JSON objects by input name, {sum(ln.startswith('error:') for ln in lines)} "
        "of them bad) answered as x86 answered it, line by line.")
    return (f"Outputs compared by name, each value within atol {atol:g} + rtol {rtol:g} * |x86| and each "
            f"classification's labels equal to x86's: {outputs}. Bad inputs refused with x86's error line, word "
            f"for word: {refused or '(none)'}.{stream}\n\n")


def signature_cell(row: dict) -> str:
    sig = row.get("signature") or {}
    checked, refused = sig.get("checked"), sig.get("refused") or {}
    calls = (sig.get("ssh_keygen") or {}).get("calls") or []
    if not (checked and checked["ok"]) or not row.get("signature_ok", True):
        return "FAILED"
    return f"verified, altered copy refused (exit {refused.get('exit')}); {len(calls)} arm64 runs"


def load_row(where: str, cost: dict | None) -> str:
    if cost is None or "skipped" in cost:
        why = f" ({cost['skipped']})" if cost else ""
        return f"| {where}{why} | - | - | - | - | - |"
    check = f"{cost['check_ms']:.1f}" if cost["check_ms"] is not None else "-"
    note = " (without keys verified too: a system trusted-keys file?)" if cost["baseline_verified"] else ""
    return (f"| {where}{note} | {cost['unsigned_ms']:.1f} | {cost['signed_ms']:.1f} | {cost['ratio']:.2f}x "
            f"[{cost['ratio_min']:.2f}, {cost['ratio_max']:.2f}] | {cost['extra_ms']:+.1f} | {check} |")


def signature_report(signed: dict, rows: list[dict], host_load: dict | None) -> str:
    """The signature's part of results.md: what was trusted, what ran, what it refused, what it costs."""
    refusal = next((r["signature"]["refused"]["stderr"].strip() for r in rows if r.get("signature")), "")
    program = next((r["signature"]["ssh_keygen"] for r in rows if r.get("signature")), {})
    calls = ", ".join(f"{r['device']} {len(r['signature']['ssh_keygen']['calls'])} (exits "
                      f"{sorted({c['exit'] for c in r['signature']['ssh_keygen']['calls']})})" for r in rows)
    pairs = next((c["pairs"] for c in [host_load, *(r.get("load") for r in rows)] if c and "pairs" in c), 0)
    lines = [
        f"Signature: {signed['how']} ({signed['fingerprint']}). On each device the runtime ran "
        f"`ssh-keygen -Y verify` through $EDGE_SSH_KEYGEN, a wrapper running {program.get('program')} "
        f"({program.get('elf_machine')} ELF) under the same QEMU: {calls}. A copy with one byte of the model "
        f"changed and every hash recomputed was refused: `{refusal}`.",
        "",
        f"Cost of verification at load: `Runner.from_bundle` with the trusted keys against without, alternating, "
        f"medians of {pairs} pairs in this run (ratio pair by pair; emulated timings are not a Pi's):",
        "",
        "| where | without keys (ms) | with keys (ms) | ratio [min, max] | added (ms) | trust.check alone (ms) |",
        "|---|---|---|---|---|---|",
        load_row("x86-64 (native)", host_load),
        *(load_row(f"{r['device']} (emulated)", r["load"]) for r in rows if r.get("load")),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.devicecheck.picheck", description=__doc__.splitlines()[0])
    p.add_argument("--tarball", type=Path, default=Path("dist/bundle.tar.gz"))
    p.add_argument("--cache", type=Path, default=Path(".cache/pi"))
    p.add_argument("--out", type=Path, default=Path("build/pi-check"))
    p.add_argument("--timeout", type=float, default=300, help="seconds per emulated run (default: 300)")
    p.add_argument("--trusted-keys", type=Path, metavar="PATH",
                   help="for a signed tarball: the keys to trust (default: the key its signature names; an "
                        "unsigned tarball is signed with a throwaway key)")
    p.add_argument("--load-pairs", type=int, default=LOAD_PAIRS,
                   help=f"Runner.from_bundle timings with and without trusted keys, natively and on the first "
                        f"device (default: {LOAD_PAIRS} pairs; 0: none)")
    a = p.parse_args(argv)
    try:
        if not a.tarball.is_file():
            raise PiCheckError(f"{a.tarball}: not found (run `make bundle` first)", 3)
        if a.trusted_keys is not None and not a.trusted_keys.is_file():
            raise PiCheckError(f"--trusted-keys {a.trusted_keys}: not found", 3)
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
            try:
                signed = signing(bundle, work, a.trusted_keys and a.trusted_keys.resolve())
            except BundleError as e:  # trust.TrustError: a signature file that is not one
                raise PiCheckError(f"{a.tarball}: {e.message}", 3) from None
            altered = altered_copy(bundle, work / "altered")
            trust_env = {"EDGE_TRUSTED_KEYS": signed["trusted_keys"]}
            pairs = ["--load-pairs", str(a.load_pairs)] if a.load_pairs > 0 else []
            host_env = {k: v for k, v in os.environ.items() if k != "EDGE_SSH_KEYGEN"}
            host_env.update(PYTHONPATH="", **trust_env)
            host, host_wall = smoke([sys.executable], bundle, host_env, a.timeout, "--refused", str(altered), *pairs)
            problems = run_problems(host) + signature_problems(host, signed["fingerprint"])
            if problems:
                raise PiCheckError(f"x86 reference: {problems[0]}")
            rows = []
            for n, (name, device) in enumerate(DEVICES.items()):
                (root / "proc" / "cpuinfo").write_text(cpuinfo(device, os.cpu_count() or 1))
                say(f"{name}: qemu-aarch64-static -cpu {device['qemu_cpu']} ...")
                launcher = shlex.join([qemu, "-cpu", device["qemu_cpu"], "-L", str(root)])
                log = work / f"ssh-keygen.{device['qemu_cpu']}.log"
                keygen = ssh_keygen_wrapper(work / device["qemu_cpu"] / "ssh-keygen", launcher, root, log)
                env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1",
                       "LANG": "C.UTF-8", "EDGE_SSH_KEYGEN": str(keygen), **trust_env}
                guest, wall = smoke([qemu, "-cpu", device["qemu_cpu"], "-L", str(root),
                                     str(root / "usr" / "bin" / "python3.11")], bundle, env, a.timeout,
                                    "--refused", str(altered), *(pairs if n == 0 else []))
                if guest["machine"] != "aarch64":
                    raise PiCheckError(f"{name}: the smoke run saw machine {guest['machine']!r}, expected aarch64")
                if named(host):  # several outputs: each one's max diff, by name
                    by_output, problems = compare_named(guest, host, atol, rtol)
                    worst = max(by_output.values(), default=float("inf"))
                else:
                    by_output = None
                    worst, problems = compare(guest, host, atol, rtol)
                calls = verify_calls(log)
                sig_problems = signature_problems(guest, signed["fingerprint"]) + arm64_problems(calls, root)
                problems += sig_problems
                rows.append({"device": name, "qemu_cpu": device["qemu_cpu"], "cpu_part": guest["cpu_part"],
                             "onnxruntime": guest["onnxruntime"], "numpy": guest["numpy"],
                             "python": guest["python"], "selfcheck": bool(guest["selfcheck"]["passed"]),
                             "max_diff": worst, **({"max_diff_by_output": by_output} if by_output is not None else {}),
                             "problems": problems, "timings": guest["timings"],
                             "wall_s": wall, "signature_ok": not sig_problems, "signature": {
                                 "checked": next((c for c in guest["selfcheck"]["checks"] or []
                                                  if c["name"] == "signature"), None),
                                 "refused": guest["signature"]["refused"],
                                 "ssh_keygen": {"program": str(root / "usr" / "bin" / "ssh-keygen"),
                                                "elf_machine": elf_machine(root / "usr" / "bin" / "ssh-keygen"),
                                                "calls": calls}},
                             "load": load_cost(guest.get("load"))})
        finally:
            shutil.rmtree(work, ignore_errors=True)
        host_load = load_cost(host.get("load"))
        md = (f"# pi-check: {a.tarball} under QEMU (emulated arm64)\n\n{table(rows)}\n\n"
              f"{named_report(host, atol, rtol)}"
              f"x86 reference on this machine: onnxruntime {host['onnxruntime']}, "
              f"predict batch 1 {host['timings']['predict_batch1_us']:.1f} us, smoke wall {host_wall:.1f} s.\n\n"
              f"{signature_report(signed, rows, host_load)}\n"
              "Timings under QEMU are emulated, not a Pi's. Emulation cannot catch instructions a real Pi 4 "
              "rejects (onnxruntime 1.21.0's SIGILL on real Pi 4s passed under QEMU).\n")
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps({"rows": rows, "host": host, "host_load": host_load,
                                                        "signing": signed}, indent=2) + "\n")
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
