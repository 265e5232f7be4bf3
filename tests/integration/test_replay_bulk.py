"""The bulk rebuild path of `tsunagi replay` (R-PLT-4): the rebuilds read their categories in
one pass (services/eventstore/bulk_read.py), fold rows in memory and COPY them. They must
leave exactly the rows the services' live, event-by-event projection leaves — checked here
on a generated log of realistic journeys (tests/bench/bench_operator.py's generator) plus
the corner cases the generator does not produce (a repeated event, an update before its
insert, a removed select address, an invalid e-mail, a shredded customer)."""
from __future__ import annotations

import json
import uuid

import psycopg

from contracts.events import Actor, Metadata, NewEvent
from services import crypto, db
from services.eventstore import ANY
from services.eventstore.bulk_read import count_events, read_events
from tests.integration.test_cli import tsunagi

META = Metadata(actor=Actor("system", "test"), correlation_id=str(uuid.uuid4()), service="test")


def _admin(settings, scratch_db):
    return db.admin_url_for(settings, db.dbname_of(scratch_db))


def _generate(settings, url: str, customers: int) -> None:
    from tests.bench import bench_operator
    old = bench_operator.CHUNK_CUSTOMERS
    bench_operator.CHUNK_CUSTOMERS = customers
    try:
        bench_operator.Generator(settings, url, seed=61).fill(1)
    finally:
        bench_operator.CHUNK_CUSTOMERS = old


def _corner_cases(store) -> str:
    """Events the generator never writes; returns the customer number to shred."""
    app, vid, mail = (str(uuid.uuid4()) for _ in range(3))
    n1, n2, shredded = "4000000001", "4000000002", "4000000003"
    store.append(f"otpapp-{app}", [
        NewEvent("otp_application_submitted", {
            "application_id": app, "customer_number": n1, "email": "x@example.jp", "verification_id": vid,
            "expires_at": "2026-10-01T00:05:00+00:00", "submitted_at": "2026-10-01T00:00:00+00:00"}),
        NewEvent("otp_application_voided", {"application_id": app, "customer_number": n1, "reason": "again"}),
        NewEvent("otp_application_submitted", {      # the same id again: ON CONFLICT DO UPDATE
            "application_id": app, "customer_number": n1, "email": "x@example.jp", "verification_id": "other",
            "expires_at": "2026-10-02T00:05:00+00:00", "submitted_at": "2026-10-02T00:00:00+00:00"}),
    ], ANY, META, subject=n1)
    # An update whose row was never inserted changes nothing.
    store.append(f"otpapp-{uuid.uuid4()}", [NewEvent("otp_application_verified", {
        "application_id": str(uuid.uuid4()), "customer_number": n1})], ANY, META, subject=n1)
    store.append(f"mail-{mail}", [
        NewEvent("mail_queued", {"mail_id": mail, "template": "t", "customer_number": n1, "to": ["x@example.jp"],
                                 "params": {}, "message_id": f"<{mail}@x>", "queued_at": "2026-10-01T00:00:00+00:00"}),
        NewEvent("mail_deferred", {"mail_id": mail, "attempt": 1, "error": "421",
                                   "next_attempt_at": "2026-10-01T00:01:00+00:00"}),
        NewEvent("mail_failed", {"mail_id": mail, "attempts": 2, "error": "550", "permanent": True}),
        NewEvent("mail_queued", {"mail_id": mail, "template": "u", "customer_number": n2, "to": [],
                                 "params": {}, "message_id": "<again@x>", "queued_at": "2026-10-03T00:00:00+00:00"}),
    ], ANY, META, subject=n1)
    store.append(f"phoneverif-{vid}", [
        NewEvent("phone_verification_started", {
            "verification_id": vid, "application_id": app, "customer_number": n1, "caller": "+819012345678",
            "call_to": "+81120111222", "call_to_display": "0120-111-222", "window_seconds": 300,
            "started_at": "2026-10-01T00:00:00+00:00", "expires_at": "2026-10-01T00:05:00+00:00"}),
        NewEvent("phone_verification_attempt_failed", {"verification_id": vid, "reason": "unknown_caller"}),
        NewEvent("phone_verification_attempt_failed", {"verification_id": vid, "reason": "withheld"}),
        NewEvent("phone_verification_expired", {"verification_id": vid}),
    ], ANY, META, subject=n1)
    challenge = str(uuid.uuid4())
    for number, email in ((n1, "not-an-address"), (n2, "n2@example.jp"), (shredded, "gone@example.jp")):
        store.append(f"customer-{number}", [
            NewEvent("legacy_customer_imported", {"customer_number": number, "record_digest": f"d{number}",
                                                  "email": email}),
            NewEvent("login_challenged", {"customer_number": number, "challenge_id": challenge,
                                          "expires_at": "2026-10-01T00:05:00+00:00"}),
        ], ANY, META)
    store.append(f"customer-{n1}", [NewEvent("legacy_customer_imported", {   # a later, valid one
        "customer_number": n1, "record_digest": "second", "email": "n1@example.jp"})], ANY, META)
    for number in (n2, shredded):
        store.append(f"notifyaddr-{number}", [
            NewEvent("select_address_set", {"customer_number": number, "slot": "select1",
                                            "address": f"s1{number}@example.jp", "enabled": True,
                                            "receives_mail_otp": False}),
            NewEvent("select_address_set", {"customer_number": number, "slot": "select2",
                                            "address": f"s2{number}@example.jp", "enabled": False,
                                            "receives_mail_otp": False}),
            NewEvent("mail_otp_destination_requested", {"customer_number": number, "slot": "select2"}),
            NewEvent("select_address_removed", {"customer_number": number, "slot": "select1",
                                                "address": f"s1{number}@example.jp", "reason": "removed"}),
            NewEvent("mail_otp_destination_confirmed", {"customer_number": number, "slot": "select2"}),
            NewEvent("mail_otp_destination_requested", {"customer_number": number, "slot": "select1"}),
        ], ANY, META)
    return shredded


