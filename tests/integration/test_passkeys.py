"""Biometric login with WebAuthn through the real gateway and the real passkeys service over
RabbitMQ and PostgreSQL (SPEC R-INI-8, R-INI-9), with a software authenticator that sends what
a browser's ``PublicKeyCredential.toJSON()`` sends (tests/integration/webauthn_soft.py).

The customer session that registration needs is the one the ID/password login creates
(``SessionStore.create(number, "customer")``, as ``POST /api/v1/login`` does); identity's login
itself is tested in test_identity_service.py. A passkey login asks the real identity service
for the customer's login standing, so each customer here also exists in identity: their events
are appended to the ``customer-`` stream as identity writes them (import, initial operation
done; a lock, an operator's re-issue), which the whole procedure over HTTP and ``tsunagi
operator`` proves in test_operator_procedures.py.
"""
from __future__ import annotations

import json
import uuid

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from contracts.events import Actor, Metadata, NewEvent
from gateway.service import GatewayService
from gateway.sessions import SessionStore
from identity import passkeys as passkeys_service
from identity import readmodels as identity_readmodels
from identity.domain.legacy_record import validate_record
from identity.passkeys import PasskeysService
from identity.service import IdentityService
from services.cli.operator import call_service
from services.eventstore import ANY
from tests import vhosts
from tests.integration.webauthn_soft import SoftAuthenticator
from tests.support.net import free_port
from tests.support.services import running_with_relay
from tests.support.waiting import wait_for
from tests.support.web import http_json

MAX_PASSKEYS = 3


@pytest.fixture(scope="module")
def system(settings, store):
    with vhosts.own(settings.amqp_uri, "tsunagi_passkeys_") as amqp_uri:
        web_port = free_port()
        config = {**settings.nameko_config(), "AMQP_URI": amqp_uri,
                  "max_workers": 10, "WEB_SERVER_ADDRESS": f"127.0.0.1:{web_port}",
                  "DATABASE_URL": settings.database_url, "WEBAUTHN_MAX_CREDENTIALS": MAX_PASSKEYS}
        with running_with_relay(store, config, (PasskeysService, IdentityService, GatewayService)):
            yield {"port": web_port, "origin": f"http://localhost:{web_port}", "sessions": SessionStore(store.pool),
                   "amqp_uri": amqp_uri, "store": store}


def call(system, method, path, body=None, token=None, raw: bytes | None = None):
    return http_json(system["port"], method, path, body, token, raw=raw)


def new_customer() -> str:
    return f"{uuid.uuid4().int % 10**10:010d}"


IDENTITY = Metadata(actor=Actor("system", "test"), service="identity")


def in_identity(system, customer, *facts: tuple[str, dict], migrated=True) -> None:
    """Identity's events for the customer (personal fields sealed, read models projected as
    identity's own commit does): imported, and through the initial operation when ``migrated``."""
    store = system["store"]
    stream = f"customer-{customer}"
    if not store.read_stream(stream):
        record = validate_record({"customer_number": customer, "login_password_verifier":
                                  "pbkdf2_sha256$1000$salt$" + "A" * 43 + "=", "confirmation_pin_verifier":
                                  "$2b$10$" + "a" * 53, "phones": "090-1234-5678", "email": ""})
        facts = (("legacy_customer_imported", record.event_data()),) + ((("passwords_changed", {
            "login_password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$aGFzaA",
            "confirmation_password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$cGlu",
            "algorithm": "argon2id"}),) if migrated else ()) + facts
    if not facts:
        return
    with store.transaction() as conn:
        store.append(stream, [NewEvent(t, d) for t, d in facts], ANY, IDENTITY, conn=conn)
        for t, d in facts:
            identity_readmodels.apply(conn, stream, t, d)


def password_session(system, customer=None) -> tuple[str, str]:
    """What POST /api/v1/login hands a customer after ID and password (and OTP)."""
    customer = customer or new_customer()
    in_identity(system, customer)
    return customer, system["sessions"].create(customer, "customer")


def register(system, token, authenticator=None, nickname="わたしの端末", expect=201, **create_kw):
    authenticator = authenticator or SoftAuthenticator(system["origin"])
    status, _, options = call(system, "POST", "/api/v1/webauthn/register/options", token=token)
    assert status == 200, options
    credential = authenticator.create(options, **create_kw)
    status, headers, body = call(system, "POST", "/api/v1/webauthn/register",
                                 {"credential": credential, "nickname": nickname,
                                  "challenge_id": options["challenge_id"]}, token)
    assert status == expect, body
    return authenticator, body, headers


