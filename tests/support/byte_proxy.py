"""An ssh ProxyCommand that counts bytes: `python byte_proxy.py HOST PORT LOG` relays stdin/stdout
to HOST:PORT and, when the connection ends (or ssh ends it with SIGHUP), appends "<bytes sent> <bytes received>" to LOG.
The deploy tests measure what a model-only update sends to a device with it."""

import os
import signal
import socket
import sys
import threading

host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = socket.create_connection((host, port))
sent = 0


def upstream() -> None:
    global sent
    while chunk := os.read(0, 65536):
        sent += len(chunk)
        conn.sendall(chunk)
    conn.shutdown(socket.SHUT_WR)


def done(*_) -> None:
    with open(log, "a") as f:
        f.write(f"{sent} {received}\n")
    os._exit(0)


# ssh ends its ProxyCommand with SIGHUP (or SIGTERM) once the session is over.
signal.signal(signal.SIGHUP, done)
signal.signal(signal.SIGTERM, done)
received = 0
t = threading.Thread(target=upstream, daemon=True)
t.start()
while chunk := conn.recv(65536):
    received += len(chunk)
    os.write(1, chunk)
done()
