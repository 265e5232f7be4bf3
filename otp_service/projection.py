"""otp_service's read models (deploy/sql/060_otp.sql): written in the same transaction as the
events they derive from, and rebuildable by replaying the otpapp/otptoken/otpcust categories.

Also the service's cross-aggregate locks: rules such as "one application in flight per
customer" or "at most 10 tokens per OTP app" span several streams, so the service counts
them here inside a transaction holding a PostgreSQL advisory lock on the customer / the app
instance (always in that order, so two activations cannot deadlock).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from contracts import otp as contract
from contracts.events import NewEvent, RecordedEvent
from otp_service import domain


def lock(conn, kind: str, key: str) -> None:
    """Serialise, until the transaction ends, everyone deciding about the same customer/app."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"otp:{kind}:{key}",))


# -- writing -------------------------------------------------------------------------------------------

def project(conn, stream_name: str, version: int, event: NewEvent | RecordedEvent) -> None:
    category = stream_name.split("-", 1)[0]
    if category == contract.APPLICATION_CATEGORY:
        _project_application(conn, version, event)
    elif category == contract.TOKEN_CATEGORY:
        _project_token(conn, version, event)
    elif category == contract.CUSTOMER_CATEGORY:
        _project_customer(conn, version, event)


def project_all(conn, stream_name: str, new_version: int, events: list[NewEvent]) -> None:
    """Project events just appended; ``new_version`` is what ``EventStore.append`` returned."""
    first = new_version - len(events) + 1
    for offset, event in enumerate(events):
        project(conn, stream_name, first + offset, event)


def project_customer_from(conn, state: domain.CustomerOtp, new_version: int, events: list[NewEvent]) -> None:
    """Project events just appended to a customer stream with ``expected_version=state.version``,
    where ``state`` is this stream's read-model row as the caller read it: the append succeeding
    proves nothing moved the stream (nor, projected in the same transactions, the row) since,
    so the row is written once from ``state`` without reading it again."""
    for event in events:
        state = domain.evolve_customer(state, event)
    _write_customer(conn, state, new_version)


def _project_application(conn, version: int, event) -> None:
    d, t = event.data, event.type
    if t == contract.OTP_APPLICATION_SUBMITTED.name:
        conn.execute(
            "INSERT INTO otp.applications (application_id, customer_number, status, verification_id, "
            "expires_at, submitted_at, stream_version) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (application_id) DO UPDATE SET status = excluded.status, "
            "stream_version = excluded.stream_version, updated_at = now()",
            (d["application_id"], d["customer_number"], contract.AWAITING_CALL, d.get("verification_id"),
             d["expires_at"], d["submitted_at"], version))
        return
    sets, args = {
        contract.OTP_APPLICATION_VERIFIED.name: ("status = 'verified'", ()),
        contract.TOKEN_ISSUED.name: ("status = 'issued', service_id = %s, user_id = %s",
                                     (d.get("service_id"), d.get("user_id"))),
        contract.OTP_APPLICATION_EXPIRED.name: ("status = 'expired', reason = %s", (d.get("reason"),)),
        contract.OTP_ACTIVATION_FAILED.name: ("activation_failures = %s", (d.get("consecutive_failures"),)),
        contract.OTP_APPLICATION_VOIDED.name: ("status = 'failed', reason = %s", (d.get("reason"),)),
        contract.OTP_APPLICATION_ACTIVATED.name: ("status = 'activated', token_serial = %s",
                                                  (d.get("token_serial"),)),
    }.get(t, (None, ()))
    if sets is None:
        return
    conn.execute(f"UPDATE otp.applications SET {sets}, stream_version = %s, updated_at = now() "
                 "WHERE application_id = %s", (*args, version, d["application_id"]))


def _project_token(conn, version: int, event) -> None:
    d, t = event.data, event.type
    if t == contract.TOKEN_ACTIVATED.name:
        secret = d.get("secret") or {}
        conn.execute(
            "INSERT INTO otp.tokens (token_serial, customer_number, application_id, app_instance_id, "
            "status, display_name, secret_kid, secret_sealed, activated_at, stream_version) "
            "VALUES (%s, %s, %s, %s, 'active', %s, %s, %s, %s, %s) "
            "ON CONFLICT (token_serial) DO NOTHING",
            (d["token_serial"], d["customer_number"], d["application_id"], d["app_instance_id"],
             d["display_name"], secret.get("kid"), secret.get("ct"), d["activated_at"], version))
    elif t == contract.TOKEN_DISPLAY_NAME_SET.name:
        conn.execute("UPDATE otp.tokens SET suffix = %s, display_name = %s, stream_version = %s, "
                     "updated_at = now() WHERE token_serial = %s",
                     (d.get("suffix"), d["display_name"], version, d["token_serial"]))
    elif t == contract.TOKEN_RELEASED.name:
        # The sealed secret leaves the read model with the token: a released token can never
        # verify again, not even by mistake.
        conn.execute("UPDATE otp.tokens SET status = 'released', secret_kid = NULL, secret_sealed = NULL, "
                     "released_at = %s, stream_version = %s, updated_at = now() WHERE token_serial = %s",
                     (d.get("at"), version, d["token_serial"]))


