"""One JSON request to a gateway on loopback, answered as (status, headers, parsed body)."""
from __future__ import annotations

import http.client
import json


def http_json(port: int, method: str, path: str, body=None, token=None, headers=None, *,
              raw: bytes | None = None, timeout: float = 30):
    """``body`` is sent as JSON (else ``raw`` as it is), ``token`` as a bearer header; a fresh
    connection each time, so nothing pooled hides what the server did. The body is None when empty."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = dict(headers or {})
    if body is not None:
        raw = json.dumps(body, ensure_ascii=False).encode()
    if raw is not None:
        sent["Content-Type"] = "application/json"
    if token:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=raw, headers=sent)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, resp.headers, (json.loads(payload) if payload else None)
    finally:
        conn.close()
