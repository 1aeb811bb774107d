"""A device with a real systemd as PID 1 for the deploy tests (a helper module: no tests in it).

What a Raspberry Pi OS device is to the deploy: systemd as PID 1, sshd inside, a user `pi`
with passwordless sudo, Debian's /usr/bin/python3. Booted with

    systemd-nspawn --register=no --keep-unit --directory=ROOT --boot

on an overlay of this machine's `/` (`mount -t overlay -o lowerdir=/,upperdir=U,workdir=W ROOT`,
U and W in the test's tmp folder: the real `/` is never written). Before the boot, ROOT gets:

- an sshd drop-in (etc/ssh/sshd_config.d/) with its own Port on 127.0.0.1 and a throwaway
  host key: the image's own ssh.service serves it;
- the user `pi` (home, authorized_keys for a client key of the test's, a sudoers line
  `NOPASSWD: ALL` as Raspberry Pi OS has);
- the units that would reach out of the machine or that this image happens to carry masked
  (time sync, the apt and other timers, postgresql, prometheus: whatever of MASK is present);
- a drop-in for edge-model.socket that listens on a port of its own (SERVICE_PORT), before
  the deploy installs the unit: the device's local configuration, as docs/serving.md
  describes it, so that no other test's 127.0.0.1:8080 is in the way.

The container shares this machine's network, so its sshd and the service's socket are
reachable from the tests on 127.0.0.1. The host is ready when sshd logs `pi` in (and `sudo -n`
works there) and `systemctl is-system-running --wait` (through nsenter) answers; a boot takes
about 15 s: each test module that needs one boots its own, once (the `systemd_host` fixture). SIGTERM to
systemd-nspawn halts the container; then the overlay is unmounted.

Where systemd cannot be booted here (not root, no overlay mount, systemd-nspawn missing and
not installable, or it fails), `SystemdUnavailable` says why, for the caller to turn into
one pytest.skip line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.core import FAILSAFE, wait_until
from tests.support.sshfleet import _children, _group_value, _host_value, _stat, ensure_sshd, SshUnavailable

NSPAWN = "systemd-nspawn"
# Units masked in the container: they would reach out of the machine (time sync, package
# lists) or run work that has nothing to do with a device under test (timers, and the
# services this image carries). Only those present are masked; fnmatch-style names.
MASK = ("systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service",
        "apt-daily-upgrade.service", "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service",
        "fstrim.timer", "man-db.timer", "postgresql*.service", "prometheus*.service", "unattended-upgrades.service",
        "cron.service", "systemd-networkd-wait-online.service", "NetworkManager-wait-online.service")
UNIT_DIRS = (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"), Path("/etc/systemd/system"))


class SystemdUnavailable(RuntimeError):
    """systemd cannot be booted as a container's PID 1 here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _halt_with_parent() -> None:
    """In the child before exec: SIGTERM (which halts the container) when the test process dies,
    killed before its fixtures could stop it (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemdUnavailable(f"{' '.join(cmd)} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")


def ensure_nspawn() -> None:
    """Root, sshd, systemd-nspawn and sudo (Debian's systemd-container, sudo; installed when missing)."""
    if os.geteuid() != 0:
        raise SystemdUnavailable("the systemd test host needs root (an overlay mount and systemd-nspawn)")
    try:
        ensure_sshd()
    except SshUnavailable as e:
        raise SystemdUnavailable(str(e)) from e
    missing = [pkg for tool, pkg in ((NSPAWN, "systemd-container"), ("sudo", "sudo"), ("nsenter", "util-linux"))
               if not shutil.which(tool)]
    if missing:
        _apt_install(*missing)
    if not Path("/lib/systemd/systemd").exists():
        raise SystemdUnavailable("/lib/systemd/systemd is missing: install Debian's systemd")


class SystemdHost:
    """One container: base/ holds upper/, work/, root/ (the overlay), its keys and logs."""

    name = "systemd-pi"
    user = "pi"

    def __init__(self, base: Path):
        ensure_nspawn()
        self.base = Path(base).resolve()
        if re.search(r"[\s%\"'\\,:]", str(self.base)):  # overlay options and sshd split on these
            raise ValueError(f"{self.base}: the host's folder must not contain whitespace, quotes, commas, colons, % or \\")
        self.upper, self.work, self.root = self.base / "upper", self.base / "work", self.base / "root"
        self.client_key, self.known_hosts = self.base / "client_key", self.base / "known_hosts"
        self.log = self.base / "nspawn.log"
        self.port = self.service_port = 0
        self.proc: subprocess.Popen | None = None
        self.leader = 0
        self.mounted = False
        self.boot_seconds = 0.0
        self.failed_units: list[str] = []
        self.edge_root = Path("/opt/edge-model")  # on the device; self.path() finds it from here
        self.vars: dict = {}

    # --- paths and commands -----------------------------------------------------------------

    def path(self, device_path: str | Path) -> Path:
        """Where a file of the device is seen from the tests (the overlay's mount point)."""
        return self.root / str(device_path).lstrip("/")

    def seed_venvs(self, templates: Path) -> None:
        """edge_root/venvs/ made, owned by the deploy user, with copies of ``templates``' venvs
        (complete ones, made by a real deploy on this machine's Python, which the container
        shares): a device whose venv is already installed, so a first deploy only unpacks."""
        venvs = self.path(self.edge_root / "venvs")
        for d in (self.edge_root, self.edge_root / "venvs"):
            r = self.nsenter("install", "-d", "-o", self.user, "-g", self.user, str(d))
            assert r.returncode == 0, r.stderr
        for venv in sorted(templates.iterdir()):
            subprocess.run(["cp", "-a", str(venv), str(venvs / venv.name)], check=True)
        r = self.nsenter("chown", "-R", f"{self.user}:{self.user}", str(self.edge_root))
        assert r.returncode == 0, r.stderr

    def nsenter(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run cmd inside the container (all its namespaces), as root, beside its systemd."""
        return subprocess.run(["nsenter", "-t", str(self.leader), "-a", *cmd], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    def systemctl(self, *args: str) -> str:
        return self.nsenter("systemctl", "--no-pager", *args).stdout.strip()

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit)

    def main_pid(self, unit: str = "edge-model.service") -> int:
        """The service's MainPID as the container's systemd reports it (a pid of its own pid namespace)."""
        return int(self.show(unit, "MainPID") or 0)

    def host_pid(self, unit: str = "edge-model.service") -> int:
        """The service's main process as this machine numbers it (for /proc), via its cgroup."""
        pid = self.main_pid(unit)
        if not pid:
            return 0
        for d in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{d}/status").read_text()
                ns = re.search(r"^NSpid:\s+(.*)$", status, re.M)
                if ns and ns[1].split()[-1] == str(pid) and len(ns[1].split()) > 1 and self._inside(int(d)):
                    return int(d)
        return 0

    def _inside(self, pid: int) -> bool:
        try:
            return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{self.leader}/ns/pid")
        except OSError:
            return False

    def ssh_args(self, *cmd: str) -> list[str]:
        opts = [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes",
                "BatchMode=yes", "ControlMaster=no", "ControlPath=none", "IdentitiesOnly=yes", "ConnectTimeout=30"]
        return ["ssh", "-F", "none", "-i", str(self.client_key), *(a for o in opts for a in ("-o", o)),
                "-p", str(self.port), f"{self.user}@127.0.0.1", "--", *cmd]

    def ssh(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """cmd run by the device's shell as `pi`, over SSH (what Ansible does)."""
        return subprocess.run(self.ssh_args(*cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout)

    def inventory(self, path: Path, group: str = "edge", all_vars: dict | None = None, **host_vars) -> Path:
        """An Ansible INI inventory with this one device: user pi, become by sudo, the default
        manager (systemd), the service's health URL on SERVICE_PORT."""
        hv = {"ansible_host": "127.0.0.1", "ansible_port": self.port, "ansible_user": self.user,
              "ansible_ssh_private_key_file": self.client_key, "ansible_python_interpreter": "/usr/bin/python3",
              "edge_root": self.edge_root, "edge_service": True,
              "edge_healthz_url": f"http://127.0.0.1:{self.service_port}/healthz", **self.vars, **host_vars}
        gv = {"ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
              **(all_vars or {})}
        lines = [f"[{group}]", " ".join([self.name, *(f"{k}={_host_value(v)}" for k, v in hv.items())]), "",
                 f"[{group}:vars]", *(f"{k}={_group_value(v)}" for k, v in gv.items())]
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path

    # --- the image ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir=/,upperdir={self.upper},workdir={self.work}", str(self.root)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemdUnavailable(f"cannot mount an overlay of / for the systemd test host: {r.stderr.strip()}")
        self.mounted = True
        R = self.root
        # sshd: its own port and host key; the image's ssh.service starts it at boot.
        self.port, self.service_port = _free_port(), _free_port()
        key = R / "etc/ssh/edge_test_host_key"
        for old in (key, key.with_suffix(".pub")):
            old.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", self.name, "-f", str(key)], check=True)
        (R / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
        (R / "etc/ssh/sshd_config.d/00-edge-test.conf").write_text(
            f"# The systemd test host (tests/support/systemd_host.py)\nPort {self.port}\nListenAddress 127.0.0.1\n"
            "AddressFamily inet\nHostKey /etc/ssh/edge_test_host_key\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin no\nPrintMotd no\n")
        pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub}\n")
        if not self.client_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", "systemd-host-client",
                            "-f", str(self.client_key)], check=True)
        # The deploy user, as on a Pi: a home, the client's key, sudo without a password.
        r = subprocess.run(["chroot", str(R), "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", self.user],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"useradd {self.user} in the container's root: {r.stderr.strip()}")
        ssh_dir = R / "home" / self.user / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        subprocess.run(["chroot", str(R), "chown", "-R", f"{self.user}:{self.user}", f"/home/{self.user}/.ssh"],
                       check=True)
        sudoers = R / "etc/sudoers.d/010_pi-nopasswd"
        sudoers.parent.mkdir(mode=0o755, exist_ok=True)
        sudoers.write_text(f"{self.user} ALL=(ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        # Masked units: present in this image, not wanted in a test device.
        masked = R / "etc/systemd/system"
        for pattern in MASK:
            for d in UNIT_DIRS:
                for unit in d.glob(pattern):
                    link = masked / unit.name
                    if link.is_symlink() or link.exists():
                        link.unlink()
                    link.symlink_to("/dev/null")
        # The service's socket on a port of its own (before the deploy installs the unit).
        dropin = R / "etc/systemd/system/edge-model.socket.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "listen.conf").write_text(
            "# The systemd test host's address for the service (tests/support/systemd_host.py)\n"
            f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{self.service_port}\n")

    # --- boot and halt ---------------------------------------------------------------------------

    def start(self) -> None:
        """Mount, prepare and boot; return once systemd finished booting and `pi` logs in with sudo."""
        t = time.perf_counter()
        self._prepare()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [NSPAWN, "--register=no", "--keep-unit", "--quiet", f"--directory={self.root}",
                 f"--machine={self.name}", "--boot"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_halt_with_parent)

        def leader():
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise SystemdUnavailable(f"systemd-nspawn exited {self.proc.returncode} before booting: "
                                         + " | ".join(tail))
            kids = [k for k in _children().get(self.proc.pid, []) if _stat(k)[0] not in ("", "Z")]
            for k in kids:
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{k}/exe").endswith("/systemd"):
                        return k
            return 0

        self.leader = wait_until(f"{self.name}: systemd as the container's PID 1", leader)

        def booted():
            if self.proc.poll() is not None:
                raise SystemdUnavailable(f"systemd-nspawn exited {self.proc.returncode} while booting (see {self.log})")
            r = self.nsenter("systemctl", "is-system-running", "--wait", timeout=FAILSAFE)
            return r.stdout.strip() if r.stdout.strip() in ("running", "degraded") else ""

        state = wait_until(f"{self.name}: systemctl is-system-running", booted, poll=0.2)
        if state == "degraded":
            self.failed_units = self.systemctl("list-units", "--failed", "--plain", "--no-legend").splitlines()

        def login():
            r = self.ssh("sudo", "-n", "true", timeout=FAILSAFE)
            if r.returncode != 0 and "Connection refused" not in r.stderr:
                raise RuntimeError(f"{self.name}: ssh {self.user}@ then sudo -n failed: {r.stderr.strip()} "
                                   f"(failed units: {self.failed_units})")
            return r.returncode == 0

        wait_until(f"{self.name}: ssh login and sudo -n", login, poll=0.2)
        self.boot_seconds = time.perf_counter() - t

    def close(self) -> None:
        """Halt the container (SIGTERM to systemd-nspawn: systemd shuts down) and unmount the overlay."""
        errors = []
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(FAILSAFE)
            except subprocess.TimeoutExpired:
                errors.append("systemd-nspawn did not halt the container on SIGTERM; killed")
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(FAILSAFE)
        if self.mounted:
            r = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
            if r.returncode != 0:  # something still holds it: detach it, and say so
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
                errors.append(f"umount {self.root}: {r.stderr.strip()}")
            self.mounted = False
        if errors:
            raise RuntimeError(f"{self.name}: " + "; ".join(errors))

    def __enter__(self) -> SystemdHost:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
