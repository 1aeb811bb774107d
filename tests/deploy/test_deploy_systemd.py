"""`make deploy` and `make rollback` to a device with a real systemd as PID 1, the path every Pi takes.

The device (tests/support/systemd_host.py): systemd 252 booted with systemd-nspawn on an overlay of
this machine's root, sshd inside, the deploy user `pi` with passwordless sudo; the inventory
has the role's defaults (edge_service_manager=systemd) with edge_service=true. edge_root
(/opt/edge-model) does not exist on it at first: the deploy creates it (issue 19, section 5).
The service's socket is on a port of the host's own (a drop-in for edge-model.socket), which
the tests reach on 127.0.0.1: the container shares this machine's network.

The tests run in order on one device, each asserting the state it leaves.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.core import FAILSAFE, ROOT, wait_until
from tests.support.device_lock import HeldLock
from tests.support.fleet import ask, f32, fleet_cmd, overlay_state, sha12, SPEED_TEXT, speed_record

pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.root]

UNITS = ("edge-model.socket", "edge-model.service")
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def host(systemd_host):
    return systemd_host


@pytest.fixture(scope="module")
def inventory(host, tmp_path_factory) -> Path:
    return host.inventory(tmp_path_factory.mktemp("systemd-inv") / "inventory.ini")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("systemd-runs")


def starts(host) -> int:
    """How many times systemd started edge-model.service since the boot (its journal)."""
    out = host.nsenter("journalctl", "--no-pager", "-o", "cat", "-u", "edge-model.service").stdout
    return len(re.findall(r"^Started edge-model\.service", out, re.M))


def listener_holders(port: int) -> set[int]:
    """The pids (this machine's) that hold the listening socket on 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want and f[3] == "0A":
            inodes.add(f"socket:[{f[9]}]")
    holders = set()
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{d}/fd"):
                if os.readlink(f"/proc/{d}/fd/{fd}") in inodes:
                    holders.add(int(d))
                    break
        except OSError:
            continue
    return holders


class Clients:
    """Client threads asking the service in a loop, each bounded in count and in FAILSAFE time,
    every request with a FAILSAFE timeout (a slow restart only waits longer). ``seen``: the
    answers in the order they came, as runs (model, fahrenheit, answers in a row); ``failures``;
    ``requests``: (sent, answered), time.monotonic(), per answered request. ``pause()`` returns
    once none of their requests is in flight (a process killed then cuts none of them);
    ``resume()`` lets them go on. A context manager: stopped and joined on exit."""

    def __init__(self, host, threads: int = 1):
        self.host = host
        self.seen: list[tuple[str, float, int]] = []
        self.failures: list[str] = []
        self.requests: list[tuple[float, float]] = []
        self._stop, self._go, self._lock = threading.Event(), threading.Event(), threading.Lock()
        self._go.set()
        self._in_flight = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._go.set()
        for t in self._threads:
            t.join(FAILSAFE)

    @property
    def answered(self) -> int:
        return sum(n for *_, n in self.seen)

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def until(self, what: str, cond) -> None:
        """Wait until cond() holds, or a request failed, or a client thread ended (each of
        which the test then reports)."""
        wait_until(what, lambda: cond() or self.failures or not self.alive())

    def pause(self) -> None:
        with self._lock:  # a thread checks _go and counts itself in flight under the same lock
            self._go.clear()
        wait_until("no client request in flight", lambda: self._in_flight == 0)

    def resume(self) -> None:
        self._go.set()

    def _run(self) -> None:
        cap = time.monotonic() + FAILSAFE
        asked = 0
        while asked < 100_000:
            with self._lock:
                if self._stop.is_set() or time.monotonic() > cap:
                    return
                going = self._go.is_set()
                self._in_flight += going
            if not going:
                self._go.wait(max(0.0, cap - time.monotonic()))
                continue
            asked += 1
            sent = []
            try:
                model, f = ask(self.host, timeout=FAILSAFE, sent=lambda: sent.append(time.monotonic()))
            except (OSError, http.client.HTTPException, ValueError, AssertionError) as e:
                with self._lock:
                    self.failures.append(repr(e))
                continue
            finally:
                with self._lock:
                    self._in_flight -= 1
            with self._lock:
                self.requests.append((sent[0], time.monotonic()))
                if not self.seen or self.seen[-1][0] != model:
                    self.seen.append((model, f, 1))
                else:
                    self.seen[-1] = (model, f, self.seen[-1][2] + 1)


def relink(host, current: str, previous: str) -> None:
    """Point `current` and `previous` at these releases with the deploy's own code (release.py
    revert, sent over SSH and run as the deploy user under the device's lock: relative links
    renamed into place, owned as a deploy leaves them). Nothing is restarted."""
    script = (ROOT / "deploy" / "roles" / "edge" / "files" / "release.py").read_bytes()
    r = subprocess.run(host.ssh_args("python3", "-", "revert", str(host.edge_root), current, previous), input=script,
                       capture_output=True, timeout=FAILSAFE)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    doc = json.loads(r.stdout)
    assert (doc["current"], doc["previous"]) == (current, previous), doc


def journal(host) -> str:
    """edge-model.service's journal since the boot: systemd's lines about it and serve's own."""
    return host.nsenter("journalctl", "--no-pager", "-o", "cat", "-u", "edge-model.service").stdout


def journal_until(host, what: str, holds) -> str:
    """The journal once ``holds(text)`` is true: journald writes a line a moment after it was logged."""
    def ready():
        text = journal(host)
        return text if holds(text) else ""

    return wait_until(what, ready)


def seconds_of(timespan: str) -> float:
    """A systemd time span as `systemctl show` prints it ("20s", "1min 30s", "500ms") in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|min|h|d|w)(?:\s+|$)", timespan)
    assert parts and "".join(n + u for n, u in parts) == timespan.replace(" ", ""), f"not a time span: {timespan!r}"
    return sum(float(n) * units[u] for n, u in parts)


def gone(pid: int) -> bool:
    """The process (this machine's pid) has exited: reaped, or a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stopped(pid: int) -> bool:
    """Every thread of the process (this machine's pid) is in the stopped state (T)."""
    try:
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    return bool(states) and all(st == "T" for st in states)


def restarted(host, pid0: int):
    """The service's main process once it is a new one and READY=1 came from it (active), else None."""
    pid = host.main_pid()
    return pid if pid not in (0, pid0) and host.show("edge-model.service", "ActiveState") == "active" else None


def exec_main_start(host) -> float:
    """When systemd forked the service's current main process, on this machine's time.monotonic()
    clock (CLOCK_MONOTONIC, which the container shares): before it, no process could accept."""
    return int(host.show("edge-model.service", "ExecMainStartTimestampMonotonic")) / 1e6


def restarts(host) -> int:
    return int(host.show("edge-model.service", "NRestarts"))


def timed(name: str, seconds: float, capsys) -> None:
    TIMES[name] = seconds
    with capsys.disabled():
        print(f"\n  systemd host: {name}: {seconds:.1f} s")


# --- the lifecycle ----------------------------------------------------------------------------

def test_first_deploy_creates_edge_root_installs_the_units_and_serves_on_systemds_socket(
        host, inventory, models, answers, tmp, capsys):
    assert not host.path(host.edge_root).exists()  # no manual step on the device
    assert host.failed_units == [], host.failed_units
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["one"])
    assert r.rc == 0, r.out[-3000:] + r.err[-2000:]
    assert r.result(host) == "deployed", r.report
    one = sha12(models["one"])
    assert overlay_state(host)["current"] == f"releases/{one}"
    owner = host.ssh(f"stat -c %U:%G {host.edge_root}")
    assert owner.stdout.split() == ["pi:pi"], owner
    for unit in UNITS:
        assert host.systemctl("is-active", unit) == "active", host.systemctl("status", unit)
        assert host.systemctl("is-enabled", unit) == "enabled"
    assert host.show("edge-model.service", "User") == "edge-model"
    # systemd (the container's PID 1, host pid = the leader) holds the listening socket, and
    # so does the service it passed it to.
    holders = listener_holders(host.service_port)
    assert host.leader in holders and host.host_pid() in holders, (holders, host.leader, host.host_pid())
    model, f = ask(host)
    assert f32(f) == f32(answers["one"])
    timed("first deploy (edge_root created, units installed)", r.seconds, capsys)
    # The gate measured the release on the device; the service (as edge-model) shows that record
    # in GET /info, and fleet-status (one run: no deploy) in its speed column.
    rec = speed_record(host.path(host.edge_root), one)
    c = http.client.HTTPConnection("127.0.0.1", host.service_port, timeout=FAILSAFE)
    try:
        c.request("GET", "/info")
        a = c.getresponse()
        assert a.status == 200 and json.loads(a.read())["device_speed"] == rec
    finally:
        c.close()
    s = fleet_cmd("status", inventory, tmp=tmp)
    assert s.rc == 0 and s.result(host) == "healthy", s.out[-3000:]
    row = s.report[host.name]
    assert SPEED_TEXT.fullmatch(row["speed"]) and row["service"] == f"200 {model[:12]}", row
    with capsys.disabled():
        print("\n" + s.out[s.out.index("\nhost "):].strip())
    with capsys.disabled():
        print(f"  systemd host: booted (overlay, nspawn, systemd running, ssh and sudo) in {host.boot_seconds:.1f} s")


def test_unchanged_redeploy_changes_nothing_and_keeps_the_process(host, inventory, models, tmp, capsys):
    pid, started = host.main_pid(), starts(host)
    r = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["one"])
    assert r.rc == 0 and r.result(host) == "unchanged", r.out[-3000:]
    assert r.recap(host)["changed"] == 0, r.recap(host)
    assert host.main_pid() == pid and starts(host) == started
    timed("unchanged redeploy", r.seconds, capsys)


