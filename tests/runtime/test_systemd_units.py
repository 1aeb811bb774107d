"""The systemd units the bundle ships (runtime/systemd/ -> systemd/ in the bundle).

Three kinds of check, none timed:
- the directives docs/serving.md promises are there, with the promised values; each promise is
  also checked to fail when its directive is removed, so the list cannot pass vacuously;
- `systemd-analyze verify` accepts both units with no warning about them (skipped where
  systemd-analyze is not installed; PID 1 need not be systemd, so the units are never started);
- ExecStart, expanded as systemd expands it, runs `<bundle>/.venv/bin/python
  <bundle>/runtime serve --bundle <bundle>` in the process systemd started (env execs), so
  python is the main PID that NotifyAccess=main, $MAINPID and LISTEN_PID mean;
- WatchdogSec=, as `systemd-analyze timespan` parses it into WATCHDOG_USEC, is what serve reads.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.support.core import ROOT

UNITS = ROOT / "runtime" / "systemd"
SERVICE, SOCKET = "edge-model.service", "edge-model.socket"
DEFAULT_BUNDLE = "/opt/edge-model/current"


# --- reading unit files (systemd.syntax(7)) ---------------------------------------------

def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; an empty assignment clears the list, as in systemd."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    lines = iter(text.splitlines())
    for line in lines:
        while line.endswith("\\"):  # a trailing backslash continues the line
            line = line[:-1] + " " + next(lines, "")
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, eq, value = line.partition("=")
        assert eq and section, f"not a unit file line: {line!r}"
        values = out[section].setdefault(key.strip(), [])
        value = value.strip()
        if value:
            values.append(value)
        else:
            values.clear()
            values.append("")  # present, and empty (CapabilityBoundingSet=)
    return out


def read(name: str) -> str:
    return (UNITS / name).read_text()


def environment(service: dict) -> dict[str, str]:
    """The service's Environment= assignments (each value is a list of quoted KEY=VALUE words)."""
    env: dict[str, str] = {}
    for assignment in service["Service"].get("Environment", []):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def expand(command: str, env: dict[str, str]) -> list[str]:
    """An Exec*= line as systemd.service(5) expands it: ${VAR} anywhere in a word stays one
    argument; $VAR as a word of its own is split at whitespace (no word when empty)."""
    argv: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def first(units: dict, name: str, section: str, key: str) -> list[str]:
    return units[name].get(section, {}).get(key, [])


# --- the promises ------------------------------------------------------------------------

def _size_mb(v: str) -> float:
    m = re.fullmatch(r"(\d+)([KMGT]?)", v)
    return int(m.group(1)) * {"": 2 ** -20, "K": 2 ** -10, "M": 1, "G": 1024, "T": 1 << 20}[m.group(2)] if m else 0


def _seconds(v: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|min)?", v)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "min": 60}[m.group(2)] if m else float("inf")


def _exec_start_ok(units: dict) -> bool:
    (cmd,) = first(units, SERVICE, "Service", "ExecStart") or [""]
    words = shlex.split(cmd)
    return (len(words) >= 6 and words[0] == "/usr/bin/env"
            and words[1:6] == ["${EDGE_BUNDLE}/.venv/bin/python", "${EDGE_BUNDLE}/runtime", "serve", "--bundle",
                               "${EDGE_BUNDLE}"])


# (unit, section, key, what is promised, check on the parsed units)
Check = Callable[[dict], bool]


def _is(unit: str, section: str, key: str, value: str) -> tuple[str, str, str, str, Check]:
    return unit, section, key, f"{key}={value}", lambda u: first(u, unit, section, key) == [value]