def login(system, authenticator, **get_kw):
    status, _, options = call(system, "POST", "/api/v1/webauthn/login/options", {})
    assert status == 200, options
    credential = authenticator.get(options, **get_kw)
    status, headers, body = call(system, "POST", "/api/v1/webauthn/login",
                                 {"credential": credential, "challenge_id": options["challenge_id"]})
    return status, headers, body, credential, options


def events(store, customer):
    return store.read_stream(f"passkeys-{customer}")


def problem_ok(headers, body, status_code: str):
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == status_code and not body["detail"].isascii(), body


# -- the whole flow ------------------------------------------------------------------------------

def test_r_ini_8_register_then_r_ini_9_login_without_id_and_password(system, store):
    customer, token = password_session(system)
    status, _, options = call(system, "POST", "/api/v1/webauthn/register/options", token=token)
    assert status == 200
    assert options["rp"]["id"] == "localhost" and options["attestation"] == "none"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["authenticatorAttachment"] == "platform"
    assert options["user"]["name"] == customer and options["excludeCredentials"] == []
    assert options["challenge_id"] and options["expires_at"]

    authenticator = SoftAuthenticator(system["origin"])
    credential = authenticator.create(options)
    # The bare toJSON() object at the top level is accepted as well as {"credential": …}.
    status, _, created = call(system, "POST", "/api/v1/webauthn/register",
                              {**credential, "nickname": "わたしのiPhone"}, token)
    assert status == 201, created
    assert created["nickname"] == "わたしのiPhone" and created["status"] == "active"
    passkey_id = created["passkey_id"]

    status, _, listed = call(system, "GET", "/api/v1/webauthn/credentials", token=token)
    assert status == 200 and [p["passkey_id"] for p in listed] == [passkey_id]
    assert "public_key" not in listed[0] and authenticator.id not in json.dumps(listed)

    # Later: login with the device only (discoverable credential: no login ID at all).
    status, _, body, assertion, _ = login(system, authenticator)
    assert status == 200, body
    session_token = body["session_token"]
    session = system["sessions"].get(session_token)
    assert session.customer_number == customer and session.kind == "customer"
    status, _, listed = call(system, "GET", "/api/v1/webauthn/credentials", token=session_token)
    assert status == 200 and listed[0]["last_used_at"] is not None

    # A session from a passkey may not enrol more devices: ID and password first (R-INI-8).
    status, headers, body = call(system, "POST", "/api/v1/webauthn/register/options", token=session_token)
    assert status == 403
    problem_ok(headers, body, "password_login_required")

    # The same assertion again (same challenge): refused, and recorded.
    status, headers, body = call(system, "POST", "/api/v1/webauthn/login", {"credential": assertion})
    assert status == 401
    problem_ok(headers, body, "webauthn_challenge_invalid")

    recorded = events(store, customer)
    assert [e.type for e in recorded] == ["passkey_registered", "passkey_login_succeeded", "passkey_login_failed"]
    assert recorded[2].data["reason"] == "challenge_invalid" and recorded[2].data["challenge"] == "used"
    assert recorded[1].data["sign_count"] == 1 and recorded[1].data["origin"] == system["origin"]
    for event in recorded:   # the customer is the actor, also of the logins that had no session yet
        assert event.metadata["actor"] == {"kind": "customer", "id": customer}
        assert event.data["passkey_id"] == passkey_id
    # The customer link (credential ID, key, nickname) is sealed in the log.
    with store.pool.connection() as conn:
        (raw,) = conn.execute("SELECT data::text FROM eventstore.events WHERE stream_name = %s AND "
                              "event_type = 'passkey_registered'", (f"passkeys-{customer}",)).fetchone()
    assert authenticator.id not in raw and "iPhone" not in raw and "public_key" in raw
    assert recorded[0].data["credential_id"] == authenticator.id


