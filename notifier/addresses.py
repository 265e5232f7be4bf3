"""Notification addresses — the pure decider of ``notifyaddr-<customer_number>`` and the rules
that pick recipients (SPEC R-MAIL-1, R-MAIL-3, R-MAIL-4, R-MAIL-5; PC guide, セレクトEメールサービス).

Besides the registered address (identity's, from the legacy record) a customer has up to two
select addresses, each used or not and chosen to receive the mail notification password or
not. Making an address a mail-password destination is a request until the code mailed to that
very address is entered; until then it receives nothing but that code. Removing or replacing
an address records the old address, so it can be told by mail.

No I/O here: the service reads the stream and the registered address, asks otp_service to
authorize the change, and passes the authorization id in.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from contracts import mail_otp as mo
from contracts import notifier as contract
from contracts.errors import Conflict, ValidationFailed
from contracts.events import NewEvent, RecordedEvent

SLOTS = mo.SELECT_SLOTS
SLOT_LABELS = {"select1": "セレクトメールアドレス1", "select2": "セレクトメールアドレス2",
               mo.REGISTERED: "登録メールアドレス"}

MSG_NO_CHANGE = "変更内容がありません。変更する内容を入力してください。"
CODE_NO_CHANGE = "no_change"
MSG_DUPLICATE = "同じメールアドレスを複数登録することはできません。"
MSG_SAME_AS_REGISTERED = "登録メールアドレスと同じメールアドレスはセレクトメールアドレスに登録できません。"
CODE_DUPLICATE = "duplicate_address"
MSG_NOTHING_PENDING = "確定待ちのメール通知パスワード送信先はありません。"
CODE_NOTHING_PENDING = "no_pending_destination"
MSG_NO_DESTINATION = ("メール通知パスワードの送信先メールアドレスが登録されていません。"
                      "お手数ですが、お取引店またはお問い合わせ窓口にご連絡ください。")
CODE_NO_DESTINATION = "no_mail_otp_destination"


@dataclass(frozen=True)
class Slot:
    address: str | None = None
    enabled: bool = False
    receives_mail_otp: bool = False      # confirmed destination
    pending: bool = False                # asked to receive; waits for the code sent to it

    def as_request(self) -> dict:
        """What the Select E-mail screen shows as the slot's current choice."""
        return {"address": self.address, "enabled": self.enabled,
                "receives_mail_otp": self.receives_mail_otp or self.pending}


@dataclass(frozen=True)
class Book:
    customer_number: str | None = None
    select1: Slot = Slot()
    select2: Slot = Slot()
    version: int = 0

    def slot(self, name: str) -> Slot:
        return getattr(self, name)


initial_book = Book()


def evolve(book: Book, event: RecordedEvent | NewEvent) -> Book:
    d, t = event.data, event.type
    book = replace(book, customer_number=d.get("customer_number", book.customer_number))
    name = d.get("slot")
    if name in SLOTS:
        current = book.slot(name)
        if t == contract.SELECT_ADDRESS_SET.name:
            book = replace(book, **{name: Slot(d.get("address"), bool(d.get("enabled")),
                                               bool(d.get("receives_mail_otp")), False)})
        elif t == contract.SELECT_ADDRESS_REMOVED.name:
            book = replace(book, **{name: Slot()})
        elif t == contract.MAIL_OTP_DESTINATION_REQUESTED.name:
            book = replace(book, **{name: replace(current, pending=True)})
        elif t == contract.MAIL_OTP_DESTINATION_CONFIRMED.name:
            book = replace(book, **{name: replace(current, receives_mail_otp=True, pending=False)})
    return replace(book, version=getattr(event, "stream_version", book.version + 1))


def fold(events, book: Book = initial_book) -> Book:
    for e in events:
        book = evolve(book, e)
    return book


# -- commands ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChangeSelectAddresses:
    customer_number: str
    requested: dict                      # {"select1": {address, enabled, receives_mail_otp}, "select2": …}
    registered_address: str | None
    authorization_id: str | None         # None: a dry run (what would change?) before authorizing
    now: datetime


@dataclass(frozen=True)
class ConfirmDestination:
    customer_number: str
    slot: str
    address: str
    authorization_id: str
    now: datetime


def change_operation(requested: dict) -> dict:
    """The operation a Select E-mail change is authorized for (contracts.mail_otp)."""
    return mo.canonical_operation({"type": mo.SETTINGS_CHANGE, "setting": mo.SELECT_EMAIL,
                                   "changes": requested})


def _check_addresses(requested: dict, registered: str | None) -> None:
    errors: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name in SLOTS:
        address = requested[name]["address"]
        if address is None:
            continue
        if registered and address.lower() == registered.lower():
            errors[f"{name}.address"] = [MSG_SAME_AS_REGISTERED]
        elif address.lower() in seen:
            errors[f"{name}.address"] = [MSG_DUPLICATE]
        seen[address.lower()] = name
    if errors:
        first = next(iter(errors.values()))[0]
        raise ValidationFailed(first, CODE_DUPLICATE, errors=errors)


