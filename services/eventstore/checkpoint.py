"""Signed checkpoints of the event log's head (issue 6 item 3, R-PLT-4).

A checkpoint is the head's global position and chain link, signed with HMAC-SHA256. Because
every link hashes the previous link, the link at position N commits to the whole log up to N:
an auditor who keeps a checkpoint outside the database can later prove that the log still
*extends* it. That catches what `verify` alone cannot: a cut tail (the last rows deleted, so
the shorter chain is still internally consistent) and a rewritten tail.

HMAC rather than Ed25519: the bank's auditors verify with the same tool and key (from the
environment, `AUDIT_CHECKPOINT_KEY`, e.g. `openssl rand -hex 32`), so a public-key pair buys
nothing here, and a shared secret is one environment variable like the field keys.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone

ALGORITHM = "HMAC-SHA256"
FORMAT = "tsunagi-checkpoint/1"
KEY_ENV = "AUDIT_CHECKPOINT_KEY"


class CheckpointError(ValueError):
    """The checkpoint is malformed or its signature does not match."""


def _signed_bytes(body: dict) -> bytes:
    # Sorted keys, no spaces: the same bytes whatever wrote or re-indented the file.
    return json.dumps({k: body[k] for k in ("format", "alg", "position", "link", "created_at")},
                      sort_keys=True, separators=(",", ":")).encode()


def sign(position: int, link: str, key: bytes, *, now: datetime | None = None) -> dict:
    if not key:
        raise CheckpointError(f"no signing key: set {KEY_ENV}")
    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat()
    body = {"format": FORMAT, "alg": ALGORITHM, "position": int(position), "link": link,
            "created_at": created}
    body["mac"] = hmac.new(key, _signed_bytes(body), hashlib.sha256).hexdigest()
    return body


def check(checkpoint: dict, key: bytes) -> tuple[int, str]:
    """Return (position, link) of a checkpoint whose signature is valid; raise otherwise."""
    if not key:
        raise CheckpointError(f"no signing key: set {KEY_ENV}")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("checkpoint"), dict):
        checkpoint = checkpoint["checkpoint"]   # the whole `verify --checkpoint --json` output
    try:
        if checkpoint["format"] != FORMAT or checkpoint["alg"] != ALGORITHM:
            raise CheckpointError(f"unsupported checkpoint format {checkpoint['format']!r}/"
                                  f"{checkpoint['alg']!r}")
        want = hmac.new(key, _signed_bytes(checkpoint), hashlib.sha256).hexdigest()
        position, link, mac = int(checkpoint["position"]), str(checkpoint["link"]), str(checkpoint["mac"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"malformed checkpoint: {exc}") from None
    if not hmac.compare_digest(want, mac):
        raise CheckpointError("checkpoint signature does not match (wrong key or edited file)")
    return position, link


def link_at(conn, position: int) -> str | None:
    row = conn.execute("SELECT encode(link, 'hex') FROM eventstore.log WHERE global_position = %s",
                       (position,)).fetchone()
    return row[0] if row else None
