"""systemd's two protocols `serve` speaks, in plain stdlib sockets (no python-systemd).

- Socket activation (sd_listen_fds(3)): systemd passes the listening socket as fd 3 and says
  so in ``LISTEN_FDS`` and ``LISTEN_PID``.
- sd_notify(3): one datagram per state change (``READY=1``, ``RELOADING=1``, ``STOPPING=1``)
  to the Unix socket in ``NOTIFY_SOCKET``.

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
