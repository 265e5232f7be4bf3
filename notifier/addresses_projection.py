"""The address book read model (deploy/sql/071_notification_addresses.sql): the registered
address from identity's ``legacy_customer_imported`` and the select addresses from
``notifyaddr-<customer_number>``. Rebuildable by replaying both categories."""
from __future__ import annotations

from contracts import mail_otp as mo
from contracts import notifier as contract
from notifier import addresses


def _valid(address) -> bool:
    return isinstance(address, str) and "@" in address


def set_registered(conn, customer_number: str, address) -> None:
    if not _valid(address):
        conn.execute("DELETE FROM notifier.addresses WHERE customer_number = %s AND slot = 'registered'",
                     (customer_number,))
        return
    conn.execute(
        "INSERT INTO notifier.addresses (customer_number, slot, address, enabled, receives_mail_otp) "
        "VALUES (%s, 'registered', %s, true, true) ON CONFLICT (customer_number, slot) DO UPDATE SET "
        "address = excluded.address, updated_at = now()", (customer_number, address))


def forget(conn, customer_number: str) -> int:
    """The customer was crypto-shredded: no copy of an address may remain here."""
    return conn.execute("DELETE FROM notifier.addresses WHERE customer_number = %s",
                        (customer_number,)).rowcount


def _write_slot(conn, customer_number: str, name: str, slot: addresses.Slot) -> None:
    if slot.address is None or not _valid(slot.address):
        conn.execute("DELETE FROM notifier.addresses WHERE customer_number = %s AND slot = %s",
                     (customer_number, name))
        return
    conn.execute(
        "INSERT INTO notifier.addresses (customer_number, slot, address, enabled, receives_mail_otp, "
        "pending_mail_otp) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (customer_number, slot) DO UPDATE SET "
        "address = excluded.address, enabled = excluded.enabled, receives_mail_otp = excluded.receives_mail_otp, "
        "pending_mail_otp = excluded.pending_mail_otp, updated_at = now()",
        (customer_number, name, slot.address, slot.enabled, slot.receives_mail_otp, slot.pending))


def project(conn, customer_number: str, events) -> None:
    """Apply notifier address events just appended (or replayed) for one customer."""
    registered, book = load(conn, customer_number)
    touched = set()
    for event in events:
        book = addresses.evolve(book, event)
        touched.add(event.data.get("slot"))
    for name in addresses.SLOTS:
        if name in touched:
            _write_slot(conn, customer_number, name, book.slot(name))


def load(conn, customer_number: str) -> tuple[str | None, addresses.Book]:
    """(registered address, the select slots) as the mail handlers use them."""
    rows = conn.execute(
        "SELECT slot, address, enabled, receives_mail_otp, pending_mail_otp FROM notifier.addresses "
        "WHERE customer_number = %s", (customer_number,)).fetchall()
    registered, slots = None, {}
    for name, address, enabled, receives, pending in rows:
        if name == mo.REGISTERED:
            registered = address
        else:
            slots[name] = addresses.Slot(address, enabled, receives, pending)
    return registered, addresses.Book(customer_number=customer_number, **slots)


def rebuild(store, batch: int = 1000) -> int:
    """Empty the address book and replay identity's imports and the notifyaddr streams."""
    store.seal_all()
    count = 0
    with store.transaction() as conn:
        conn.execute("DELETE FROM notifier.addresses")
        for category in ("customer", contract.ADDRESS_CATEGORY):
            position = 0
            while True:
                events = store.read_category(category, position, batch, conn=conn)
                if not events:
                    break
                for event in events:
                    number = event.data.get("customer_number") or event.stream_name.split("-", 1)[1]
                    if event.type == "legacy_customer_imported":
                        set_registered(conn, number, event.data.get("email"))
                        count += 1
                    elif event.type in contract.ADDRESS_EVENT_TYPES:
                        project(conn, number, [event])
                        count += 1
                position = events[-1].global_position
    return count