def test_r_ini_9_login_options_take_no_login_id(system):
    """Review finding 4: with a login ID the options listed that customer's credential IDs (a
    decoy for others, told apart by count and length), so anybody could learn who has passkeys.
    Only discoverable credentials now; a login ID is refused with a message saying so."""
    customer, token = password_session(system)
    first, _, _ = register(system, token)
    second, _, _ = register(system, token, nickname="タブレット")
    for login_id in (customer, new_customer(), None):
        status, headers, body = call(system, "POST", "/api/v1/webauthn/login/options", {"login_id": login_id})
        assert status == 422, body
        problem_ok(headers, body, "validation_failed")
        assert "ログインID" in body["detail"] and list(body["errors"]) == ["login_id"]
        assert first.id not in json.dumps(body)
    status, _, options = call(system, "POST", "/api/v1/webauthn/login/options", {})
    assert status == 200 and options["userVerification"] == "required"
    assert not options.get("allowCredentials")
    for device in (first, second):       # either device logs in from {} options
        status, _, body, _, _ = login(system, device)
        assert status == 200 and system["sessions"].get(body["session_token"]).customer_number == customer


def test_r_ini_9_strangers_cannot_append_to_a_customers_passkey_stream(system, store):
    """Review finding 1: a known credential ID with a made-up challenge, a registration
    challenge, or a fresh login challenge and a forged signature appended one
    ``passkey_login_failed`` per request. Now only validly signed refusals are recorded, and a
    captured assertion replayed at will is recorded once a minute at most."""
    customer, token = password_session(system)
    victim, _, _ = register(system, token)
    stranger = SoftAuthenticator(system["origin"], credential_id=victim.credential_id)   # other key
    before = len(events(store, customer))
    _, _, reg_options = call(system, "POST", "/api/v1/webauthn/register/options", token=token)
    for attempt in range(3):
        made_up = stranger.get({"challenge": "A" * 43})
        status, headers, body = call(system, "POST", "/api/v1/webauthn/login", {"credential": made_up})
        assert status == 401
        problem_ok(headers, body, "webauthn_challenge_invalid")
        status, _, body = call(system, "POST", "/api/v1/webauthn/login",
                               {"credential": victim.get({"challenge": reg_options["challenge"]}) if attempt == 0
                                else stranger.get({"challenge": reg_options["challenge"]})})
        assert status == 401 and body["code"] == "webauthn_challenge_invalid"
        status, _, body, _, _ = login(system, stranger)            # a fresh login challenge, wrong key
        assert status == 401 and body["code"] == "passkey_login_failed"
    assert len(events(store, customer)) == before

    status, _, body, captured, _ = login(system, victim)
    assert status == 200
    for _ in range(3):
        status, _, body = call(system, "POST", "/api/v1/webauthn/login", {"credential": captured})
        assert status == 401 and body["code"] == "webauthn_challenge_invalid"
    recorded = events(store, customer)[before:]
    assert [e.type for e in recorded] == ["passkey_login_succeeded", "passkey_login_failed"]
    assert recorded[1].data["challenge"] == "used"
    assert login(system, victim)[0] == 200


def test_r_ini_8_sign_counter_not_increasing_refused_and_credential_suspended(system, store):
    customer, token = password_session(system)
    authenticator, created, _ = register(system, token)
    clone = authenticator.clone()
    status, _, body, _, _ = login(system, authenticator)           # counter 1
    assert status == 200
    status, _, body, _, _ = login(system, authenticator)           # counter 2
    assert status == 200
    status, headers, body, _, _ = login(system, clone)             # the clone still says 1
    assert status == 403
    problem_ok(headers, body, "passkey_suspended")
    failed, suspended = events(store, customer)[-2:]
    assert (failed.type, failed.data["reason"]) == ("passkey_login_failed", "sign_count_not_increased")
    assert (failed.data["stored_sign_count"], failed.data["received_sign_count"]) == (2, 1)
    assert (suspended.type, suspended.data["reason"]) == ("passkey_suspended", "possible_clone")
    # The genuine device is refused too until the customer removes and re-registers it.
    status, _, body, _, _ = login(system, authenticator)
    assert status == 403 and body["code"] == "passkey_suspended"
    status, _, listed = call(system, "GET", "/api/v1/webauthn/credentials", token=token)
    assert [p["status"] for p in listed] == ["suspended"]
    status, _, body = call(system, "DELETE", f"/api/v1/webauthn/credentials/{created['passkey_id']}", token=token)
    assert status == 200 and body == {"removed": True, "passkey_id": created["passkey_id"]}