def _project_customer(conn, version: int, event) -> None:
    number = event.data["customer_number"]
    _write_customer(conn, domain.evolve_customer(customer_state(conn, number), event), version)


def _write_customer(conn, state: domain.CustomerOtp, version: int) -> None:
    number = state.customer_number
    conn.execute(
        "INSERT INTO otp.customers (customer_number, consecutive_failures, locked, locked_at, "
        "last_token_serial, last_time_step, stream_version) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (customer_number) DO UPDATE SET consecutive_failures = excluded.consecutive_failures, "
        "locked = excluded.locked, locked_at = excluded.locked_at, "
        "last_token_serial = excluded.last_token_serial, last_time_step = excluded.last_time_step, "
        "stream_version = excluded.stream_version, updated_at = now()",
        (number, state.consecutive_failures, state.locked, state.locked_at, state.last_token_serial,
         state.last_time_step, version))


# -- reading -------------------------------------------------------------------------------------------

def application(conn, application_id: str):
    return conn.execute(
        "SELECT application_id::text, customer_number, status, reason, service_id, user_id, "
        "expires_at, stream_version FROM otp.applications WHERE application_id = %s",
        (application_id,)).fetchone()


def application_id_by_user_id(conn, user_id: str) -> str | None:
    row = conn.execute("SELECT application_id::text FROM otp.applications WHERE user_id = %s",
                       (user_id,)).fetchone()
    return row[0] if row else None


def customer_applications(conn, customer_number: str, now: datetime,
                          grace: timedelta) -> domain.CustomerApplications:
    rows = conn.execute(
        "SELECT application_id::text, status, expires_at FROM otp.applications "
        "WHERE customer_number = %s AND status IN ('awaiting_call', 'verified')",
        (customer_number,)).fetchall()
    waiting = next((r[0] for r in rows if domain.in_flight(r[1], r[2], now, grace)), None)
    token = active_token(conn, customer_number)
    return domain.CustomerApplications(in_flight_application=waiting,
                                       active_token=token[0] if token else None)


def active_token(conn, customer_number: str):
    """(token_serial, secret_kid, secret_sealed) of the customer's active token, or None."""
    return conn.execute(
        "SELECT token_serial, secret_kid, secret_sealed FROM otp.tokens "
        "WHERE customer_number = %s AND status = 'active'", (customer_number,)).fetchone()


def tokens_on_instance(conn, app_instance_id: str) -> int:
    return conn.execute("SELECT count(*) FROM otp.tokens WHERE app_instance_id = %s AND status = 'active'",
                        (app_instance_id,)).fetchone()[0]


def customer_state(conn, customer_number: str) -> domain.CustomerOtp:
    row = conn.execute(
        "SELECT consecutive_failures, locked, locked_at, last_token_serial, last_time_step, stream_version "
        "FROM otp.customers WHERE customer_number = %s", (customer_number,)).fetchone()
    if row is None:
        return domain.CustomerOtp(customer_number=customer_number)
    return domain.CustomerOtp(customer_number=customer_number, consecutive_failures=row[0], locked=row[1],
                              locked_at=row[2], last_token_serial=row[3], last_time_step=row[4],
                              version=row[5])


def token_and_state(conn, customer_number: str):
    """``(active_token(...), customer_state(...))`` in one round trip and one snapshot (the
    OTP check reads both on every verification)."""
    row = conn.execute(
        "SELECT t.token_serial, t.secret_kid, t.secret_sealed, c.customer_number IS NOT NULL,"
        "       c.consecutive_failures, c.locked, c.locked_at, c.last_token_serial, c.last_time_step,"
        "       c.stream_version"
        "  FROM (SELECT %s::text AS number) q"
        "  LEFT JOIN otp.tokens t ON t.customer_number = q.number AND t.status = 'active'"
        "  LEFT JOIN otp.customers c ON c.customer_number = q.number"
        " LIMIT 1", (customer_number,)).fetchone()
    token = tuple(row[0:3]) if row[0] is not None else None
    if not row[3]:
        return token, domain.CustomerOtp(customer_number=customer_number)
    return token, domain.CustomerOtp(customer_number=customer_number, consecutive_failures=row[4],
                                     locked=row[5], locked_at=row[6], last_token_serial=row[7],
                                     last_time_step=row[8], version=row[9])


# -- rebuilding ----------------------------------------------------------------------------------------

CATEGORIES = (contract.APPLICATION_CATEGORY, contract.TOKEN_CATEGORY, contract.CUSTOMER_CATEGORY)


