"""One mail's life — the pure decider (stream ``mail-<mail_id>``).

queued → (deferred: a transient failure, retried after a backoff)* → sent | failed.
A mail is queued once (a second ``QueueMail`` for the same mail id decides nothing), an
attempt is recorded only while the mail is queued, and ``mail_sent`` ends it: the service sends
over SMTP only when the folded stream says ``queued``, so a redelivered event, a retry timer
racing the first attempt, or a second notifier process never sends it again.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from contracts import notifier as contract
from contracts.events import NewEvent, RecordedEvent

NONE = "none"
SENT_OK = "sent"
TRANSIENT = "transient"
PERMANENT = "permanent"


@dataclass(frozen=True)
class Mail:
    mail_id: str | None = None
    status: str = NONE
    template: str | None = None
    customer_number: str | None = None
    to: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    sender: dict = field(default_factory=dict)
    message_id: str | None = None
    queued_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    version: int = 0


initial_mail = Mail()


def evolve(state: Mail, event: RecordedEvent | NewEvent) -> Mail:
    d, t = event.data, event.type
    if t == contract.MAIL_QUEUED.name:
        state = replace(state, mail_id=d["mail_id"], status=contract.QUEUED, template=d["template"],
                        customer_number=d.get("customer_number"), to=tuple(d.get("to") or ()),
                        params=dict(d.get("params") or {}), sender=dict(d.get("sender") or {}),
                        message_id=d["message_id"], queued_at=_time(d["queued_at"]))
    elif t == contract.MAIL_DEFERRED.name:
        state = replace(state, attempts=d["attempt"], last_error=d.get("error"))
    elif t == contract.MAIL_SENT.name:
        state = replace(state, status=contract.SENT, attempts=d["attempt"])
    elif t == contract.MAIL_FAILED.name:
        state = replace(state, status=contract.FAILED, attempts=d["attempts"], last_error=d.get("error"))
    return replace(state, version=getattr(event, "stream_version", state.version + 1))


def fold(events) -> Mail:
    state = initial_mail
    for e in events:
        state = evolve(state, e)
    return state


def _time(value):
    return value if isinstance(value, datetime) or value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class QueueMail:
    mail_id: str
    template: str
    customer_number: str | None
    to: tuple[str, ...]
    params: dict
    sender: dict
    message_id: str
    source_event_id: str
    source_event_type: str
    now: datetime


@dataclass(frozen=True)
class RecordAttempt:
    outcome: str                 # sent | transient | permanent
    error: str | None
    now: datetime
    max_attempts: int
    retry_base: timedelta
    retry_max: timedelta


def backoff(attempt: int, base: timedelta, cap: timedelta) -> timedelta:
    """Wait after the ``attempt``-th failure: base, 2·base, 4·base, … capped."""
    return min(cap, base * (2 ** max(attempt - 1, 0)))


def decide(cmd, state: Mail) -> list[NewEvent]:
    if isinstance(cmd, QueueMail):
        if state.status != NONE:
            return []
        return [NewEvent(contract.MAIL_QUEUED.name, {
            "mail_id": cmd.mail_id, "template": cmd.template, "customer_number": cmd.customer_number,
            "to": list(cmd.to), "params": cmd.params, "sender": cmd.sender, "message_id": cmd.message_id,
            "source_event_id": cmd.source_event_id, "source_event_type": cmd.source_event_type,
            "queued_at": cmd.now.isoformat()})]
    if isinstance(cmd, RecordAttempt):
        if state.status != contract.QUEUED:
            return []
        attempt = state.attempts + 1
        if cmd.outcome == SENT_OK:
            return [NewEvent(contract.MAIL_SENT.name, {
                "mail_id": state.mail_id, "attempt": attempt, "message_id": state.message_id,
                "sent_at": cmd.now.isoformat()})]
        if cmd.outcome == TRANSIENT and attempt < cmd.max_attempts:
            return [NewEvent(contract.MAIL_DEFERRED.name, {
                "mail_id": state.mail_id, "attempt": attempt, "error": cmd.error,
                "next_attempt_at": (cmd.now + backoff(attempt, cmd.retry_base, cmd.retry_max)).isoformat()})]
        return [NewEvent(contract.MAIL_FAILED.name, {
            "mail_id": state.mail_id, "attempts": attempt, "error": cmd.error,
            "permanent": cmd.outcome == PERMANENT, "failed_at": cmd.now.isoformat()})]
    raise TypeError(f"unknown command {type(cmd).__name__}")