PROMISES: list[tuple[str, str, str, str, Check]] = [
    # the socket
    (SOCKET, "Socket", "ListenStream", "exactly one ListenStream=127.0.0.1:8080 (the service serves fd 3 only)",
     lambda u: first(u, SOCKET, "Socket", "ListenStream") == ["127.0.0.1:8080"]),
    _is(SOCKET, "Socket", "Accept", "no"),
    (SOCKET, "Socket", "Backlog", "Backlog >= 1024", lambda u: [int(v) >= 1024 for v in
                                                                first(u, SOCKET, "Socket", "Backlog")] == [True]),
    _is(SOCKET, "Install", "WantedBy", "sockets.target"),
    # the service and its socket
    (SERVICE, "Unit", "Requires", "Requires=edge-model.socket",
     lambda u: SOCKET in " ".join(first(u, SERVICE, "Unit", "Requires")).split()),
    (SERVICE, "Unit", "After", "After=edge-model.socket",
     lambda u: SOCKET in " ".join(first(u, SERVICE, "Unit", "After")).split()),
    _is(SERVICE, "Service", "Type", "notify"),
    _is(SERVICE, "Service", "NotifyAccess", "main"),
    (SERVICE, "Service", "Environment", f"Environment=EDGE_BUNDLE={DEFAULT_BUNDLE}",
     lambda u: environment(u[SERVICE]).get("EDGE_BUNDLE") == DEFAULT_BUNDLE),
    (SERVICE, "Service", "ExecStart", "ExecStart=/usr/bin/env ${EDGE_BUNDLE}/.venv/bin/python ${EDGE_BUNDLE}/runtime "
                                      "serve --bundle ${EDGE_BUNDLE} ...", _exec_start_ok),
    (SERVICE, "Service", "ExecReload", "ExecReload=/bin/kill -HUP $MAINPID",
     lambda u: [shlex.split(v) for v in first(u, SERVICE, "Service", "ExecReload")]
     == [["/bin/kill", "-HUP", "$MAINPID"]]),
    _is(SERVICE, "Service", "Restart", "on-failure"),  # a watchdog kill is a failure too
    # The watchdog: long enough that a slow Pi's largest normal request (--max-values) cannot
    # starve a ping (docs/serving.md), short enough that a hung service is back within a minute.
    (SERVICE, "Service", "WatchdogSec", "WatchdogSec between 10 s and 30 s",
     lambda u: [10 <= _seconds(v) <= 30 for v in first(u, SERVICE, "Service", "WatchdogSec")] == [True]),
    _is(SERVICE, "Service", "WatchdogSignal", "SIGKILL"),
    (SERVICE, "Service", "RestartSec", "a RestartSec", lambda u: len(first(u, SERVICE, "Service", "RestartSec")) == 1),
    (SERVICE, "Service", "TimeoutStopSec", "TimeoutStopSec bounded (<= 60 s)",
     lambda u: [_seconds(v) <= 60 for v in first(u, SERVICE, "Service", "TimeoutStopSec")] == [True]),
    _is(SERVICE, "Service", "User", "edge-model"),
    # hardening
    _is(SERVICE, "Service", "NoNewPrivileges", "yes"),
    _is(SERVICE, "Service", "ProtectSystem", "strict"),
    _is(SERVICE, "Service", "ProtectHome", "yes"),
    _is(SERVICE, "Service", "PrivateTmp", "yes"),
    _is(SERVICE, "Service", "PrivateDevices", "yes"),
    _is(SERVICE, "Service", "ProtectKernelTunables", "yes"),
    _is(SERVICE, "Service", "ProtectKernelModules", "yes"),
    _is(SERVICE, "Service", "ProtectControlGroups", "yes"),
    _is(SERVICE, "Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    _is(SERVICE, "Service", "RestrictNamespaces", "yes"),
    _is(SERVICE, "Service", "LockPersonality", "yes"),
    _is(SERVICE, "Service", "MemoryDenyWriteExecute", "yes"),
    (SERVICE, "Service", "SystemCallFilter", "SystemCallFilter=@system-service",
     lambda u: "@system-service" in first(u, SERVICE, "Service", "SystemCallFilter")),
    (SERVICE, "Service", "CapabilityBoundingSet", "CapabilityBoundingSet= (empty)",
     lambda u: first(u, SERVICE, "Service", "CapabilityBoundingSet") == [""]),
    (SERVICE, "Service", "MemoryMax", "MemoryMax between 128M and 2G",
     lambda u: [128 <= _size_mb(v) <= 2048 for v in first(u, SERVICE, "Service", "MemoryMax")] == [True]),
]


def broken(service_text: str, socket_text: str) -> list[str]:
    units = {SERVICE: parse(service_text), SOCKET: parse(socket_text)}
    return [f"{unit}: {what}" for unit, _, _, what, check in PROMISES if not check(units)]


def without(text: str, section: str, key: str) -> str:
    """``text`` with every ``key=`` line of ``section`` removed."""
    out, current = [], None
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1]
        elif current == section and not s.startswith(("#", ";")) and s.partition("=")[0].strip() == key:
            continue
        out.append(line)
    return "".join(out)