def _project_live(store, url: str) -> int:
    """Every sealed event through the services' own live projection functions, one by one."""
    from identity import readmodels
    from notifier import addresses_projection, projection as outbox
    from otp_service import mail_otp_projection, projection as otp
    from phone_auth import projection as phone
    index = phone.settings_caller_index()
    seen, position = 0, 0
    with psycopg.connect(url) as conn:
        while True:
            events = store.read_all(position, 500, conn=conn)
            if not events:
                return seen
            for ev in events:
                category, _, sid = ev.stream_name.partition("-")
                if category == "customer":
                    readmodels.apply(conn, ev.stream_name, ev.type, ev.data)
                    if ev.type == "legacy_customer_imported":
                        addresses_projection.set_registered(conn, store.keyring, sid, ev.data.get("email"))
                elif category == "notifyaddr":
                    addresses_projection.project(conn, store.keyring, sid, [ev])
                elif category in otp.CATEGORIES:
                    otp.project(conn, ev.stream_name, ev.stream_version, ev)
                elif category == "mail":
                    outbox.project(conn, ev.stream_version, ev)
                elif category == "phoneverif" and ev.type in phone._PROJECTED:
                    phone.apply(conn, ev.type, ev.data, ev.stream_version, index)
                elif category == "mailotp":
                    mail_otp_projection.project_all(conn, sid, ev.stream_version, [ev])
                seen += 1
            position = events[-1].global_position


def test_bulk_rebuilds_equal_the_live_projections_of_a_generated_log_R_PLT_4(settings, scratch_db, scratch_store):
    admin = _admin(settings, scratch_db)
    _generate(settings, admin, customers=60)
    shredded = _corner_cases(scratch_store)
    scratch_store.shred(shredded, META)
    scratch_store.seal_all()
    assert _project_live(scratch_store, admin) > 1000

    check = tsunagi("replay", "--all", "--check", "--json", env={"DATABASE_URL": scratch_db}, timeout=180)
    out = json.loads(check.stdout)
    assert check.returncode == 0 and out["ok"], [d for p in out["projections"] for d in p["differences"]]
    with psycopg.connect(admin) as c:
        for table in ("identity.legacy_imports", "identity.login_challenges", "otp.applications", "otp.tokens",
                      "otp.customers", "notifier.outbox", "notifier.addresses", "phone_auth.verifications",
                      "otp.mail_otp_customers"):
            assert c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
        # The shredded customer's registered and select addresses are gone, not re-sealed.
        assert not c.execute("SELECT 1 FROM notifier.addresses WHERE customer_number = %s",
                             (shredded,)).fetchall()
        assert c.execute("SELECT attempts, status FROM phone_auth.verifications WHERE customer_number = "
                         "'4000000001'").fetchone() == (["unknown_caller", "withheld"], "expired")

    # ...and --check still sees a row that differs from the log.
    with psycopg.connect(admin) as c:
        c.execute("UPDATE notifier.outbox SET attempts = attempts + 7 WHERE mail_id = "
                  "(SELECT mail_id FROM notifier.outbox LIMIT 1)")
    check = tsunagi("replay", "notifier_outbox", "--check", "--json", env={"DATABASE_URL": scratch_db})
    assert check.returncode == 1 and len(json.loads(check.stdout)["projections"][0]["differences"]) == 2


def test_read_events_is_the_sealed_log_in_order_opening_only_the_named_fields_R_PLT_4(scratch_store):
    number = "4100000001"
    scratch_store.append(f"customer-{number}", [
        NewEvent("legacy_customer_imported", {"customer_number": number, "record_digest": "d",
                                              "email": "a@example.jp", "phones": ["090-1111-2222"]}),
        NewEvent("login_challenged", {"customer_number": number, "challenge_id": str(uuid.uuid4()),
                                      "expires_at": "2026-10-01T00:05:00+00:00"}),
    ], ANY, META)
    scratch_store.seal_all()
    with scratch_store.pool.connection() as conn:
        with conn.transaction():
            # Appended in this transaction: committed nowhere, sealed never, so not in the log.
            scratch_store.append(f"customer-{number}", [NewEvent("login_succeeded", {"customer_number": number})],
                                 ANY, META, conn=conn)
            events = list(read_events(conn, scratch_store.keyring, ("customer",), reveal=("email",)))
            assert [e.type for e in events] == ["legacy_customer_imported", "login_challenged"]
            assert events[0].global_position < events[1].global_position
            assert events[0].data["email"] == "a@example.jp" and crypto.is_sealed(events[0].data["phones"])
            assert events[0].stream_id == number and events[0].stream_version == 1
            only = list(read_events(conn, scratch_store.keyring, ("customer",), types=("login_challenged",)))
            assert [e.type for e in only] == ["login_challenged"]
            assert count_events(conn, ("customer",)) == 2
            raise psycopg.Rollback()      # the unsealed append goes away
    scratch_store.shred(number, META)
    with scratch_store.pool.connection() as conn:
        with conn.transaction():
            events = list(read_events(conn, scratch_store.keyring, ("customer",), reveal=("email",)))
            assert events[0].data["email"] == crypto.REDACTED