def test_second_model_then_rollback_under_load_no_request_fails(host, inventory, models, answers, tmp, capsys):
    """A client loop on systemd's socket through a model-only deploy and `make rollback`: every
    request answered 200, the service started exactly once each way, the answers switch."""
    pid0, started = host.main_pid(), starts(host)
    with Clients(host) as clients:
        wait_until("the first answers", lambda: clients.seen or clients.failures)
        r2 = fleet_cmd("deploy", inventory, tmp=tmp, bundle=models["two"])
        pid1, started1 = host.main_pid(), starts(host)
        r3 = fleet_cmd("rollback", inventory, tmp=tmp)
        pid2, started2 = host.main_pid(), starts(host)
        clients.until("20 answers after the rollback", lambda: len(clients.seen) >= 3 and clients.seen[-1][2] >= 20)
    seen, failures = clients.seen, clients.failures
    assert r2.rc == 0 and r2.result(host) == "deployed", r2.out[-3000:]
    assert r3.rc == 0 and r3.result(host) == "rolled back", r3.out[-3000:]
    assert (started1 - started, started2 - started1) == (1, 1)  # exactly one start each way
    assert pid0 != pid1 != pid2 != pid0
    assert not failures, failures[:5]
    assert [f32(f) for _, f, _ in seen] == [f32(answers[m]) for m in ("one", "two", "one")], seen
    s = overlay_state(host)
    assert (s["current"], s["previous"]) == (f"releases/{sha12(models['one'])}", f"releases/{sha12(models['two'])}")
    timed("model-only update", r2.seconds, capsys)
    timed("rollback", r3.seconds, capsys)
    with capsys.disabled():
        print(f"  systemd host: requests answered across the update and the rollback: {sum(n for *_, n in seen)}, "
              f"none failed; models in order: {', '.join(f'{m[:12]} x{n}' for m, _, n in seen)}")


