"""The Select E-mail service and the recipients of each mail — the notifier's pure rules
(SPEC R-MAIL-1, R-MAIL-4, R-MAIL-5; PC guide セレクトEメールサービス)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from contracts.errors import Conflict, ValidationFailed
from contracts.events import RecordedEvent
from notifier import addresses as ab
from notifier import templates

NOW = datetime(2025, 1, 6, 1, 0, tzinfo=timezone.utc)
NUMBER = "0123456789"
REGISTERED = "taro@example.jp"


def slot(address=None, enabled=True, receives=False):
    return {"address": address, "enabled": enabled if address else False, "receives_mail_otp": receives}


def change(book=ab.initial_book, select1=None, select2=None, registered=REGISTERED, authorization="auth-1"):
    return ab.decide_change(ab.ChangeSelectAddresses(NUMBER, {"select1": select1, "select2": select2},
                                                     registered, authorization, NOW), book)


def summary(events) -> list[tuple]:
    return [(e.type, e.data["slot"], e.data["address"], e.data.get("reason")) for e in events]


def test_adding_select_addresses_R_MAIL_4():
    events = change(select1=slot("keitai@docomo.ne.jp", receives=True), select2=slot("office@example.co.jp"))
    assert summary(events) == [
        ("select_address_set", "select1", "keitai@docomo.ne.jp", None),
        ("mail_otp_destination_requested", "select1", "keitai@docomo.ne.jp", None),
        ("select_address_set", "select2", "office@example.co.jp", None)]
    assert all(e.data["authorization_id"] == "auth-1" for e in events)
    book = ab.fold(events)
    # Asked to receive the code, but not yet a destination (R-MAIL-5).
    assert book.select1 == ab.Slot("keitai@docomo.ne.jp", True, False, True)
    assert ab.pending_slot(book) == "select1"
    assert ab.confirmation_operation(book) == {"type": "address_confirmation", "slot": "select1",
                                               "address": "keitai@docomo.ne.jp"}


def test_confirming_a_destination_R_MAIL_5():
    book = ab.fold(change(select1=slot("keitai@docomo.ne.jp", receives=True)))
    events = ab.decide_confirm(ab.ConfirmDestination(NUMBER, "select1", "keitai@docomo.ne.jp", "auth-2", NOW), book)
    assert summary(events) == [("mail_otp_destination_confirmed", "select1", "keitai@docomo.ne.jp", None)]
    book = ab.fold(events, book)
    assert book.select1 == ab.Slot("keitai@docomo.ne.jp", True, True, False) and ab.pending_slot(book) is None
    with pytest.raises(Conflict) as err:
        ab.confirmation_operation(book)
    assert err.value.code == "no_pending_destination"
    # A code for an address that was replaced meanwhile confirms nothing.
    with pytest.raises(Conflict):
        ab.decide_confirm(ab.ConfirmDestination(NUMBER, "select1", "old@example.jp", "auth-3", NOW), book)


def test_replacing_and_removing_record_the_old_address_R_MAIL_4():
    book = ab.fold(change(select1=slot("old1@example.jp"), select2=slot("old2@example.jp")))
    events = change(book, select1=slot("new1@example.jp"), select2=None)
    assert summary(events) == [
        ("select_address_removed", "select1", "old1@example.jp", "replaced"),
        ("select_address_set", "select1", "new1@example.jp", None),
        ("select_address_removed", "select2", "old2@example.jp", "removed")]
    book = ab.fold(events, book)
    assert book.select2 == ab.Slot() and book.select1.address == "new1@example.jp"


def test_toggling_use_and_destination_of_the_same_address():
    book = ab.fold(change(select1=slot("k@example.jp", receives=True)))
    book = ab.fold(ab.decide_confirm(ab.ConfirmDestination(NUMBER, "select1", "k@example.jp", "a", NOW), book), book)
    # No longer a destination: takes effect at once, no confirmation needed.
    events = change(book, select1=slot("k@example.jp", receives=False))
    assert summary(events) == [("select_address_set", "select1", "k@example.jp", None)]
    assert events[0].data["receives_mail_otp"] is False
    book = ab.fold(events, book)
    # A destination again: confirmed anew.
    assert [e.type for e in change(book, select1=slot("k@example.jp", receives=True))] == [
        "mail_otp_destination_requested"]
    # Not used any more.
    events = change(book, select1={"address": "k@example.jp", "enabled": False, "receives_mail_otp": False})
    assert events[0].data["enabled"] is False


@pytest.mark.parametrize("select1, select2, code", [
    (None, None, "no_change"),
    (slot("Taro@Example.JP"), None, "duplicate_address"),          # the registered address
    (slot("a@example.jp"), slot("A@example.jp"), "duplicate_address"),
])
def test_changes_that_change_nothing_or_repeat_an_address_are_refused(select1, select2, code):
    with pytest.raises(ValidationFailed) as err:
        change(select1=select1, select2=select2)
    assert err.value.code == code and not err.value.detail.isascii()


def test_the_same_settings_again_change_nothing():
    book = ab.fold(change(select1=slot("k@example.jp", receives=True)))
    with pytest.raises(ValidationFailed) as err:
        change(book, select1=slot("k@example.jp", receives=True))       # still waiting: nothing new
    assert err.value.code == "no_change"


# -- who receives what ---------------------------------------------------------------------------------------

def book_with(select1: ab.Slot, select2: ab.Slot = ab.Slot()) -> ab.Book:
    return ab.Book(NUMBER, select1, select2)


def test_mail_password_recipients_R_MAIL_1_R_MAIL_4():
    book = book_with(ab.Slot("k@example.jp", True, True, False), ab.Slot("o@example.jp", True, False, False))
    assert ab.mail_otp_recipients(REGISTERED, book, "mail_otp_destinations") == [
        ("registered", REGISTERED), ("select1", "k@example.jp")]
    # Not used → nothing, even if chosen; pending → nothing but its own confirmation code.
    assert ab.mail_otp_recipients(REGISTERED, book_with(ab.Slot("k@example.jp", False, True, False)),
                                  "mail_otp_destinations") == [("registered", REGISTERED)]
    pending = book_with(ab.Slot("k@example.jp", True, False, True))
    assert ab.mail_otp_recipients(REGISTERED, pending, "mail_otp_destinations") == [("registered", REGISTERED)]
    assert ab.mail_otp_recipients(REGISTERED, pending, "select1", "k@example.jp") == [("select1", "k@example.jp")]
    assert ab.mail_otp_recipients(REGISTERED, pending, "select1", "other@example.jp") == []
    assert ab.mail_otp_recipients(REGISTERED, book, "select2", "o@example.jp") == []      # not waiting
    # A shredded (or never registered) address is nobody.
    assert ab.mail_otp_recipients("[redacted]", ab.initial_book, "mail_otp_destinations") == []


def test_acceptance_mail_recipients():
    book = book_with(ab.Slot("k@example.jp", True, True, False), ab.Slot("o@example.jp", True, False, False))
    transfer = {"type": "transfer"}
    assert ab.acceptance_recipients(REGISTERED, book, transfer) == [
        ("registered", REGISTERED), ("select1", "k@example.jp"), ("select2", "o@example.jp")]
    unused = book_with(ab.Slot("k@example.jp", False, False, False))
    assert ab.acceptance_recipients(REGISTERED, unused, transfer) == [("registered", REGISTERED)]
    select_change = {"type": "settings_change", "setting": "select_email"}
    assert ab.acceptance_recipients(REGISTERED, book, select_change) == [("registered", REGISTERED)]
    assert ab.acceptance_recipients(REGISTERED, book, {"type": "address_confirmation"}) == []


def test_view_shows_pending_and_confirmed():
    view = ab.view(REGISTERED, book_with(ab.Slot("k@example.jp", True, False, True)))
    assert view["registered"] == {"address": REGISTERED, "receives_mail_otp": True}
    assert view["select1"] == {"address": "k@example.jp", "enabled": True, "receives_mail_otp": False,
                               "mail_otp_pending_confirmation": True}
    assert view["pending_confirmation"] == "select1" and view["select2"]["address"] is None


def test_removal_notice_R_MAIL_4():
    event = RecordedEvent("notifyaddr-0123456789", 3, __import__("uuid").uuid4(), "select_address_removed", 1,
                          {"customer_number": NUMBER, "slot": "select2", "address": "o@example.jp",
                           "reason": "replaced", "authorization_id": "a", "at": NOW.isoformat()}, {}, NOW)
    (order,) = templates.orders_for_select_address_removed(event)
    assert order.to == ("o@example.jp",) and order.template == "select_address_removed"
    assert templates.TEMPLATES[order.template].sender == "bank"              # am-bk.co.jp (R-MAIL-3)
    assert order.params == {"removed_at": "2025年1月6日 10:00", "slot_label": "セレクトメールアドレス2",
                            "reason_text": "変更により登録解除"}


def test_every_notifier_handler_is_a_declared_subscription():
    """The relay declares the queues from contracts; the notifier's handlers must be among them."""
    from contracts.subscriptions import SUBSCRIPTIONS
    from notifier.service import NotifierService
    from services.handlers import subscriptions_of

    handlers = set(subscriptions_of(NotifierService))
    declared = {s for s in SUBSCRIPTIONS if s.handler_service == "notifier"}
    assert handlers == declared
    assert {s.event_type for s in handlers} >= {"mail_otp_mail_requested", "operation_authorized",
                                                "select_address_removed", "legacy_customer_imported"}