def rebuild(store, batch: int = 1000, progress=None) -> int:
    """Empty the read models and replay the sealed log into them, in one transaction.

    Every row is folded in memory from its stream's events (the same effect the live
    statements above have, event by event) and each table is written with one COPY: no
    statement per event and no row read back. Only the token secret is opened (it is the one
    personal field a table keeps). Returns the events of the three categories."""
    from services.eventstore.bulk_read import copy_rows, read_events
    store.seal_all()
    applications: dict[str, dict] = {}
    tokens: dict[str, dict] = {}
    folded: dict[str, domain.CustomerOtp] = {}
    with store.transaction() as conn:
        conn.execute("DELETE FROM otp.customers")
        conn.execute("DELETE FROM otp.tokens")
        conn.execute("DELETE FROM otp.applications")
        count = 0
        # Only otp_service's own event types (as the live statements, which ignore the rest).
        for event in read_events(conn, store.keyring, CATEGORIES, types=contract.EVENT_TYPES,
                                 reveal=("secret",), progress=progress):
            count += 1
            category = event.stream_name.split("-", 1)[0]
            if category == contract.CUSTOMER_CATEGORY:
                number = event.data["customer_number"]
                folded[number] = domain.evolve_customer(
                    folded.get(number) or domain.CustomerOtp(customer_number=number), event)
            elif category == contract.APPLICATION_CATEGORY:
                _fold_application(applications, event.stream_version, event)
            else:
                _fold_token(tokens, event.stream_version, event)
        copy_rows(conn, "otp.applications", _APPLICATION_COLUMNS,
                  (tuple(r[c] for c in _APPLICATION_COLUMNS) for r in applications.values()))
        copy_rows(conn, "otp.tokens", _TOKEN_COLUMNS,
                  (tuple(r[c] for c in _TOKEN_COLUMNS) for r in tokens.values()))
        copy_rows(conn, "otp.customers", _CUSTOMER_COLUMNS, (
            (s.customer_number, s.consecutive_failures, s.locked, s.locked_at, s.last_token_serial,
             s.last_time_step, s.version) for s in folded.values()))
    if progress:
        progress(count)
    return count


_APPLICATION_COLUMNS = ("application_id", "customer_number", "status", "reason", "verification_id",
                        "service_id", "user_id", "token_serial", "activation_failures", "expires_at",
                        "submitted_at", "stream_version")
_TOKEN_COLUMNS = ("token_serial", "customer_number", "application_id", "app_instance_id", "status",
                  "suffix", "display_name", "secret_kid", "secret_sealed", "activated_at", "released_at",
                  "stream_version")
_CUSTOMER_COLUMNS = ("customer_number", "consecutive_failures", "locked", "locked_at", "last_token_serial",
                     "last_time_step", "stream_version")


def _fold_application(rows: dict[str, dict], version: int, event) -> None:
    """``_project_application`` on an in-memory row (keyed like the primary key)."""
    d, t = event.data, event.type
    key = str(uuid.UUID(str(d["application_id"])))
    row = rows.get(key)
    if t == contract.OTP_APPLICATION_SUBMITTED.name:
        if row is None:
            rows[key] = {"application_id": key, "customer_number": d["customer_number"],
                         "status": contract.AWAITING_CALL, "reason": None,
                         "verification_id": d.get("verification_id"), "service_id": None, "user_id": None,
                         "token_serial": None, "activation_failures": 0, "expires_at": d["expires_at"],
                         "submitted_at": d["submitted_at"], "stream_version": version}
        else:       # ON CONFLICT DO UPDATE SET status, stream_version
            row["status"], row["stream_version"] = contract.AWAITING_CALL, version
        return
    if row is None:  # an UPDATE of no row
        return
    if t == contract.OTP_APPLICATION_VERIFIED.name:
        row["status"] = "verified"
    elif t == contract.TOKEN_ISSUED.name:
        row.update(status="issued", service_id=d.get("service_id"), user_id=d.get("user_id"))
    elif t == contract.OTP_APPLICATION_EXPIRED.name:
        row.update(status="expired", reason=d.get("reason"))
    elif t == contract.OTP_ACTIVATION_FAILED.name:
        row["activation_failures"] = d.get("consecutive_failures")
    elif t == contract.OTP_APPLICATION_VOIDED.name:
        row.update(status="failed", reason=d.get("reason"))
    elif t == contract.OTP_APPLICATION_ACTIVATED.name:
        row.update(status="activated", token_serial=d.get("token_serial"))
    else:
        return
    row["stream_version"] = version


def _fold_token(rows: dict[str, dict], version: int, event) -> None:
    """``_project_token`` on an in-memory row."""
    d, t = event.data, event.type
    if t == contract.TOKEN_ACTIVATED.name:
        if d["token_serial"] in rows:   # ON CONFLICT DO NOTHING
            return
        secret = d.get("secret") or {}
        rows[d["token_serial"]] = {
            "token_serial": d["token_serial"], "customer_number": d["customer_number"],
            "application_id": d["application_id"], "app_instance_id": d["app_instance_id"], "status": "active",
            "suffix": None, "display_name": d["display_name"], "secret_kid": secret.get("kid"),
            "secret_sealed": secret.get("ct"), "activated_at": d["activated_at"], "released_at": None,
            "stream_version": version}
        return
    row = rows.get(d["token_serial"])
    if row is None:
        return
    if t == contract.TOKEN_DISPLAY_NAME_SET.name:
        row.update(suffix=d.get("suffix"), display_name=d["display_name"], stream_version=version)
    elif t == contract.TOKEN_RELEASED.name:
        row.update(status="released", secret_kid=None, secret_sealed=None, released_at=d.get("at"),
                   stream_version=version)
