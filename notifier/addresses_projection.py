"""The address book read model (deploy/sql/071_notification_addresses.sql): the registered
address from identity's ``legacy_customer_imported`` and the select addresses from
``notifyaddr-<customer_number>``. Rebuildable by replaying both categories.

The addresses are personal data, so the ``address`` column holds them encrypted under the
customer's data key, as the events do: without the keys the table shows no address, and a
crypto-shredded customer's rows could not be read even if ``forget`` had not run yet. The
encryption is deterministic so that a replay writes identical rows (``replay --check``).
"""
from __future__ import annotations

import json

from contracts import mail_otp as mo
from contracts import notifier as contract
from notifier import addresses
from services import crypto

FIELD = "notification_address"


def _seal(conn, keyring, customer_number: str, address: str) -> str:
    key = keyring.data_key(conn, customer_number, create=True)
    return json.dumps(crypto.seal_value_deterministic(key, customer_number, FIELD, address))


def _open(key: bytes | None, stored: str) -> str | None:
    try:
        sealed = json.loads(stored)
    except ValueError:
        sealed = None
    if not crypto.is_sealed(sealed):
        return stored  # a row written before addresses were encrypted; a replay rewrites it
    value = crypto.open_value(key, FIELD, sealed)
    return None if value == crypto.REDACTED else value


def _valid(address) -> bool:
    return isinstance(address, str) and "@" in address


def set_registered(conn, keyring, customer_number: str, address) -> None:
    if not _valid(address):
        conn.execute("DELETE FROM notifier.addresses WHERE customer_number = %s AND slot = 'registered'",
                     (customer_number,))
        return
    conn.execute(
        "INSERT INTO notifier.addresses (customer_number, slot, address, enabled, receives_mail_otp) "
        "VALUES (%s, 'registered', %s, true, true) ON CONFLICT (customer_number, slot) DO UPDATE SET "
        "address = excluded.address, updated_at = now()",
        (customer_number, _seal(conn, keyring, customer_number, address)))


def forget(conn, customer_number: str) -> int:
    """The customer was crypto-shredded: no copy of an address may remain here."""
    return conn.execute("DELETE FROM notifier.addresses WHERE customer_number = %s",
                        (customer_number,)).rowcount


def _write_slot(conn, keyring, customer_number: str, name: str, slot: addresses.Slot) -> None:
    if slot.address is None or not _valid(slot.address):
        conn.execute("DELETE FROM notifier.addresses WHERE customer_number = %s AND slot = %s",
                     (customer_number, name))
        return
    conn.execute(
        "INSERT INTO notifier.addresses (customer_number, slot, address, enabled, receives_mail_otp, "
        "pending_mail_otp) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (customer_number, slot) DO UPDATE SET "
        "address = excluded.address, enabled = excluded.enabled, receives_mail_otp = excluded.receives_mail_otp, "
        "pending_mail_otp = excluded.pending_mail_otp, updated_at = now()",
        (customer_number, name, _seal(conn, keyring, customer_number, slot.address), slot.enabled,
         slot.receives_mail_otp, slot.pending))


def project(conn, keyring, customer_number: str, events) -> None:
    """Apply notifier address events just appended (or replayed) for one customer."""
    registered, book = load(conn, keyring, customer_number)
    touched = set()
    for event in events:
        book = addresses.evolve(book, event)
        touched.add(event.data.get("slot"))
    for name in addresses.SLOTS:
        if name in touched:
            _write_slot(conn, keyring, customer_number, name, book.slot(name))


def load(conn, keyring, customer_number: str) -> tuple[str | None, addresses.Book]:
    """(registered address, the select slots) as the mail handlers use them."""
    rows = conn.execute(
        "SELECT slot, address, enabled, receives_mail_otp, pending_mail_otp FROM notifier.addresses "
        "WHERE customer_number = %s", (customer_number,)).fetchall()
    key = keyring.data_key(conn, customer_number, create=False) if rows else None
    registered, slots = None, {}
    for name, stored, enabled, receives, pending in rows:
        address = _open(key, stored)
        if name == mo.REGISTERED:
            registered = address
        else:
            slots[name] = addresses.Slot(address, enabled, receives, pending)
    return registered, addresses.Book(customer_number=customer_number, **slots)


def rebuild(store, batch: int = 1000, progress=None) -> int:
    """Empty the address book and replay identity's imports and the notifyaddr streams.

    Both are read in one pass, only the events that change the book and only their address
    fields opened; each customer's rows are folded in memory as ``set_registered`` and
    ``project`` leave them (a slot whose address is gone or invalid has no row), sealed and
    written with one COPY. The registered row and the select rows are independent, so the
    order between the two categories does not matter. Returns the events applied."""
    from services.eventstore.bulk_read import copy_rows, read_events
    store.seal_all()
    count = 0
    registered: dict[str, str | None] = {}
    books: dict[str, dict[str, addresses.Slot]] = {}
    wanted = {("customer", "legacy_customer_imported")} | {
        (contract.ADDRESS_CATEGORY, t) for t in contract.ADDRESS_EVENT_TYPES}
    with store.transaction() as conn:
        conn.execute("DELETE FROM notifier.addresses")
        for event in read_events(conn, store.keyring, ("customer", contract.ADDRESS_CATEGORY),
                                 types=("legacy_customer_imported",) + contract.ADDRESS_EVENT_TYPES,
                                 reveal=("email", "address"), progress=progress):
            category, _, stream_id = event.stream_name.partition("-")
            if (category, event.type) not in wanted:
                continue
            number = event.data.get("customer_number") or stream_id
            count += 1
            if event.type == "legacy_customer_imported":
                address = event.data.get("email")
                registered[number] = address if _valid(address) else None
                continue
            slots = books.setdefault(number, {})
            book = addresses.evolve(addresses.Book(customer_number=number, **slots), event)
            name = event.data.get("slot")
            if name in addresses.SLOTS:
                slot = book.slot(name)
                if slot.address is None or not _valid(slot.address):
                    slots.pop(name, None)       # the row is deleted: it reloads as an empty slot
                else:
                    slots[name] = slot

        # Sealed before the COPY starts: a subject without a key yet gets one by a query.
        rows = [(number, mo.REGISTERED, _seal(conn, store.keyring, number, address), True, True, False)
                for number, address in registered.items() if address is not None]
        rows += [(number, name, _seal(conn, store.keyring, number, slot.address), slot.enabled,
                  slot.receives_mail_otp, slot.pending)
                 for number, slots in books.items() for name, slot in slots.items()]
        copy_rows(conn, "notifier.addresses",
                  ("customer_number", "slot", "address", "enabled", "receives_mail_otp", "pending_mail_otp"),
                  rows)
    if progress:
        progress(count)
    return count
