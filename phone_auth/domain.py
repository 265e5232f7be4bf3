"""The rules of inbound-call verification (SPEC R-INI-4), as a pure decider.

A verification asks the customer to call one toll-free number from their registered phone
within a window (120 s by default). ``decide(command, state)`` answers with the events; it
reads no clock, database or randomness — the service passes the time and the ids in.

- a call from the registered number to that toll-free number inside the window verifies,
  exactly once;
- a withheld caller ID (非通知), another number, the other toll-free number or a late call is a
  failed attempt with its reason, and the customer may call again inside the window;
- the same call twice has one effect (calls are remembered by their key);
- once the window has passed the verification expires — by the timer, or at once when a call
  finds it overdue.

``route_call`` picks which verifications one call concerns, from the read model's rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Iterable, Sequence

from contracts import phone_auth as c
from contracts.errors import Conflict
from contracts.events import NewEvent, RecordedEvent

NONE = "none"
# A call up to this long after the window still counts as the customer's late attempt (so
# the page can say "too late"); later calls from that phone are ordinary unmatched calls.
LATE_CALL_GRACE = timedelta(minutes=10)
# Edges' clocks may run a little ahead or behind ours.
CLOCK_SKEW = timedelta(seconds=5)


@dataclass(frozen=True)
class Verification:
    version: int = 0
    status: str = NONE
    verification_id: str | None = None
    application_id: str | None = None
    customer_number: str | None = None
    caller: str | None = None            # E.164 of the registered phone
    call_to: str | None = None           # E.164 of the toll-free number to call
    started_at: datetime | None = None
    expires_at: datetime | None = None
    attempts: tuple[str, ...] = ()
    calls: frozenset = field(default_factory=frozenset)   # keys of calls already applied


initial_state = Verification()


def _time(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def evolve(state: Verification, event: RecordedEvent | NewEvent) -> Verification:
    d = event.data
    version = getattr(event, "stream_version", state.version + 1)
    if event.type == c.PHONE_VERIFICATION_STARTED.name:
        return replace(state, version=version, status=c.AWAITING_CALL,
                       verification_id=d["verification_id"], application_id=d["application_id"],
                       customer_number=d["customer_number"], caller=d["caller"],
                       call_to=d["call_to"], started_at=_time(d["started_at"]),
                       expires_at=_time(d["expires_at"]))
    if event.type == c.PHONE_VERIFICATION_ATTEMPT_FAILED.name:
        return replace(state, version=version, attempts=state.attempts + (d["reason"],),
                       calls=state.calls | {d["call_key"]})
    if event.type == c.PHONE_VERIFICATION_SUCCEEDED.name:
        return replace(state, version=version, status=c.VERIFIED,
                       calls=state.calls | {d["call_key"]})
    if event.type == c.PHONE_VERIFICATION_EXPIRED.name:
        return replace(state, version=version, status=c.EXPIRED)
    return replace(state, version=version)


def fold(events: Iterable[RecordedEvent | NewEvent], state: Verification = initial_state) -> Verification:
    for event in events:
        state = evolve(state, event)
    return state


# -- commands ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StartVerification:
    verification_id: str
    application_id: str
    customer_number: str
    caller: str                  # E.164 (normalized by the service)
    call_to: str                 # E.164
    call_to_display: str         # national format, as the page shows it
    now: datetime
    window: timedelta


@dataclass(frozen=True)
class ApplyCall:
    """One inbound call, applied to one verification. ``at`` is when the call counts."""
    call_key: str
    caller: str | None           # E.164, None when withheld
    withheld: bool
    called: str                  # E.164
    at: datetime


@dataclass(frozen=True)
class Expire:
    now: datetime


@dataclass(frozen=True)
class Withdraw:
    """The registered phones changed (an operator procedure, R-LEG-4) while the customer was
    being asked to call: the old number may be the lost phone, so its window closes now."""
    reason: str


def decide(cmd, state: Verification) -> list[NewEvent]:
    if isinstance(cmd, StartVerification):
        return _start(cmd, state)
    if isinstance(cmd, ApplyCall):
        return _apply_call(cmd, state)
    if isinstance(cmd, Expire):
        return _expire(cmd, state)
    if isinstance(cmd, Withdraw):
        return [_expired(state, cmd.reason)] if state.status == c.AWAITING_CALL else []
    raise TypeError(f"unknown command {cmd!r}")


def _start(cmd: StartVerification, state: Verification) -> list[NewEvent]:
    if state.status != NONE:
        raise Conflict(verification_id=cmd.verification_id)
    return [NewEvent(c.PHONE_VERIFICATION_STARTED.name, {
        "verification_id": cmd.verification_id, "application_id": cmd.application_id,
        "customer_number": cmd.customer_number, "caller": cmd.caller, "call_to": cmd.call_to,
        "call_to_display": cmd.call_to_display,
        "window_seconds": int(cmd.window.total_seconds()),
        "started_at": cmd.now.isoformat(), "expires_at": (cmd.now + cmd.window).isoformat()})]


def _base(state: Verification) -> dict:
    return {"verification_id": state.verification_id, "application_id": state.application_id,
            "customer_number": state.customer_number}


def _failed(state: Verification, reason: str, cmd: ApplyCall) -> NewEvent:
    return NewEvent(c.PHONE_VERIFICATION_ATTEMPT_FAILED.name, {
        **_base(state), "reason": reason, "call_key": cmd.call_key, "at": cmd.at.isoformat()})


def _expired(state: Verification, reason: str | None = None) -> NewEvent:
    return NewEvent(c.PHONE_VERIFICATION_EXPIRED.name, {
        **_base(state), "expires_at": state.expires_at.isoformat(), **({"reason": reason} if reason else {})})


def _apply_call(cmd: ApplyCall, state: Verification) -> list[NewEvent]:
    if state.status == NONE or cmd.call_key in state.calls or state.status == c.VERIFIED:
        return []        # unknown, already applied, or done: exactly once
    if cmd.at < state.started_at - CLOCK_SKEW:
        return []        # a (redelivered) call from before this verification was shown
    if state.status == c.EXPIRED:
        return [_failed(state, c.LATE, cmd)]
    if cmd.at >= state.expires_at:
        return [_failed(state, c.LATE, cmd), _expired(state)]
    if cmd.withheld or cmd.caller is None:
        return [_failed(state, c.WITHHELD, cmd)]
    if cmd.caller != state.caller:
        return [_failed(state, c.UNKNOWN_CALLER, cmd)]
    if cmd.called != state.call_to:
        return [_failed(state, c.WRONG_NUMBER, cmd)]
    return [NewEvent(c.PHONE_VERIFICATION_SUCCEEDED.name, {
        **_base(state), "call_key": cmd.call_key, "at": cmd.at.isoformat()})]


def _expire(cmd: Expire, state: Verification) -> list[NewEvent]:
    if state.status == c.AWAITING_CALL and cmd.now >= state.expires_at:
        return [_expired(state)]
    return []


# -- which verifications a call concerns -----------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A read-model row: a verification that may concern the call."""
    verification_id: str
    caller_index: str       # keyed hash of the registered phone (the read model keeps no number)
    call_to: str
    status: str
    started_at: datetime
    expires_at: datetime