def test_r_ini_8_a_forged_low_counter_does_not_suspend(system, store):
    """Only a valid signature may suspend: a bad signature with a low counter is a failure only."""
    customer, token = password_session(system)
    authenticator, _, _ = register(system, token)
    assert login(system, authenticator)[0] == 200
    stranger = SoftAuthenticator(system["origin"], credential_id=authenticator.credential_id)
    before = len(events(store, customer))
    status, _, body, _, _ = login(system, stranger, sign_count=0)
    assert status == 401 and body["code"] == "passkey_login_failed"
    assert len(events(store, customer)) == before         # unsigned: logged, not recorded
    assert login(system, authenticator)[0] == 200


def test_r_ini_8_wrong_origin_refused_at_registration_and_login(system, store):
    customer, token = password_session(system)
    _, body, headers = register(system, token, origin="https://evil.example", expect=400)
    problem_ok(headers, body, "webauthn_registration_invalid")
    assert events(store, customer) == []
    authenticator, _, _ = register(system, token)
    status, headers, body, _, _ = login(system, authenticator, origin="http://localhost:1")
    assert status == 401
    problem_ok(headers, body, "passkey_login_failed")
    assert [e.type for e in events(store, customer)] == ["passkey_registered"]    # logged only
    # Without user verification (no biometric) the registration is refused too.
    _, body, _ = register(system, token, SoftAuthenticator(system["origin"], user_verified=False), expect=400)
    assert body["code"] == "webauthn_registration_invalid"


def test_r_ini_8_removed_credential_is_refused(system, store):
    customer, token = password_session(system)
    authenticator, created, _ = register(system, token)
    path = f"/api/v1/webauthn/credentials/{created['passkey_id']}"
    status, _, body = call(system, "DELETE", path, token=password_session(system)[1])   # not theirs
    assert status == 404 and body["code"] == "passkey_not_found"
    status, _, body = call(system, "DELETE", path, token=token)
    assert status == 200
    status, headers, body, _, _ = login(system, authenticator)
    assert status == 401
    problem_ok(headers, body, "passkey_login_failed")
    status, _, body = call(system, "DELETE", path, token=token)
    assert status == 404
    removed = events(store, customer)[-1]
    assert removed.type == "passkey_removed" and removed.metadata["actor"] == {"kind": "customer", "id": customer}
    status, _, listed = call(system, "GET", "/api/v1/webauthn/credentials", token=token)
    assert listed == []
    # Removed, the same device may be registered again.
    register(system, token, authenticator)


def test_r_ini_8_challenge_expires_and_is_for_one_purpose(system, store):
    customer, token = password_session(system)
    authenticator, _, _ = register(system, token)
    status, _, options = call(system, "POST", "/api/v1/webauthn/login/options", {})
    with store.pool.connection() as conn:
        conn.execute("UPDATE passkeys.challenges SET expires_at = now() - interval '1 second' "
                     "WHERE challenge_id = %s", (options["challenge_id"],))
    status, _, body = call(system, "POST", "/api/v1/webauthn/login", {"credential": authenticator.get(options)})
    assert status == 401 and body["code"] == "webauthn_challenge_invalid"
    assert events(store, customer)[-1].data["challenge"] == "expired"
    # A registration challenge cannot be used to log in.
    status, _, reg_options = call(system, "POST", "/api/v1/webauthn/register/options", token=token)
    status, _, body = call(system, "POST", "/api/v1/webauthn/login",
                           {"credential": authenticator.get({"challenge": reg_options["challenge"]})})
    assert status == 401 and body["code"] == "webauthn_challenge_invalid"
    assert len(events(store, customer)) == 2        # not a login challenge: logged, not recorded


def test_r_ini_8_at_most_n_passkeys_and_no_duplicates(system):
    customer, token = password_session(system)
    devices = [register(system, token)[0] for _ in range(MAX_PASSKEYS)]
    _, body, headers = register(system, token, expect=409)
    problem_ok(headers, body, "passkey_limit_reached")
    assert body["max_passkeys"] == MAX_PASSKEYS
    status, _, options = call(system, "POST", "/api/v1/webauthn/register/options", token=token)
    assert sorted(c["id"] for c in options["excludeCredentials"]) == sorted(d.id for d in devices)
    # Somebody else's credential ID (they are public) cannot be registered to another customer.
    _, other_token = password_session(system)
    copy = SoftAuthenticator(system["origin"], credential_id=devices[0].credential_id)
    _, body, _ = register(system, other_token, copy, expect=409)
    assert body["code"] == "passkey_already_registered"


