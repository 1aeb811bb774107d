"""One HTTP request to a test server, its answer parsed: shared by the serve tests."""

from __future__ import annotations

import http.client
import json

from tests.conftest import Server


def request(server: Server, method: str, path: str, body=None, headers=None, conn=None):
    """(status, headers, parsed JSON or text) for one request, on ``conn`` or a new connection."""
    c = conn or http.client.HTTPConnection(server.host, server.port, timeout=60)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse()
    raw = r.read()
    if conn is None:
        c.close()
    doc = json.loads(raw) if r.getheader("Content-Type", "").startswith("application/json") else raw.decode()
    return r.status, r, doc