def decide_change(cmd: ChangeSelectAddresses, book: Book) -> list[NewEvent]:
    requested = change_operation(cmd.requested)["changes"]
    _check_addresses(requested, cmd.registered_address)
    events: list[NewEvent] = []
    base = {"customer_number": cmd.customer_number, "authorization_id": cmd.authorization_id,
            "at": cmd.now.isoformat()}
    for name in SLOTS:
        cur, new = book.slot(name), requested[name]
        if new["address"] is None:
            if cur.address is not None:
                events.append(NewEvent(contract.SELECT_ADDRESS_REMOVED.name, {
                    **base, "slot": name, "address": cur.address, "reason": "removed"}))
            continue
        if new["address"] != cur.address:
            if cur.address is not None:
                events.append(NewEvent(contract.SELECT_ADDRESS_REMOVED.name, {
                    **base, "slot": name, "address": cur.address, "reason": "replaced"}))
            events.append(NewEvent(contract.SELECT_ADDRESS_SET.name, {
                **base, "slot": name, "address": new["address"], "enabled": new["enabled"],
                "receives_mail_otp": False}))
            if new["receives_mail_otp"]:
                events.append(NewEvent(contract.MAIL_OTP_DESTINATION_REQUESTED.name, {
                    **base, "slot": name, "address": new["address"]}))
            continue
        wants = new["receives_mail_otp"]
        keep = cur.receives_mail_otp and wants
        if cur.enabled != new["enabled"] or (cur.receives_mail_otp and not wants) or (cur.pending and not wants):
            events.append(NewEvent(contract.SELECT_ADDRESS_SET.name, {
                **base, "slot": name, "address": cur.address, "enabled": new["enabled"],
                "receives_mail_otp": keep}))
        if wants and not cur.receives_mail_otp and not cur.pending:
            events.append(NewEvent(contract.MAIL_OTP_DESTINATION_REQUESTED.name, {
                **base, "slot": name, "address": cur.address}))
    if not events:
        raise ValidationFailed(MSG_NO_CHANGE, CODE_NO_CHANGE)
    return events


def pending_slot(book: Book) -> str | None:
    """The destination waiting for its code: select 1 before select 2, one at a time."""
    return next((name for name in SLOTS if book.slot(name).pending and book.slot(name).address), None)


def confirmation_operation(book: Book) -> dict:
    name = pending_slot(book)
    if name is None:
        raise Conflict(MSG_NOTHING_PENDING, CODE_NOTHING_PENDING)
    return mo.canonical_operation({"type": mo.ADDRESS_CONFIRMATION, "slot": name,
                                   "address": book.slot(name).address})


def decide_confirm(cmd: ConfirmDestination, book: Book) -> list[NewEvent]:
    current = book.slot(cmd.slot)
    if not current.pending or current.address != cmd.address:
        # Changed meanwhile (removed, replaced, withdrawn): the code confirmed an address that
        # is no longer waiting.
        raise Conflict(MSG_NOTHING_PENDING, CODE_NOTHING_PENDING)
    return [NewEvent(contract.MAIL_OTP_DESTINATION_CONFIRMED.name, {
        "customer_number": cmd.customer_number, "slot": cmd.slot, "address": cmd.address,
        "authorization_id": cmd.authorization_id, "at": cmd.now.isoformat()})]


# -- recipients ----------------------------------------------------------------------------------------

def _valid(address) -> bool:
    # A shredded customer's address reads "[redacted]": nothing to send to.
    return isinstance(address, str) and "@" in address


def _unique(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out, seen = [], set()
    for role, address in pairs:
        if _valid(address) and address.lower() not in seen:
            seen.add(address.lower())
            out.append((role, address))
    return out


def mail_otp_recipients(registered: str | None, book: Book, destination: str,
                        address: str | None = None) -> list[tuple[str, str]]:
    """(role, address) pairs for a mail notification password (R-MAIL-1, R-MAIL-4): the
    registered address and every select address that is used and a confirmed destination; for
    an address confirmation (R-MAIL-5) only that pending address, and only while it waits."""
    if destination == mo.TO_DESTINATIONS:
        pairs = [(mo.REGISTERED, registered)] + [
            (name, book.slot(name).address) for name in SLOTS
            if book.slot(name).enabled and book.slot(name).receives_mail_otp]
        return _unique(pairs)
    if destination in SLOTS:
        slot = book.slot(destination)
        if slot.pending and slot.address is not None and slot.address == address:
            return _unique([(destination, slot.address)])
    return []


def acceptance_recipients(registered: str | None, book: Book, operation: dict) -> list[tuple[str, str]]:
    """Who gets the 取引受付メール: the registered address and every used select address.
    A change of the select addresses themselves is told to the registered address only (the
    select slots are changing under it; a removed one gets its own notice)."""
    kind = operation.get("type")
    if kind == mo.ADDRESS_CONFIRMATION:
        return []
    if kind == mo.SETTINGS_CHANGE and operation.get("setting") == mo.SELECT_EMAIL:
        return _unique([(mo.REGISTERED, registered)])
    pairs = [(mo.REGISTERED, registered)] + [
        (name, book.slot(name).address) for name in SLOTS if book.slot(name).enabled]
    return _unique(pairs)


def view(registered: str | None, book: Book) -> dict:
    """GET /api/v1/notification-addresses."""
    def slot(name):
        s = book.slot(name)
        return {"address": s.address, "enabled": s.enabled, "receives_mail_otp": s.receives_mail_otp,
                "mail_otp_pending_confirmation": s.pending}
    return {"registered": {"address": registered if _valid(registered) else None,
                           "receives_mail_otp": _valid(registered)},
            "select1": slot("select1"), "select2": slot("select2"),
            "pending_confirmation": pending_slot(book)}