def test_r_ini_8_registration_needs_a_customer_session_and_good_input(system, store):
    status, headers, body = call(system, "POST", "/api/v1/webauthn/register/options")
    assert status == 401
    problem_ok(headers, body, "unauthenticated")
    migration = system["sessions"].create(new_customer(), "migration")     # initial operation not done
    status, _, body = call(system, "POST", "/api/v1/webauthn/register/options", token=migration)
    assert status == 403 and body["code"] == "forbidden"
    customer, token = password_session(system)
    for junk, code in [({"credential": "x"}, "validation_failed"), ({"unknown": 1}, "validation_failed"),
                       ({"credential": {"id": "AAAA", "response": {}}}, "webauthn_challenge_invalid"),
                       ({"nickname": "あ" * 21, "credential": {}}, "validation_failed")]:
        status, headers, body = call(system, "POST", "/api/v1/webauthn/register", junk, token)
        assert status in (401, 422), body
        problem_ok(headers, body, code)
    status, headers, body = call(system, "POST", "/api/v1/webauthn/login", raw=b"{not json")
    assert status == 400
    problem_ok(headers, body, "invalid_json")
    status, _, body = call(system, "POST", "/api/v1/webauthn/login", {"credential": {"id": "nobody"}})
    assert status == 401 and body["code"] == "passkey_login_failed"
    assert events(store, customer) == []


def test_r_plt_4_read_model_rebuilds_and_shredding_forgets(system, store):
    customer, token = password_session(system)
    authenticator, _, _ = register(system, token)
    assert login(system, authenticator)[0] == 200

    def rows():
        with store.pool.connection() as conn:
            return conn.execute("SELECT passkey_id, customer_number, credential_id, status, sign_count, "
                                "registered_at, last_used_at, stream_version FROM passkeys.credentials "
                                "ORDER BY passkey_id").fetchall()

    before = rows()
    assert any(r[1] == customer and r[4] == 1 for r in before)
    assert passkeys_service.rebuild(store) >= 2
    assert rows() == before

    store.shred(customer, Metadata(actor=Actor("operator", "op1"), service="test"))
    wait_for(lambda: all(r[1] != customer for r in rows()), what="the shredded customer's rows to go")
    status, _, body, _, _ = login(system, authenticator)
    assert status == 401 and body["code"] == "passkey_login_failed"
    passkeys_service.rebuild(store)
    assert all(r[1] != customer for r in rows())


# -- identity's standing and the operator (R-LEG-4, R-RBA-2) ------------------------------------

def as_operator(system, service, method, *args, reason="端末紛失の届出 2026-9"):
    return call_service(system["amqp_uri"], service, method, list(args), operator="op-7", reason=reason,
                        timeout=60, correlation_id=str(uuid.uuid4()))


def test_r_leg_4_r_rba_2_a_passkey_opens_no_session_while_id_and_password_could_not(system, store):
    """A passkey stands in for ID and password (R-INI-9): a locked login password (R-RBA-2) or a
    re-issued one not yet changed (R-LEG-4) stops it too, with a problem telling the customer
    what to do; the refusal is recorded and nothing is suspended."""
    customer, token = password_session(system)
    authenticator, created, _ = register(system, token)
    in_identity(system, customer, ("credential_locked", {
        "credential": "login_password", "consecutive_failures": 5, "locked_at": "2025-01-10T09:00:00+09:00",
        "release_at": None}))
    status, headers, body, _, _ = login(system, authenticator)
    assert status == 423
    problem_ok(headers, body, "credential_locked")
    assert body["credential"] == "login_password" and "生体認証でもログインできません" in body["detail"]
    as_operator(system, "identity", "unlock_credential", customer, "login_password", reason="本人確認済み")
    assert login(system, authenticator)[0] == 200

    reissued = as_operator(system, "identity", "reissue_login_password", customer)
    assert reissued["next_step"] == "login_password_change"
    status, headers, body, _, _ = login(system, authenticator)
    assert status == 403
    problem_ok(headers, body, "password_change_required")
    assert body["credential"] == "login_password" and "仮ログインパスワード" in body["detail"]
    assert "session_token" not in body
    # The customer changes it (over HTTP in test_operator_procedures.py); the passkey works again.
    in_identity(system, customer, ("login_password_changed", {
        "login_password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$bmV3", "algorithm": "argon2id"}))
    status, _, body, _, _ = login(system, authenticator)
    assert status == 200 and system["sessions"].get(body["session_token"]).customer_number == customer

    recorded = events(store, customer)
    failed = [e for e in recorded if e.type == "passkey_login_failed"]
    assert [e.data["reason"] for e in failed] == ["login_password_locked", "login_password_change_required"]
    assert all(e.metadata["actor"] == {"kind": "customer", "id": customer} for e in failed)
    assert "passkey_suspended" not in [e.type for e in recorded]
    with store.pool.connection() as conn:
        assert conn.execute("SELECT status FROM passkeys.credentials WHERE passkey_id = %s",
                            (created["passkey_id"],)).fetchone() == ("active",)


