"""The mail notification password (メール通知パスワード) — the pure decider of
``mailotp-<customer_number>`` (SPEC R-MAIL-1, R-MAIL-2, R-MAIL-5, R-RBA-2; PC guide).

One aggregate per customer: the latest code (only the latest is valid), the few codes it
superseded (so an old code is told apart from a wrong one), the consecutive wrong entries
and the lock. A code is bound to one purpose and one operation (its keyed digest); it expires,
is used once, and is voided after ``max_attempts`` wrong entries. Wrong entries (a wrong code,
or the right code for another operation) count toward the lock; entries that cannot be a
guess — an old, used, expired or voided code — are refused and recorded but not counted.

No I/O, clock, randomness or key here: the service generates the issue id and the code,
computes the HMACs and tells the decider which stored code the entry matched.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from contracts import mail_otp as contract
from contracts.errors import Conflict, Locked, Unauthenticated, ValidationFailed
from contracts.events import NewEvent, RecordedEvent

DEFAULT_TTL = timedelta(minutes=10)          # the guide gives none; 10 minutes, MAIL_OTP_TTL_SECONDS
DEFAULT_MAX_ATTEMPTS = 5                     # wrong entries that void one code
DEFAULT_LOCK_THRESHOLD = 5                   # consecutive wrong entries that lock (R-RBA-2)
CODE_DIGITS = 6
KEEP_PREVIOUS = 5                            # superseded codes remembered to say "use the latest"

ACTIVE = "active"
USED = "used"
VOIDED = "voided"
EXPIRED = "expired"
SUPERSEDED = "superseded"

# Events after which a code can never be used again: its sealing key is destroyed with them.
ENDING_EVENTS = (contract.MAIL_OTP_SUPERSEDED.name, contract.MAIL_OTP_VERIFIED.name,
                 contract.MAIL_OTP_VOIDED.name, contract.MAIL_OTP_EXPIRED.name)

# -- messages (Japanese, for the customer) and their stable codes --------------------------------------

MSG_FORMAT = "メール通知パスワードは半角数字6桁で入力してください。"
CODE_FORMAT = "mail_otp_format"
MSG_WRONG = ("メール通知パスワードが正しくありません。最新のメールに記載されたメール通知パスワードを"
             "入力してください。")
CODE_WRONG = "mail_otp_invalid"
MSG_OTHER_OPERATION = ("入力されたメール通知パスワードは、別のお取引（お手続き）のために発行されたものです。"
                       "メールに記載されたお取引内容をご確認のうえ、メール通知パスワードを再発行してください。"
                       "お心当たりのない場合は、お取引を中止してお問い合わせ窓口にご連絡ください。")
CODE_OTHER_OPERATION = "mail_otp_other_operation"
MSG_SUPERSEDED = ("このメール通知パスワードは、新しいメール通知パスワードの発行により無効になりました。"
                  "最新のメールに記載されたメール通知パスワードを入力してください。")
CODE_SUPERSEDED = "mail_otp_superseded"
MSG_EXPIRED = "メール通知パスワードの有効期限が過ぎています。メール通知パスワードを再発行してください。"
CODE_EXPIRED = "mail_otp_expired"
MSG_USED = "このメール通知パスワードは既に使用されています。メール通知パスワードを再発行してください。"
CODE_USED = "mail_otp_used"
MSG_VOIDED = ("メール通知パスワードを所定の回数誤ったため、このメール通知パスワードは無効になりました。"
              "メール通知パスワードを再発行してください。")
CODE_VOIDED = "mail_otp_voided"
MSG_LOCKED = ("メール通知パスワードを所定の回数以上誤ったため、ご利用を停止しています。"
              "お取引店またはお問い合わせ窓口にご連絡ください。")
CODE_LOCKED = "mail_otp_locked"
MSG_NOT_ISSUED = "メール通知パスワードが発行されていません。メール通知パスワードを発行してから入力してください。"
CODE_NOT_ISSUED = "mail_otp_not_issued"
MSG_NOT_NEEDED = ("ワンタイムパスワードをご利用中のお客さまは、メール通知パスワードは不要です。"
                  "確認用パスワードとワンタイムパスワードを入力してください。")
CODE_NOT_NEEDED = "mail_otp_not_needed"
MSG_MAIL_OTP_REQUIRED = "確認用パスワードと、メールでお知らせした最新のメール通知パスワードを入力してください。"
CODE_MAIL_OTP_REQUIRED = "mail_otp_required"
MSG_OTP_REQUIRED = "ワンタイムパスワードをご利用中のため、確認用パスワードとワンタイムパスワードを入力してください。"
CODE_OTP_REQUIRED = "otp_required"
MSG_NOT_LOCKED = "メール通知パスワードはロックされていません。"
CODE_NOT_LOCKED = "mail_otp_not_locked"
MSG_CONFIRMATION_PASSWORD_REQUIRED = "確認用パスワードを入力してください。"

_REFUSALS = {
    "mismatch": (MSG_WRONG, CODE_WRONG),
    "other_operation": (MSG_OTHER_OPERATION, CODE_OTHER_OPERATION),
    "superseded": (MSG_SUPERSEDED, CODE_SUPERSEDED),
    "expired": (MSG_EXPIRED, CODE_EXPIRED),
    "used": (MSG_USED, CODE_USED),
    "voided": (MSG_VOIDED, CODE_VOIDED),
}


def check_code_format(code) -> str:
    if not isinstance(code, str) or len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        raise ValidationFailed(MSG_FORMAT, CODE_FORMAT, errors={"mail_otp": [MSG_FORMAT]})
    return code


def _time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


# -- state ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Code:
    issue_id: str
    purpose: str
    operation_digest: str
    kid: str
    mac: str
    expires_at: datetime
    destination: str = contract.TO_DESTINATIONS
    status: str = ACTIVE
    failures: int = 0

    def as_dict(self) -> dict:
        return {"issue_id": self.issue_id, "purpose": self.purpose, "operation_digest": self.operation_digest,
                "kid": self.kid, "mac": self.mac, "expires_at": self.expires_at.isoformat(),
                "destination": self.destination, "status": self.status, "failures": self.failures}

    @classmethod
    def from_dict(cls, d: dict) -> "Code":
        return cls(**{**d, "expires_at": _time(d["expires_at"])})


@dataclass(frozen=True)
class MailOtpState:
    customer_number: str | None = None
    current: Code | None = None
    previous: tuple[Code, ...] = ()        # superseded codes, newest first
    consecutive_failures: int = 0
    locked: bool = False
    locked_at: datetime | None = None
    version: int = 0


initial_state = MailOtpState()


def evolve(state: MailOtpState, event: RecordedEvent | NewEvent) -> MailOtpState:
    d, t = event.data, event.type
    state = replace(state, customer_number=d.get("customer_number", state.customer_number))
    cur = state.current
    if t == contract.MAIL_OTP_ISSUED.name:
        verifier = d.get("verifier") or {}
        state = replace(state, current=Code(
            issue_id=d["issue_id"], purpose=d["purpose"], operation_digest=d["operation_digest"],
            kid=verifier.get("kid", ""), mac=verifier.get("mac", ""), expires_at=_time(d["expires_at"]),
            destination=d.get("destination", contract.TO_DESTINATIONS)))
    elif t == contract.MAIL_OTP_SUPERSEDED.name and cur is not None and cur.issue_id == d["issue_id"]:
        state = replace(state, current=None,
                        previous=((replace(cur, status=SUPERSEDED),) + state.previous)[:KEEP_PREVIOUS])
    elif t == contract.MAIL_OTP_VERIFIED.name and _is_current(cur, d):
        state = replace(state, current=replace(cur, status=USED), consecutive_failures=0)
    elif t == contract.MAIL_OTP_VERIFICATION_FAILED.name:
        if d.get("counted") and _is_current(cur, d):
            state = replace(state, current=replace(cur, failures=d["failures_on_code"]))
        state = replace(state, consecutive_failures=d["consecutive_failures"])
    elif t == contract.MAIL_OTP_VOIDED.name and _is_current(cur, d):
        state = replace(state, current=replace(cur, status=VOIDED))
    elif t == contract.MAIL_OTP_EXPIRED.name and _is_current(cur, d):
        state = replace(state, current=replace(cur, status=EXPIRED))
    elif t == contract.MAIL_OTP_LOCKED.name:
        state = replace(state, locked=True, locked_at=_time(d.get("locked_at")))
    elif t == contract.MAIL_OTP_UNLOCKED.name:
        state = replace(state, locked=False, locked_at=None, consecutive_failures=0)
    return replace(state, version=getattr(event, "stream_version", state.version + 1))


def _is_current(cur: Code | None, d: dict) -> bool:
    return cur is not None and cur.issue_id == d.get("issue_id")


def fold(events, state: MailOtpState = initial_state) -> MailOtpState:
    for e in events:
        state = evolve(state, e)
    return state


# -- commands --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IssueMailOtp:
    issue_id: str
    customer_number: str
    purpose: str
    operation: dict               # canonical (contracts.mail_otp.canonical_operation)
    operation_digest: str
    kid: str
    mac: str
    code: str                     # goes into the sealed mail request only
    now: datetime
    ttl: timedelta = DEFAULT_TTL
    has_active_token: bool = False
    release_after: timedelta | None = None


@dataclass(frozen=True)
class VerifyMailOtp:
    customer_number: str
    purpose: str
    operation_digest: str         # the requested operation, digested with the latest code's key
    matched: str | None           # "current" | "previous" | None (the service's HMAC comparison)
    now: datetime
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    threshold: int = DEFAULT_LOCK_THRESHOLD
    release_after: timedelta | None = None


@dataclass(frozen=True)
class ExpireMailOtp:
    now: datetime


@dataclass(frozen=True)
class UnlockMailOtp:
    customer_number: str
    now: datetime


def lock_released(state: MailOtpState, now: datetime, release_after: timedelta | None) -> bool:
    return (state.locked and release_after is not None and state.locked_at is not None
            and now >= state.locked_at + release_after)


def check_usable(state: MailOtpState, now: datetime, release_after: timedelta | None) -> None:
    """Cheap refusals before anything is checked (and counted): locked, or nothing issued."""
    if state.locked and not lock_released(state, now, release_after):
        raise Locked(MSG_LOCKED, CODE_LOCKED, credential="mail_otp")
    if state.current is None:
        raise Conflict(MSG_NOT_ISSUED, CODE_NOT_ISSUED)


def _timed_unlock(state: MailOtpState, customer_number: str, now: datetime,
                  release_after: timedelta | None) -> list[NewEvent]:
    if not state.locked:
        return []
    if not lock_released(state, now, release_after):
        raise Locked(MSG_LOCKED, CODE_LOCKED, credential="mail_otp")
    return [NewEvent(contract.MAIL_OTP_UNLOCKED.name, {
        "customer_number": customer_number, "release": "timed_release", "at": now.isoformat()})]


def decide_issue(cmd: IssueMailOtp, state: MailOtpState) -> tuple[list[NewEvent], NewEvent]:
    """→ (events of ``mailotp-<customer>``, the sealed ``mail_otp_mail_requested``)."""
    if cmd.purpose not in contract.PURPOSES or cmd.operation.get("type") != cmd.purpose:
        raise ValidationFailed(contract.MSG_PURPOSE_MISMATCH, "operation_purpose_mismatch")
    if cmd.has_active_token and cmd.purpose != contract.ADDRESS_CONFIRMATION:
        raise Conflict(MSG_NOT_NEEDED, CODE_NOT_NEEDED)
    events = _timed_unlock(state, cmd.customer_number, cmd.now, cmd.release_after)
    cur, at = state.current, cmd.now.isoformat()
    if cur is not None and cur.status == ACTIVE:
        if cmd.now >= cur.expires_at:
            events.append(NewEvent(contract.MAIL_OTP_EXPIRED.name, {
                "issue_id": cur.issue_id, "customer_number": cmd.customer_number, "at": at}))
        else:   # only the latest is valid (R-MAIL-1)
            events.append(NewEvent(contract.MAIL_OTP_SUPERSEDED.name, {
                "issue_id": cur.issue_id, "customer_number": cmd.customer_number,
                "by_issue_id": cmd.issue_id, "at": at}))
    destination = (cmd.operation["slot"] if cmd.purpose == contract.ADDRESS_CONFIRMATION
                   else contract.TO_DESTINATIONS)
    expires_at = (cmd.now + cmd.ttl).isoformat()
    ttl_seconds = int(cmd.ttl.total_seconds())
    subject = contract.code_subject(cmd.issue_id)
    events.append(NewEvent(contract.MAIL_OTP_ISSUED.name, {
        "issue_id": cmd.issue_id, "customer_number": cmd.customer_number, "purpose": cmd.purpose,
        "operation": cmd.operation, "operation_digest": cmd.operation_digest,
        "verifier": {"alg": "HMAC-SHA256", "kid": cmd.kid, "mac": cmd.mac}, "destination": destination,
        "key_subject": subject, "ttl_seconds": ttl_seconds, "expires_at": expires_at, "issued_at": at}))
    request = NewEvent(contract.MAIL_OTP_MAIL_REQUESTED.name, {
        "issue_id": cmd.issue_id, "customer_number": cmd.customer_number, "purpose": cmd.purpose,
        "operation": cmd.operation, "code": cmd.code, "destination": destination, "key_subject": subject,
        "ttl_seconds": ttl_seconds, "expires_at": expires_at})
    return events, request


def decide_verify(cmd: VerifyMailOtp, state: MailOtpState) -> list[NewEvent]:
    check_usable(state, cmd.now, cmd.release_after)
    events = _timed_unlock(state, cmd.customer_number, cmd.now, cmd.release_after)
    consecutive = 0 if events else state.consecutive_failures
    cur, at = state.current, cmd.now.isoformat()
    status = cur.status
    if status == ACTIVE and cmd.now >= cur.expires_at:
        events.append(NewEvent(contract.MAIL_OTP_EXPIRED.name, {
            "issue_id": cur.issue_id, "customer_number": cmd.customer_number, "at": at}))
        status = EXPIRED
    base = {"issue_id": cur.issue_id, "customer_number": cmd.customer_number, "at": at}

    def refuse(reason: str, counted: bool) -> list[NewEvent]:
        failures = cur.failures + (1 if counted else 0)
        total = consecutive + (1 if counted else 0)
        events.append(NewEvent(contract.MAIL_OTP_VERIFICATION_FAILED.name, {
            **base, "reason": reason, "counted": counted, "failures_on_code": failures,
            "consecutive_failures": total}))
        if counted and failures >= cmd.max_attempts:
            events.append(NewEvent(contract.MAIL_OTP_VOIDED.name, {**base, "reason": "attempts_exceeded"}))
        if counted and total >= cmd.threshold:
            events.append(NewEvent(contract.MAIL_OTP_LOCKED.name, {
                "customer_number": cmd.customer_number, "consecutive_failures": total,
                "threshold": cmd.threshold, "locked_at": at}))
        return events

    if cmd.matched == "previous":
        return refuse("superseded", False)
    if status != ACTIVE:
        return refuse(status, False)
    if cmd.matched != "current":
        return refuse("mismatch", True)
    if cur.purpose != cmd.purpose or cur.operation_digest != cmd.operation_digest:
        # The right code for another operation: a substituted transfer looks exactly like this.
        return refuse("other_operation", True)
    events.append(NewEvent(contract.MAIL_OTP_VERIFIED.name, {
        **base, "purpose": cur.purpose, "operation_digest": cur.operation_digest}))
    return events


def decide(cmd, state: MailOtpState) -> list[NewEvent]:
    if isinstance(cmd, VerifyMailOtp):
        return decide_verify(cmd, state)
    if isinstance(cmd, ExpireMailOtp):
        cur = state.current
        if cur is None or cur.status != ACTIVE or cmd.now < cur.expires_at:
            return []
        return [NewEvent(contract.MAIL_OTP_EXPIRED.name, {
            "issue_id": cur.issue_id, "customer_number": state.customer_number, "at": cmd.now.isoformat()})]
    if isinstance(cmd, UnlockMailOtp):
        if not state.locked:
            raise Conflict(MSG_NOT_LOCKED, CODE_NOT_LOCKED)
        return [NewEvent(contract.MAIL_OTP_UNLOCKED.name, {
            "customer_number": cmd.customer_number, "release": "operator", "at": cmd.now.isoformat()})]
    raise TypeError(f"unknown command {type(cmd).__name__}")


def verified(events: list[NewEvent]) -> bool:
    return any(e.type == contract.MAIL_OTP_VERIFIED.name for e in events)


def raise_outcome(events: list[NewEvent], max_attempts: int, threshold: int) -> None:
    """After the events are stored: a refused entry becomes the caller's error."""
    by_type = {e.type: e for e in events}
    if contract.MAIL_OTP_LOCKED.name in by_type:
        raise Locked(MSG_LOCKED, CODE_LOCKED, credential="mail_otp")
    if contract.MAIL_OTP_VOIDED.name in by_type:
        raise Unauthenticated(MSG_VOIDED, CODE_VOIDED, remaining_attempts=0)
    failed = by_type.get(contract.MAIL_OTP_VERIFICATION_FAILED.name)
    if failed is None:
        return
    d = failed.data
    message, code = _REFUSALS[d["reason"]]
    extra = {}
    if d["counted"]:
        extra["remaining_attempts"] = max(min(max_attempts - d["failures_on_code"],
                                              threshold - d["consecutive_failures"]), 0)
    raise Unauthenticated(message, code, **extra)


def ended_issue_ids(events: list[NewEvent]) -> list[str]:
    """Codes these events end for good: their sealing keys are destroyed in the same transaction."""
    return [e.data["issue_id"] for e in events if e.type in ENDING_EVENTS]
