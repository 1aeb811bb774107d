"""Real OpenSSH test hosts on 127.0.0.1 for the deploy tests (a helper module: no tests in it).

Each host is an sshd of its own (config, host key, port, log) so that a test can trust some host
keys and not others, and cut a host off mid-deploy (listener and sessions, as a power cut would)
then bring it back on the same port and key. The hosts log in as root, so this needs root;
`SshUnavailable` says why it cannot run here, for the caller to turn into pytest.skip.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from tests.support.core import FAILSAFE, wait_until

SSHD = Path("/usr/sbin/sshd")


class SshUnavailable(RuntimeError):
    """No sshd can be run here (not root, or openssh-server missing and not installable)."""


class PortTaken(RuntimeError):
    """The port picked was taken before sshd could bind it."""


def ensure_sshd() -> None:
    """Install openssh-server when missing (root only) and make sshd's privsep folder."""
    if os.geteuid() != 0:
        raise SshUnavailable("ssh test hosts need root (they log in as root and need /run/sshd)"
                             + ("" if SSHD.exists() else f"; {SSHD} is missing, install openssh-server"))
    if not SSHD.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "openssh-server"]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise SshUnavailable(f"{' '.join(cmd)} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def _accepting(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port. Any failure to connect counts as no
    (refused, reset while a dying listener closes, timed out); so does a TCP self-connect,
    which the kernel makes when it picks the port itself as the client's source port."""
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            return s.getsockname() != s.getpeername()
        except OSError:
            return False


def _stat(pid: int | str) -> tuple[str, int]:
    """(state letter, ppid) from /proc; ("", 0) when gone. "Z" is dead but not yet reaped."""
    try:
        state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        return state, int(ppid)
    except (OSError, ValueError):
        return "", 0


def _children() -> dict[int, list[int]]:
    """ppid -> pids, by scanning /proc: this kernel has no /proc/PID/task/TID/children."""
    kids: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        kids.setdefault(_stat(d)[1], []).append(int(d))
    return kids


class SshHost:
    """One sshd: base/hosts/<name>/ holds its config, host key, log and pid file."""

    def __init__(self, fleet: Fleet, name: str, python: str, trusted: bool, vars: dict | None):
        self.fleet, self.name, self.python, self.trusted = fleet, name, python, trusted
        self.vars = dict(vars or {})
        self.dir = fleet.base / "hosts" / name
        self.edge_root = self.dir / "edge-model"
        # The host's edge_trusted_keys_file: its own, under its folder (not the machine's /etc/edge-model).
        self.trusted_keys_file = self.dir / "etc-edge-model" / "trusted_keys"
        self.port = 0
        self.pid: int | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "host_key"
        for old in (self.key, self.key.with_suffix(".pub")):  # ssh-keygen would ask before overwriting
            old.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", name, "-f", str(self.key)], check=True)
        self.pubkey = " ".join(self.key.with_suffix(".pub").read_text().split()[:2])
        self.conf, self.log, self.pidfile = self.dir / "sshd_config", self.dir / "sshd.log", self.dir / "sshd.pid"
        self.own_known_hosts = self.dir / "known_hosts"  # this host alone, to check logins even if untrusted

    def configure(self, port: int) -> None:
        self.port = port
        self.conf.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nAddressFamily inet\nHostKey {self.key}\n"
            f"AuthorizedKeysFile {self.fleet.authorized_keys}\nPidFile {self.pidfile}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n"
            "AllowTcpForwarding no\nAllowStreamLocalForwarding no\nX11Forwarding no\nPermitTunnel no\n"
            "PrintMotd no\n")  # sftp: Ansible copies files with it (scp in OpenSSH 9 is sftp too)
        self.own_known_hosts.write_text(f"[127.0.0.1]:{port} {self.pubkey}\n")

    def start(self) -> None:
        """Start sshd (same port and key as before); return once a real ssh login works."""
        if self.pid and _stat(self.pid)[0] not in ("", "Z"):
            return
        self.pidfile.unlink(missing_ok=True)
        seen = self.log.stat().st_size if self.log.exists() else 0
        r = subprocess.run([str(SSHD), "-f", str(self.conf), "-E", str(self.log)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: sshd refused to start: {r.stderr.strip()}")

        def listening():  # sshd writes its PidFile once its socket is bound
            with open(self.log, errors="replace") as f:
                f.seek(seen)
                fatal = [line for line in f if "fatal:" in line or "Bind to port" in line]
            if fatal:
                raise (PortTaken if "already in use" in "".join(fatal) else RuntimeError)(
                    f"{self.name}: sshd on port {self.port}: {fatal[-1].strip()}")
            text = self.pidfile.read_text().strip() if self.pidfile.exists() else ""
            return int(text) if text.isdigit() else 0

        self.pid = wait_until(f"{self.name}: sshd pid file", listening)
        wait_until(f"{self.name}: port {self.port} accepting", lambda: _accepting(self.port))
        r = subprocess.run(self.ssh_args("true", known_hosts=self.own_known_hosts), capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=FAILSAFE)
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: ssh login failed: {r.stderr.strip()} (see {self.log})")

    def kill(self) -> None:
        """SIGKILL the listener and every process it forked (in-flight sessions drop)."""
        if self.pid and _stat(self.pid)[0] not in ("", "Z"):
            tree, new = set(), {self.pid}
            while new:  # stop first, so that nothing forks or is re-parented away while we collect
                for pid in new:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                tree |= new
                wait_until(f"{self.name}: sshd processes stopping",
                      lambda: all(_stat(p)[0] in ("", "Z", "T", "t") for p in tree))
                kids = _children()
                new = {c for p in tree for c in kids.get(p, ())} - tree
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(f"{self.name}: port {self.port} refusing", lambda: not _accepting(self.port))
        self.pid = None
        self.pidfile.unlink(missing_ok=True)

    def ssh_args(self, *cmd: str, known_hosts: Path | None = None) -> list[str]:
        """The ssh command line (for Popen); cmd is joined and run by the remote shell, as ssh does."""
        opts = [f"UserKnownHostsFile={known_hosts or self.fleet.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes", "BatchMode=yes", "ControlMaster=no", "ControlPath=none",
                "IdentitiesOnly=yes", "ConnectTimeout=30"]
        return ["ssh", "-F", "none", "-i", str(self.fleet.client_key), *(a for o in opts for a in ("-o", o)),
                "-p", str(self.port), "root@127.0.0.1", "--", *cmd]

    def ssh(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_args(*cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout)


def _pystr(s: str) -> str:
    """A double-quoted Python literal of s that stays on one line."""
    return json.dumps(s, ensure_ascii=False).translate({0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def _host_value(v) -> str:
    """A host-line value as Ansible reads it back (shlex.split, then ast.literal_eval)."""
    v = str(v) if isinstance(v, Path) else v
    if not isinstance(v, str):
        text = repr(v)
    else:
        try:
            ast.literal_eval(v)
            text = _pystr(v)  # it would be read as something other than this string: give it a literal
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            text = v if v.isprintable() else _pystr(v)
    if re.fullmatch(r"[\w./:@%+,-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _group_value(v) -> str:
    """A [group:vars] value: Ansible takes the rest of the line as is, then ast.literal_eval."""
    v = str(v) if isinstance(v, Path) else v
    return _pystr(v) if isinstance(v, str) else repr(v)


def python_key(python: str) -> str:
    """A folder name for an interpreter (its resolved path): where its template venvs are kept."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.realpath(python)).strip("_")


class Fleet:
    """Test hosts under base; a context manager whose close() stops every sshd it started.

    ``venvs``: template venvs (``<venvs>/<python_key>/<venv id>/``, complete ones made by a real
    deploy): a host added with ``seed=True`` starts with hard-linked copies of its Python's, so a
    deploy of a bundle with those wheels finds its venv made and installs nothing (the hosts share
    this file system). Tests that prove the install itself add their hosts with ``seed=False``.
    """

    def __init__(self, base: Path, venvs: Path | None = None):
        ensure_sshd()
        self.venvs = venvs
        self.base = Path(base).resolve()
        if re.search(r"[\s%\"'\\]", str(self.base)):  # sshd and ssh split or expand these in paths
            raise ValueError(f"{self.base}: the fleet's folder must not contain whitespace, quotes, % or \\")
        (self.base / "hosts").mkdir(parents=True, exist_ok=True)
        self.client_key, self.known_hosts = self.base / "client_key", self.base / "known_hosts"
        self.authorized_keys = self.base / "authorized_keys"
        if not self.client_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", "fleet-client",
                            "-f", str(self.client_key)], check=True)
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self.known_hosts.touch()
        self.hosts: dict[str, SshHost] = {}

    def add(self, name: str, python: str = "/usr/bin/python3", trusted: bool = True,
            vars: dict | None = None, seed: bool = True) -> SshHost:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name in self.hosts:
            raise ValueError(f"{name!r}: host names must be new and [A-Za-z0-9_.-]")
        host = self.hosts[name] = SshHost(self, name, python, trusted, vars)
        templates = self.venvs / python_key(python) if seed and self.venvs else None
        for venv in sorted(templates.iterdir()) if templates and templates.is_dir() else ():
            if (venv / ".edge-complete").is_file():
                (host.edge_root / "venvs").mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-al", str(venv), str(host.edge_root / "venvs" / venv.name)], check=True)
        for _attempt in range(10):  # a port picked by binding to 0 can be taken before sshd binds it
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            host.configure(port)
            try:
                host.start()
                break
            except PortTaken:
                continue
        else:
            raise RuntimeError(f"{name}: no free port after 10 tries")
        if trusted:
            with open(self.known_hosts, "a") as f:
                f.write(f"[127.0.0.1]:{host.port} {host.pubkey}\n")
        return host

    def inventory(self, path: Path, hosts: list[SshHost] | None = None, group: str = "edge",
                  all_vars: dict | None = None) -> Path:
        """An Ansible INI inventory for these hosts; host keys are checked against known_hosts."""
        lines = [f"[{group}]"]
        for h in self.hosts.values() if hosts is None else hosts:
            hv = {"ansible_host": "127.0.0.1", "ansible_port": h.port, "ansible_user": "root",
                  "ansible_ssh_private_key_file": self.client_key, "ansible_python_interpreter": h.python,
                  "edge_root": h.edge_root, "edge_trusted_keys_file": h.trusted_keys_file, **h.vars}
            lines.append(" ".join([h.name, *(f"{k}={_host_value(v)}" for k, v in hv.items())]))
        gv = {"ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
              **(all_vars or {})}
        lines += ["", f"[{group}:vars]", *(f"{k}={_group_value(v)}" for k, v in gv.items())]
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path

    def close(self) -> None:
        errors = []
        for host in self.hosts.values():
            try:
                host.kill()
            except Exception as e:  # stop the others all the same
                errors.append(f"{host.name}: {type(e).__name__}: {e}")
        if errors:
            raise RuntimeError("stopping the test hosts: " + "; ".join(errors))

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