def test_r_ini_8_no_passkey_login_before_the_initial_operation_is_done(system, store):
    customer = new_customer()
    in_identity(system, customer, migrated=False)      # imported, steps 2–4 not done
    authenticator, _, _ = register(system, system["sessions"].create(customer, "customer"))
    status, headers, body, _, _ = login(system, authenticator)
    assert status == 403
    problem_ok(headers, body, "initial_operation_required")
    assert events(store, customer)[-1].data["reason"] == "initial_operation_pending"
    # Unknown to identity (never imported): refused like an unknown credential.
    stranger = new_customer()
    authenticator, _, _ = register(system, system["sessions"].create(stranger, "customer"))
    status, _, body, _, _ = login(system, authenticator)
    assert status == 401 and body["code"] == "passkey_login_failed"
    assert events(store, stranger)[-1].data["reason"] == "customer_unknown"


def test_r_leg_4_operator_removes_every_passkey_of_a_customer(system, store):
    customer, token = password_session(system)
    first, _, _ = register(system, token)
    second, _, _ = register(system, token, nickname="タブレット")
    with ClusterRpcProxy({"AMQP_URI": system["amqp_uri"], "serializer": "json"}, timeout=60, context_data={
            "correlation_id": str(uuid.uuid4()), "actor_kind": "customer", "actor_id": customer}) as rpc:
        with pytest.raises(Exception) as err:
            rpc.passkeys.remove_by_operator(customer)
    assert getattr(err.value, "code", None) == "operator_only", err.value
    assert [e.type for e in events(store, customer)] == ["passkey_registered"] * 2

    result = as_operator(system, "passkeys", "remove_by_operator", customer)
    assert result["status"] == "removed" and result["removed"] == 2
    for device in (first, second):
        status, headers, body, _, _ = login(system, device)
        assert status == 401
        problem_ok(headers, body, "passkey_login_failed")
    removed = [e for e in events(store, customer) if e.type == "passkey_removed"]
    assert sorted(e.data["passkey_id"] for e in removed) == sorted(result["passkey_ids"])
    for event in removed:
        assert event.metadata["actor"] == {"kind": "operator", "id": "op-7"}
        assert event.metadata["reason"] == "端末紛失の届出 2026-9" and event.data["by"] == "operator"
    assert call(system, "GET", "/api/v1/webauthn/credentials", token=token)[2] == []
    with pytest.raises(Exception) as err:
        as_operator(system, "passkeys", "remove_by_operator", customer)
    assert getattr(err.value, "code", None) == "passkey_not_found", err.value
    register(system, token, first)                    # after ID and password, the device again


def test_openapi_describes_the_webauthn_paths(system):
    status, _, spec = call(system, "GET", "/openapi.json")
    assert status == 200
    paths = spec["paths"]
    for path, method in [("/api/v1/webauthn/register/options", "post"), ("/api/v1/webauthn/register", "post"),
                         ("/api/v1/webauthn/login/options", "post"), ("/api/v1/webauthn/login", "post"),
                         ("/api/v1/webauthn/credentials", "get"),
                         ("/api/v1/webauthn/credentials/{credential_id}", "delete")]:
        assert method in paths[path], path