def test_a_service_that_never_becomes_healthy_is_rolled_back(host, inventory, models, answers, tmp, capsys):
    """The switch and the restart happen under systemd, then /healthz never answers 200 in
    time (the health URL points at a port nothing serves): the links go back, the service is
    restarted on the old release and answers for it, the host is reported rolled back."""
    before, pid0 = overlay_state(host), host.main_pid()
    r = fleet_cmd("deploy", inventory, "-e", "edge_healthz_url=http://127.0.0.1:9/healthz",
                  "-e", "edge_healthz_timeout=2", tmp=tmp, bundle=models["three"])
    assert r.rc == 2, r.out[-3000:]
    assert r.result(host).startswith("rolled back: Wait for /healthz to answer 200"), r.report
    assert (overlay_state(host)["current"], overlay_state(host)["previous"]) == (before["current"], before["previous"])
    assert host.systemctl("is-active", "edge-model.service") == "active"
    assert host.main_pid() != pid0  # restarted on the new release, then on the old one
    assert f32(ask(host)[1]) == f32(answers["one"])
    with capsys.disabled():
        print(f"\n  systemd host: unhealthy after the switch, rolled back: {r.seconds:.1f} s")


def test_the_units_sandbox_holds_under_the_real_manager(host, answers):
    """Every sandbox option of edge-model.service is in force on the running process, and it
    still predicts: not only what `systemd-analyze security` reads from the file."""
    pid = host.host_pid()
    assert pid, host.systemctl("status", "edge-model.service")
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    passwd = {ln.split(":")[0]: ln.split(":")[2] for ln in host.path("/etc/passwd").read_text().splitlines()}
    assert fields["Uid"].split()[0] == passwd["edge-model"]  # User=edge-model
    assert fields["NoNewPrivs"] == "1"  # NoNewPrivileges=yes
    assert fields["Seccomp"] == "2"  # SystemCallFilter=
    assert int(fields["CapBnd"], 16) == 0 and int(fields["CapEff"], 16) == 0  # CapabilityBoundingSet=
    # PrivateNetwork=yes: a network namespace of its own, not the one systemd listens in.
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink(f"/proc/{host.leader}/ns/net")
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    by_point = {m.split()[4]: m.split()[5] for m in mounts}
    assert by_point["/"].startswith("ro"), by_point["/"]  # ProtectSystem=strict
    assert "/home" not in by_point or by_point["/home"].startswith("ro")  # ProtectHome=yes (an empty, read-only /home)
    props = {"NoNewPrivileges": "yes", "PrivateNetwork": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
             "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
             "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
             "ProtectClock": "yes", "ProtectHostname": "yes", "ProtectProc": "invisible", "RestrictNamespaces": "yes",
             "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
             "MemoryDenyWriteExecute": "yes", "RemoveIPC": "yes", "UMask": "0077", "MemoryMax": str(512 << 20),
             "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}  # as systemctl sorts them
    shown = dict(ln.split("=", 1) for ln in host.systemctl("show", "-p", ",".join(props), "edge-model.service")
                 .splitlines())
    assert shown == props
    assert f32(ask(host)[1]) == f32(answers["one"])


def test_without_the_service_a_missing_edge_root_is_refused_with_what_to_do(host, inventory, models, tmp):
    """edge_service off: the deploy uses no become, so a missing edge_root that pi cannot create
    (under root's /srv) is refused with one line naming the command to run once."""
    r = fleet_cmd("deploy", inventory, "-e", "edge_service=false", "-e", "edge_root=/srv/edge-off",
                  tmp=tmp, bundle=models["one"])
    assert r.rc != 0, r.out[-3000:]
    assert r.result(host) == (
        "refused: /srv/edge-off does not exist and cannot be created by pi; create it once with "
        "`sudo install -d -o pi -g pi /srv/edge-off`, or set edge_service=true (the deploy then creates it "
        "with sudo), or set edge_root to a folder that user owns"), r.report
    assert not host.path("/srv/edge-off").exists()


# --- reload, a crash, a hang (issue 19, section 2) ------------------------------------------------
# The service's start rate limit (StartLimitBurst=5 in StartLimitIntervalSec=300) counts every
# start since the last daemon-reload, a `systemctl restart` as much as a crash's restart (the
# 6th restart in a row is refused with start-limit-hit; a deploy's daemon-reload clears the
# count, a rollback's restart does not; the role's reset-failed after a healthy restart does,
# which the first test below proves). The watchdog test flushes the count itself first with
# `systemctl reset-failed` (as docs/serving.md tells an operator), which also sets NRestarts to 0.

def test_reload_swaps_the_model_in_the_same_process_and_no_request_fails(host, models, answers, capsys):
    """`current` repointed to the previous release (the deploy's own relink, no restart), then
    `systemctl reload` (SIGHUP) under a client loop: the answers switch to that model in the
    same process, no request fails; and back the same way, so the links are as before."""
    one, two = sha12(models["one"]), sha12(models["two"])
    assert (overlay_state(host)["current"], overlay_state(host)["previous"]) == (f"releases/{one}", f"releases/{two}")
    pid0, started0, reloads0 = host.main_pid(), starts(host), journal(host).count("serve: reloaded: model ")

    def serving(name):
        return lambda: clients.seen and f32(clients.seen[-1][1]) == f32(answers[name]) and clients.seen[-1][2] >= 20

    with Clients(host) as clients:
        clients.until("20 answers of the first model", serving("one"))
        relink(host, two, one)
        host.systemctl("reload", "edge-model.service")
        clients.until("20 answers of the second model after the reload", serving("two"))
        relink(host, one, two)
        host.systemctl("reload", "edge-model.service")
        clients.until("20 answers of the first model again", lambda: len(clients.seen) >= 3 and serving("one")())
    assert not clients.failures, clients.failures[:5]
    assert [f32(f) for _, f, _ in clients.seen] == [f32(answers[m]) for m in ("one", "two", "one")], clients.seen
    assert host.main_pid() == pid0 and starts(host) == started0  # swapped in the process, never restarted
    # serve logs each swap once done; journald may write it a moment after the answers changed.
    swaps = re.findall(r"^serve: reloaded: model (\w+) -> (\w+) from ", journal_until(
        host, "both swaps in the journal", lambda log: log.count("serve: reloaded: model ") >= reloads0 + 2), re.M)
    swaps = swaps[reloads0:]
    models_seen = [m[:12] for m, _, _ in clients.seen]
    assert swaps == [(models_seen[0], models_seen[1]), (models_seen[1], models_seen[2])], swaps
    assert (overlay_state(host)["current"], overlay_state(host)["previous"]) == (f"releases/{one}", f"releases/{two}")
    with capsys.disabled():
        print(f"\n  systemd host: reload there and back under load: {clients.answered} requests answered, none failed; "
              f"models in order: {', '.join(f'{m[:12]} x{n}' for m, _, n in clients.seen)}; MainPID {pid0} throughout")


def test_restarts_by_deploys_leave_the_crash_its_restart(host, inventory, models, tmp):
    """Five starts in a row, as an operator's restarts and two `make rollback` (there and back)
    make them: each healthy restart by the role ends with `systemctl reset-failed`, so the start
    rate limit still has room for the crash's restart that the next test causes (without it,
    systemd would refuse that 6th start with start-limit-hit and leave the service dead)."""
    for _ in range(3):
        r = host.nsenter("systemctl", "restart", "edge-model.service", timeout=FAILSAFE)
        assert r.returncode == 0, r.stderr
    for _ in range(2):
        r = fleet_cmd("rollback", inventory, tmp=tmp)
        assert r.rc == 0 and r.result(host) == "rolled back", r.out[-3000:]
    assert overlay_state(host)["current"] == f"releases/{sha12(models['one'])}"
    assert host.show("edge-model.service", "NRestarts") == "0"  # reset-failed zeroes it


def test_kill_9_is_restarted_by_systemd_and_requests_queued_meanwhile_are_answered(host, answers, capsys):
    """SIGKILL to the main process: systemd restarts it (Restart=on-failure, NRestarts + 1), and
    the requests that reached systemd's socket while no process served it are answered by the
    new one. The client loop pauses for the kill itself (a killed process takes the connections
    it had accepted with it: those nobody can answer), and resumes once the process is gone."""
    pid0, n0, victim = host.main_pid(), restarts(host), host.host_pid()  # no reset-failed here: the test above
    kills0 = journal(host).count("Main process exited, code=killed, status=9/KILL")
    assert victim, host.systemctl("status", "edge-model.service")
    with Clients(host, threads=4) as clients:
        clients.until("20 answers before the kill", lambda: clients.answered >= 20)
        clients.pause()
        before = len(clients.requests)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until("the killed process gone", lambda: gone(victim))
        clients.resume()  # from here every request waits in systemd's socket for the next process
        pid1 = wait_until("a new main process, active", lambda: restarted(host, pid0))
        active = time.monotonic()
        clients.until("20 answers after the restart", lambda: len(clients.requests) >= before + 20)
    forked = exec_main_start(host)
    assert not clients.failures, clients.failures[:5]
    assert restarts(host) == n0 + 1
    journal_until(host, "systemd's line about the kill", lambda log: log.count(
        "Main process exited, code=killed, status=9/KILL") > kills0)
    after = clients.requests[before:]
    queued = [(s, a) for s, a in after if s < forked]  # sent before the new process existed
    assert queued, (forked, after[:5])  # RestartSec=5s: the resumed clients send long before
    assert all(f32(f) == f32(answers["one"]) for _, f, _ in clients.seen), clients.seen
    first = min(a for _, a in after)
    with capsys.disabled():
        print(f"\n  systemd host: kill -9 (MainPID {pid0} -> {pid1}, NRestarts {n0} -> {n0 + 1}): new process active "
              f"{active - killed:.1f} s after the kill, first answer {first - killed:.1f} s after it; "
              f"{len(queued)} requests sent while no process served were answered; "
              f"{clients.answered} requests answered in all, none failed")


def test_a_stopped_service_is_killed_by_the_watchdog_and_restarted_within_twice_watchdogsec(host, answers, capsys):
    """SIGSTOP to the main process (a hang: the process is there, Restart= alone sees nothing):
    no WATCHDOG=1 comes, systemd logs the watchdog timeout, kills it (WatchdogSignal=SIGKILL)
    and Restart= starts a new one, within twice WatchdogSec of the stop; the requests sent
    during the stop wait in systemd's socket and the new process answers them."""
    host.systemctl("reset-failed", "edge-model.service")  # the start rate limit: see above
    span = host.show("edge-model.service", "WatchdogUSec")
    limit = seconds_of(span)
    assert limit > 0, span
    pid0, n0, victim = host.main_pid(), restarts(host), host.host_pid()
    log0 = journal(host)
    timeouts0, failed0 = log0.count(f"Watchdog timeout (limit {span})!"), log0.count("Failed with result 'watchdog'.")
    assert victim, host.systemctl("status", "edge-model.service")
    with Clients(host, threads=2) as clients:
        clients.until("20 answers before the stop", lambda: clients.answered >= 20)
        clients.pause()
        before = len(clients.requests)
        halted = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        wait_until("every thread of the service stopped", lambda: stopped(victim) or gone(victim))
        clients.resume()  # these requests wait: the stopped process accepts nothing
        when_gone = []

        def back():
            if not when_gone and gone(victim):
                when_gone.append(time.monotonic())
            return restarted(host, pid0)

        pid1 = wait_until("the watchdog's kill and a new main process, active", back)
        active = time.monotonic()
        clients.until("20 answers after the restart", lambda: len(clients.requests) >= before + 20)
    forked = exec_main_start(host)
    took = active - halted
    assert took <= 2 * limit, f"restarted {took:.1f} s after SIGSTOP, more than twice WatchdogSec={span}"
    assert not clients.failures, clients.failures[:5]
    assert restarts(host) == n0 + 1
    timeout = f"Watchdog timeout (limit {span})!"  # systemd 252's words, as it logs them for the unit
    log = journal_until(host, "systemd's watchdog lines", lambda log: log.count(timeout) > timeouts0
                        and log.count("Failed with result 'watchdog'.") > failed0)
    assert log.count(timeout) == timeouts0 + 1, log[-3000:]
    after = clients.requests[before:]
    queued = [(s, a) for s, a in after if s < forked]  # sent during the stop, answered by the new process
    assert queued, (forked, after[:5])
    assert all(f32(f) == f32(answers["one"]) for _, f, _ in clients.seen), clients.seen
    first = min(a for _, a in after)
    with capsys.disabled():
        print(f"\n  systemd host: SIGSTOP, WatchdogSec={span}: killed by the watchdog "
              f"{(when_gone or [active])[0] - halted:.1f} s after the stop, new process active {took:.1f} s after it "
              f"(bound: {2 * limit:g} s), first answer {first - halted:.1f} s after it; MainPID {pid0} -> {pid1}, "
              f"NRestarts {n0} -> {n0 + 1}; {len(queued)} requests sent during the stop were answered; "
              f"{clients.answered} answered in all, none failed")


# --- two deploys of one bundle at once (issue 27, section 4) -----------------------------------

def device_lock(host) -> HeldLock:
    """edge_root/.deploy.lock held by this test, in a file owned by the deploy user (pi), who must open it too."""
    pi = next(ln.split(":") for ln in host.path("/etc/passwd").read_text().splitlines() if ln.startswith("pi:"))
    return HeldLock(host.path(host.edge_root / ".deploy.lock"), owner=(int(pi[2]), int(pi[3])))


def start_deploy(inventory: Path, bundle: Path, tmp: Path) -> tuple[subprocess.Popen, Path]:
    """`python -m deploy deploy` started, as fleet_cmd runs it; its table's JSON goes to the path returned."""
    report = tmp / f"deploy-{time.monotonic_ns()}.json"
    e = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
         "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"), "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
         "ANSIBLE_NOCOLOR": "1"}
    p = subprocess.Popen([sys.executable, "-m", "deploy", "deploy", "--inventory", str(inventory), "--bundle",
                          str(bundle), "--report", str(report)], cwd=ROOT, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p, report


def restart_tasks(out: str) -> int:
    """How many times a deploy's output shows the role restarting the service (the restart task, changed)."""
    tasks = out.split("\nTASK [")[1:]
    return sum(1 for s in tasks if s.startswith("edge : Restart the service and wait for /healthz") and "\nchanged: " in s)


def test_two_deploys_of_one_bundle_at_once_restart_the_service_once(host, inventory, models, answers, tmp,
                                                                     capsys):
    """Two `make deploy` of the same new bundle at once, both past their probe (they decided the
    release is new) and waiting at the device's lock, which this test holds: once it is free,
    the first deploys and restarts the service; the second, under the lock, finds that release
    current and reports `unchanged` (changed=0), with no restart of its own: one start in all."""
    three = sha12(models["three"])
    before = overlay_state(host)
    assert before["current"] != f"releases/{three}", before
    started, pid0 = starts(host), host.main_pid()
    held = device_lock(host)
    runs = []
    try:
        runs = [start_deploy(inventory, models["three"], tmp) for _ in range(2)]

        def both_at_the_lock():
            assert all(p.poll() is None for p, _ in runs), "a deploy ended while the lock was held"
            return len(held.waiters()) == 2

        wait_until("both deploys' release.py at the device's lock", both_at_the_lock)
        assert overlay_state(host) == before and starts(host) == started  # neither switched while it waited
    finally:
        held.release()
        done = [(p.communicate(timeout=FAILSAFE)[0], report) for p, report in runs]
    rows = [json.loads(report.read_text())[host.name] if report.exists() else {} for _, report in done]
    assert [p.returncode for p, _ in runs] == [0, 0], [out[-3000:] for out, _ in done]
    assert sorted(r["result"] for r in rows) == ["deployed", "unchanged"], rows
    first, second = sorted(range(2), key=lambda i: rows[i]["result"])  # "deployed" sorts first
    recaps = [{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", re.search(
        rf"^{re.escape(host.name)}\s+: (.*)$", out, re.M)[1])} for out, _ in done]
    assert recaps[second]["changed"] == 0, (recaps, done[second][0][-3000:])
    assert [restart_tasks(done[first][0]), restart_tasks(done[second][0])] == [1, 0]
    assert rows[second]["previous"] == three, rows  # what it found under the lock, not what its probe saw
    s = overlay_state(host)
    assert (s["current"], s["previous"]) == (f"releases/{three}", before["current"]), s
    journal_until(host, "the restart in the journal", lambda log: len(re.findall(
        r"^Started edge-model\.service", log, re.M)) >= started + 1)
    assert starts(host) == started + 1 and host.main_pid() != pid0  # one restart in all
    assert f32(ask(host)[1]) == f32(answers["three"])
    with capsys.disabled():
        print(f"\n  systemd host: two deploys of one bundle at once: {rows[first]['result']} and "
              f"{rows[second]['result']}, one restart (MainPID {pid0} -> {host.main_pid()})")


def test_deploy_times_to_the_systemd_host(capsys):
    """The four deploy times together (the tests above measured them)."""
    if len(TIMES) < 4:
        pytest.skip("the lifecycle tests above did not all run")
    with capsys.disabled():
        print("\n  systemd host deploy times: " + "; ".join(f"{k}: {v:.1f} s" for k, v in TIMES.items()))
