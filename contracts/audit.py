"""The auditors' own events (issue 6 item 2, R-PLT-4).

Stream: ``auditreveal-<uuid>`` (one per reveal). Written by the `tsunagi audit` command, not by
a service: reading the log changes nothing, but showing personal fields in clear is itself an
act an auditor must answer for, so every ``--reveal`` is recorded before anything is shown.
"""
from __future__ import annotations

from contracts.events import register

SOURCE = "audit"
REVEAL_CATEGORY = "auditreveal"


def reveal_stream(reveal_id: str) -> str:
    return f"{REVEAL_CATEGORY}-{reveal_id}"


AUDIT_REVEAL = register(
    "audit_reveal", SOURCE,
    description="An auditor asked to see personal fields of the log in clear. Actor: kind "
                "'auditor', id = the auditor's name. data: command ('events' | 'journey'), "
                "filters (the query as given), reason (free text or null).")