def test_units_keep_their_promises():
    assert broken(read(SERVICE), read(SOCKET)) == []


@pytest.mark.parametrize("unit,section,key,what", [p[:4] for p in PROMISES], ids=[p[3] for p in PROMISES])
def test_removing_a_promised_directive_is_caught(unit, section, key, what):
    texts = {SERVICE: read(SERVICE), SOCKET: read(SOCKET)}
    removed = without(texts[unit], section, key)
    assert removed != texts[unit], f"{unit} has no {key}= line in [{section}] to remove"
    texts[unit] = removed
    assert f"{unit}: {what}" in broken(texts[SERVICE], texts[SOCKET])


# --- systemd-analyze verify --------------------------------------------------------------

# Where systemd keeps the units of the host: a verify line that starts with one of these
# paths is about a unit our units pull in (sockets.target, multi-user.target, ...), never
# about ours, which are verified from a temporary folder.
HOST_UNIT_DIRS = ("/etc/systemd/", "/run/systemd/", "/lib/systemd/", "/usr/lib/systemd/", "/usr/local/lib/systemd/")


def about_our_units(output: str, ours: tuple[str, ...]) -> list[str]:
    """The lines of ``systemd-analyze verify`` output that may concern our units.

    verify reports a problem as `<file>:<line>: ...` or `<unit name>: ...` (or `Unit <name>
    ...`). Only lines that name a host unit file, or another unit by name and none of ours,
    are left out; every other line counts, including any whose shape is not recognised.
    """
    kept = []
    for line in output.splitlines():
        if not line.strip() or any(name in line for name in ours):
            if line.strip():
                kept.append(line)
            continue
        if line.startswith(HOST_UNIT_DIRS):
            continue
        m = re.match(r"(?:Unit )?([\w@.\\-]+\.(?:service|socket|target|mount|path|timer|slice|scope|device|swap"
                     r"|automount))[: ]", line)
        if m:
            continue  # another unit, by name
        kept.append(line)
    return kept