def route_call(*, caller_index: str | None, called: str, at: datetime,
               candidates: Sequence[Candidate]) -> list[str]:
    """The verifications one call is applied to.

    A call from a registered phone concerns that phone's newest verification: the one for the
    number dialled if open (verifies, or is late), else its open one for another number
    (wrong number), else a recently expired one for the number dialled (late). A call from a
    registered phone that concerns none of those (already verified) touches nothing.
    A withheld or unknown caller cannot be told apart, so the call is an attempt on every
    open verification of the number dialled — the customer who dialled from the wrong phone
    or with 184 sees why nothing happened.
    """
    def newest(rows):
        return [max(rows, key=lambda r: (r.started_at, r.verification_id)).verification_id]

    open_here = [r.verification_id for r in candidates
                 if r.status == c.AWAITING_CALL and r.call_to == called and at < r.expires_at]
    if caller_index is None:
        return open_here
    mine = [r for r in candidates if r.caller_index == caller_index]
    exact = [r for r in mine if r.status == c.AWAITING_CALL and r.call_to == called]
    if exact:
        return newest(exact)
    elsewhere = [r for r in mine if r.status == c.AWAITING_CALL]
    if elsewhere:
        return newest(elsewhere)
    late = [r for r in mine if r.status == c.EXPIRED and r.call_to == called
            and at < r.expires_at + LATE_CALL_GRACE]
    if late:
        return newest(late)
    if any(at < r.expires_at + LATE_CALL_GRACE for r in mine):
        return []
    return open_here


def effective_time(received_at: datetime, now: datetime) -> datetime:
    """When a call counts: when the edge received it, never later than now (an edge clock
    running ahead must not stretch the window)."""
    return min(received_at, now)


def choose_toll_free(pool: Sequence[str], open_by_number: dict[str, int],
                     callers_open_numbers: set[str]) -> str:
    """The toll-free number to show: one this phone is not already asked to call (so a call
    is never ambiguous between two of its verifications), then the least busy, then pool order."""
    if not pool:
        raise ValueError("no toll-free number configured")
    return min(pool, key=lambda n: (n in callers_open_numbers, open_by_number.get(n, 0),
                                    pool.index(n)))
