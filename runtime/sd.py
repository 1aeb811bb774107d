"""systemd's two protocols `serve` speaks, in plain stdlib sockets (no python-systemd).

- Socket activation (sd_listen_fds(3)): systemd passes the listening socket as fd 3 and says
  so in ``LISTEN_FDS`` and ``LISTEN_PID``.
- sd_notify(3): one datagram per state change (``READY=1``, ``RELOADING=1``, ``STOPPING=1``)
  to the Unix socket in ``NOTIFY_SOCKET``, and ``WATCHDOG=1`` as the watchdog's keep-alive
  when the unit sets ``WatchdogSec=`` (sd_watchdog_enabled(3): ``WATCHDOG_USEC``, ``WATCHDOG_PID``).

Named ``sd`` (not ``systemd``): ``runtime/systemd/`` is the folder of unit files.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """The first socket systemd passed to this process, or None when it passed none.

    The variables are removed from the environment (they are not meant for our children).
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0") or 0) < 1:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def notify(message: str) -> str | None:
    """Send ``message`` to $NOTIFY_SOCKET (a leading @ is the abstract namespace).

    Returns None when it was sent or there is no NOTIFY_SOCKET, else why it could not be.
    """
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return None
    address = "\0" + where[1:] if where.startswith("@") else where
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        return f"cannot notify systemd at {where}: {e.strerror or e}"
    return None


def watchdog_seconds() -> tuple[float | None, str | None]:
    """The watchdog interval systemd asks this process to keep, as sd_watchdog_enabled(3) reads it.

    ``WATCHDOG_USEC`` (microseconds, a positive integer) asks for a ``WATCHDOG=1`` more often
    than that; ``WATCHDOG_PID``, when set, names the process it is meant for, and a process
    with another PID (one that merely inherited the environment) must not answer it. Both
    variables are removed from the environment (they are not meant for our children).

    Returns (seconds, None), (None, None) when no watchdog is asked of this process, or
    (None, why) when the variables cannot be read.
    """
    usec, pid = os.environ.pop("WATCHDOG_USEC", None), os.environ.pop("WATCHDOG_PID", None)
    if usec is None:
        return None, None
    if pid is not None:
        if not (pid.isascii() and pid.isdigit()):
            return None, f"WATCHDOG_PID={pid!r}: expected a process ID; not pinging the watchdog"
        if int(pid) != os.getpid():
            return None, None  # meant for another process (our parent, most likely)
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None, f"WATCHDOG_USEC={usec!r}: expected a positive number of microseconds; not pinging the watchdog"
    return int(usec) / 1e6, None