def verify(*paths: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C"}
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture
def analyze(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    probe = tmp_path / "probe" / "probe-ok.service"
    probe.parent.mkdir()
    probe.write_text("[Service]\nExecStart=/bin/true\n")
    r = verify(probe)
    if r.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {(r.stderr or r.stdout).strip()[:300]}")
    return verify


def fake_bundle(root: Path) -> Path:
    """A bundle folder with what ExecStart names: .venv/bin/python (this Python) and runtime/."""
    bundle = root / "bundle"
    (bundle / ".venv" / "bin").mkdir(parents=True)
    (bundle / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (bundle / "runtime").mkdir()
    return bundle


def installed(tmp_path: Path, bundle: Path, service_text: str | None = None) -> tuple[Path, Path]:
    """Both units copied to a folder of their own, the service's bundle pointed at ``bundle``."""
    d = tmp_path / "units"
    d.mkdir()
    text = service_text if service_text is not None else read(SERVICE)
    assert f"Environment=EDGE_BUNDLE={DEFAULT_BUNDLE}\n" in text
    (d / SERVICE).write_text(text.replace(f"EDGE_BUNDLE={DEFAULT_BUNDLE}", f"EDGE_BUNDLE={bundle}"))
    (d / SOCKET).write_text(read(SOCKET))
    return d / SOCKET, d / SERVICE


def test_systemd_analyze_verify_passes_without_warnings(analyze, tmp_path):
    socket_unit, service_unit = installed(tmp_path, fake_bundle(tmp_path))
    r = analyze(socket_unit, service_unit)
    assert r.returncode == 0, r.stdout + r.stderr
    assert about_our_units(r.stdout + r.stderr, (SERVICE, SOCKET, str(tmp_path))) == []


@pytest.mark.parametrize("old,new,mentioned", [
    # an unknown key is only a warning (exit 0): the check must still see it
    ("Type=notify\n", "Type=notify\nTpye=notify\n", "Tpye"),
    # systemd does not expand variables in the executable: the reason ExecStart starts with env
    ("ExecStart=/usr/bin/env ${EDGE_BUNDLE}/.venv/bin/python", "ExecStart=${EDGE_BUNDLE}/.venv/bin/python",
     "${EDGE_BUNDLE}/.venv/bin/python"),
    # a WatchdogSec= systemd cannot parse is ignored, with a warning: no watchdog at all
    ("WatchdogSec=20s\n", "WatchdogSec=20 parsecs\n", "Failed to parse sec value, ignoring: 20 parsecs"),
], ids=["unknown-key", "variable-executable", "watchdog-sec"])
def test_verify_check_sees_a_broken_service(analyze, tmp_path, old, new, mentioned):
    text = read(SERVICE)
    assert old in text
    socket_unit, service_unit = installed(tmp_path, fake_bundle(tmp_path), text.replace(old, new, 1))
    r = analyze(socket_unit, service_unit)
    found = about_our_units(r.stdout + r.stderr, (SERVICE, SOCKET, str(tmp_path)))
    assert any(mentioned in line for line in found), f"exit {r.returncode}: {found}"


def test_the_noise_filter_keeps_lines_about_our_units():
    ours = (SERVICE, SOCKET, "/tmp/x")
    noise = ("/lib/systemd/system/foo.service:3: Unknown key name 'Bar' in section 'Service', ignoring.\n"
             "foo.service: Command /usr/sbin/foo is not executable: No such file or directory\n")
    mine = ("/tmp/x/units/edge-model.service:9: Unknown key name 'Tpye' in section 'Service', ignoring.\n"
            "edge-model.socket: something\n"
            "Some message of a shape nobody expected\n")
    assert about_our_units(noise + mine, ours) == mine.splitlines()


def test_watchdog_sec_as_systemd_passes_it_is_what_serve_reads(monkeypatch):
    """The unit's WatchdogSec=, parsed by systemd (`systemd-analyze timespan`), is the
    WATCHDOG_USEC serve reads: a ping every half of it."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    from runtime import sd

    (value,) = first({SERVICE: parse(read(SERVICE))}, SERVICE, "Service", "WatchdogSec")
    r = subprocess.run(["systemd-analyze", "timespan", value], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "LC_ALL": "C"})
    assert r.returncode == 0, r.stderr
    usec = next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.strip().startswith("us:"))
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sd.watchdog_seconds() == (_seconds(value), None)


# --- ExecStart, as systemd runs it --------------------------------------------------------

REPORT = """\
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(), "executable": sys.executable,
                  "openblas": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


@pytest.mark.parametrize("serve_args", ["", "--threads 2 --token-file /etc/edge-model/token"])
def test_exec_start_runs_the_bundles_venv_on_its_runtime_in_the_same_process(tmp_path, serve_args):
    service = parse(read(SERVICE))
    bundle = fake_bundle(tmp_path)
    (bundle / "runtime" / "__main__.py").write_text(REPORT)
    env = environment(service)
    assert set(re.findall(r"\$\{?(\w+)", service["Service"]["ExecStart"][0])) <= set(env), \
        "ExecStart uses a variable no Environment= sets (systemd would make it empty)"
    env.update(EDGE_BUNDLE=str(bundle), EDGE_SERVE_ARGS=serve_args)
    argv = expand(service["Service"]["ExecStart"][0], env)
    assert Path(argv[0]).is_absolute() and os.access(argv[0], os.X_OK)
    # systemd starts services in / with a clean environment: PATH and the unit's variables
    proc = subprocess.Popen(argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **env})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out)
    assert seen["argv"] == ["serve", "--bundle", str(bundle), *serve_args.split()]
    assert seen["executable"] == str(bundle / ".venv" / "bin" / "python")
    assert seen["pid"] == proc.pid  # env exec'd python: the main PID systemd signals and hears READY=1 from
    assert seen["openblas"] == "1"
