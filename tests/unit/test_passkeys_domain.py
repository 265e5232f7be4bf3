"""The pure rules of biometric login (SPEC R-INI-8, R-INI-9): challenges single-use and
expiring, the sign counter, the per-customer limit, removal — given events, when command,
then events (identity/passkeys_domain.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from contracts import passkeys as contract
from contracts.errors import Conflict, DomainError, Forbidden, NotFound, Unauthenticated
from contracts.events import REGISTRY, NewEvent
from identity import passkeys_domain as domain

NOW = datetime(2025, 1, 10, 9, 0, tzinfo=timezone.utc)
CUSTOMER = "0123456789"


def credential(n: int = 1, sign_count: int = 0, **kw) -> domain.VerifiedCredential:
    return domain.VerifiedCredential(credential_id=f"cred{n}", public_key=f"key{n}", sign_count=sign_count, **kw)


def register(state, n=1, sign_count=0, max_passkeys=5, taken=False, **kw):
    cmd = domain.RegisterPasskey(CUSTOMER, f"pk{n}", credential(n, sign_count, **kw), f"端末{n}", "localhost",
                                 "http://localhost:8000", NOW, max_passkeys, credential_taken=taken)
    return domain.decide_register(cmd, state)


def registered(*ns, sign_count=0) -> domain.Passkeys:
    state = domain.initial_state
    for n in ns:
        state = domain.fold(register(state, n, sign_count), state)
    return state


def login(state, *, outcome=None, problem=None, passkey_id="pk1", now=NOW):
    return domain.decide_login(domain.PasskeyLogin(CUSTOMER, passkey_id, problem, outcome,
                                                   "http://localhost:8000", now), state)


def types(events) -> list[str]:
    return [e.type for e in events]


# -- challenges -----------------------------------------------------------------------------------

def challenge(**kw) -> domain.Challenge:
    base = dict(challenge_id="c1", purpose=domain.LOGIN, customer_number=None,
                expires_at=NOW + timedelta(minutes=5), used_at=None)
    return domain.Challenge(**{**base, **kw})


@pytest.mark.parametrize("given, purpose, customer, now, quoted, reason", [
    (None, domain.LOGIN, CUSTOMER, NOW, None, "unknown"),
    (challenge(used_at=NOW - timedelta(seconds=1)), domain.LOGIN, CUSTOMER, NOW, None, "used"),
    (challenge(), domain.LOGIN, CUSTOMER, NOW + timedelta(minutes=5), None, "expired"),
    (challenge(), domain.REGISTRATION, CUSTOMER, NOW, None, "other_purpose"),
    (challenge(customer_number="9999999999"), domain.LOGIN, CUSTOMER, NOW, None, "other_customer"),
    (challenge(), domain.LOGIN, CUSTOMER, NOW, "c2", "other_challenge_id"),
    (challenge(), domain.LOGIN, CUSTOMER, NOW + timedelta(minutes=4, seconds=59), "c1", None),
    (challenge(customer_number=CUSTOMER), domain.LOGIN, CUSTOMER, NOW, None, None),
])
def test_r_ini_8_challenge_single_use_expiring_and_bound(given, purpose, customer, now, quoted, reason):
    assert domain.challenge_problem(given, purpose, customer, now, quoted) == reason


def test_r_ini_8_registration_refuses_an_unusable_challenge():
    with pytest.raises(Unauthenticated) as err:
        domain.require_challenge(challenge(purpose=domain.REGISTRATION, used_at=NOW), domain.REGISTRATION,
                                 CUSTOMER, NOW)
    assert err.value.code == "webauthn_challenge_invalid" and not err.value.detail.isascii()
    domain.require_challenge(challenge(purpose=domain.REGISTRATION, customer_number=CUSTOMER),
                             domain.REGISTRATION, CUSTOMER, NOW)


def test_challenge_expiry_is_now_plus_lifetime():
    assert domain.challenge_expiry(NOW, 300) == NOW + timedelta(minutes=5)
    with pytest.raises(ValueError):
        domain.challenge_expiry(NOW, 0)


# -- the sign counter --------------------------------------------------------------------------------

@pytest.mark.parametrize("stored, received, ok", [
    (0, 0, True),     # authenticators without a counter (synced passkeys) send 0 every time
    (0, 1, True), (5, 6, True), (5, 100, True),
    (5, 5, False), (5, 4, False), (5, 0, False), (1, 0, False),
])
def test_r_ini_8_sign_count_must_increase(stored, received, ok):
    assert domain.sign_count_ok(stored, received) is ok


# -- registration -----------------------------------------------------------------------------------

def test_r_ini_8_registration_event_carries_the_credential_as_personal_fields():
    (event,) = register(domain.initial_state, 1, sign_count=3, transports=("internal",), backed_up=True)
    assert event.type == "passkey_registered"
    d = event.data
    assert (d["passkey_id"], d["customer_number"], d["credential_id"], d["public_key"]) == \
        ("pk1", CUSTOMER, "cred1", "key1")
    assert d["sign_count"] == 3 and d["transports"] == ["internal"] and d["backed_up"] is True
    assert d["nickname"] == "端末1" and d["registered_at"] == NOW.isoformat()
    personal = REGISTRY.get("passkey_registered").personal_fields
    assert {"credential_id", "public_key", "nickname"} <= set(personal)
    state = domain.fold([event])
    assert state.get("pk1").status == domain.ACTIVE and state.get("pk1").sign_count == 3


def test_r_ini_8_at_most_n_passkeys_per_customer_suspended_ones_count():
    state = registered(1, 2)
    with pytest.raises(Conflict) as err:
        register(state, 3, max_passkeys=2)
    assert err.value.code == "passkey_limit_reached" and err.value.extra["max_passkeys"] == 2
    assert "2件" in err.value.detail
    suspended = domain.fold([NewEvent("passkey_suspended", {"passkey_id": "pk2"})], state)
    with pytest.raises(Conflict):
        register(suspended, 3, max_passkeys=2)
    removed = domain.fold([NewEvent("passkey_removed", {"passkey_id": "pk2"})], state)
    assert types(register(removed, 3, max_passkeys=2)) == ["passkey_registered"]


def test_r_ini_8_a_credential_id_is_registered_once():
    state = registered(1)
    with pytest.raises(Conflict) as err:
        register(state, 1)
    assert err.value.code == "passkey_already_registered"
    with pytest.raises(Conflict):                       # another customer's credential ID
        register(domain.initial_state, 7, taken=True)


def test_r_ini_8_biometric_means_user_verified():
    with pytest.raises(DomainError) as err:
        register(domain.initial_state, 1, user_verified=False)
    assert err.value.code == "webauthn_registration_invalid"


# -- login ------------------------------------------------------------------------------------------

def test_r_ini_9_login_succeeds_and_advances_the_counter():
    state = registered(1, sign_count=4)
    decision = login(state, outcome=domain.AssertionOutcome(None, 5, backed_up=False))
    assert decision.error is None and types(decision.events) == ["passkey_login_succeeded"]
    assert decision.events[0].data["sign_count"] == 5
    after = domain.fold(decision.events, state)
    assert after.get("pk1").sign_count == 5 and after.get("pk1").last_used_at == NOW.isoformat()
    # The same counter again (a replayed or cloned authenticator) no longer passes.
    again = login(after, outcome=domain.AssertionOutcome(None, 5))
    assert isinstance(again.error, Forbidden)


def test_r_ini_8_counter_regression_with_valid_signature_suspends_possible_clone():
    state = registered(1, sign_count=10)
    decision = login(state, outcome=domain.AssertionOutcome(None, 3))
    assert types(decision.events) == ["passkey_login_failed", "passkey_suspended"]
    failed, suspended = (e.data for e in decision.events)
    assert failed["reason"] == "sign_count_not_increased"
    assert (failed["stored_sign_count"], failed["received_sign_count"]) == (10, 3)
    assert suspended["reason"] == "possible_clone"
    assert decision.error.code == "passkey_suspended" and not decision.error.detail.isascii()
    after = domain.fold(decision.events, state)
    assert after.get("pk1").status == domain.SUSPENDED
    # From now on refused whatever the counter; recorded only when validly signed (and not
    # within a minute of the last recorded failure).
    later = login(after, outcome=domain.AssertionOutcome(None, 11), now=NOW + timedelta(minutes=2))
    assert later.error.code == "passkey_suspended" and later.events[0].data["reason"] == "passkey_suspended"
    forged = login(after, outcome=domain.AssertionOutcome(domain.ASSERTION_INVALID), now=NOW + timedelta(minutes=2))
    assert forged.error.code == "passkey_suspended" and forged.events == []


def test_r_ini_8_an_invalid_signature_never_suspends_and_is_not_recorded():
    """Anybody may send a low counter with a forged signature: that must not switch the
    customer's passkey off, nor append to the customer's stream (it is only logged)."""
    state = registered(1, sign_count=10)
    decision = login(state, outcome=domain.AssertionOutcome(domain.ASSERTION_INVALID))
    assert decision.events == [] and decision.reason == "assertion_invalid"
    assert isinstance(decision.error, Unauthenticated) and decision.error.code == "passkey_login_failed"
    assert domain.fold(decision.events, state).get("pk1").status == domain.ACTIVE


@pytest.mark.parametrize("reason", [domain.ORIGIN_MISMATCH, domain.ASSERTION_INVALID])
def test_r_ini_9_unsigned_refusals_are_not_recorded_and_do_not_lock(reason):
    state = registered(1)
    for _ in range(20):     # no lockout however many: nothing to guess (see the module text)
        decision = login(state, outcome=domain.AssertionOutcome(reason))
        assert decision.events == [] and decision.reason == reason
        assert decision.error.code == "passkey_login_failed"
    assert login(state, outcome=domain.AssertionOutcome(None, 1)).error is None


@pytest.mark.parametrize("problem", ["unknown", "other_challenge_id", "other_purpose", "other_customer"])
def test_r_ini_9_a_challenge_we_did_not_issue_for_login_is_never_recorded(problem):
    """Finding 1 of the review: a made-up challenge with a known credential ID appended an
    event per request. Not even a valid signature makes it worth one: we never issued it."""
    state = registered(1)
    assert not domain.needs_signature(state, "pk1", problem)
    for outcome in (None, domain.AssertionOutcome(None, 1)):
        decision = login(state, problem=problem, outcome=outcome)
        assert decision.events == [] and decision.error.code == "webauthn_challenge_invalid"


@pytest.mark.parametrize("problem", ["used", "expired"])
def test_r_ini_9_a_signed_replay_or_late_assertion_is_recorded_unsigned_is_not(problem):
    state = registered(1)
    assert domain.needs_signature(state, "pk1", problem) and domain.needs_signature(state, "pk1", None)
    unsigned = login(state, problem=problem, outcome=domain.AssertionOutcome(domain.ASSERTION_INVALID))
    assert unsigned.events == [] and unsigned.error.code == "webauthn_challenge_invalid"
    # A replay repeats the counter: refused for the challenge, not taken for a clone.
    decision = login(state, problem=problem, outcome=domain.AssertionOutcome(None, 0))
    assert decision.error.code == "webauthn_challenge_invalid"
    assert decision.events[0].data == {"passkey_id": "pk1", "customer_number": CUSTOMER, "at": NOW.isoformat(),
                                       "reason": "challenge_invalid", "challenge": problem}


def test_r_ini_9_at_most_one_recorded_failure_a_minute_until_a_success():
    """A captured assertion can be replayed at will: the cap keeps the stream from growing."""
    state = registered(1)
    replay = domain.AssertionOutcome(None, 0)
    recorded = []
    for seconds in (0, 10, 59, 60, 61, 90):
        decision = login(state, problem="used", outcome=replay, now=NOW + timedelta(seconds=seconds))
        assert decision.error.code == "webauthn_challenge_invalid"
        recorded += [seconds] * len(decision.events)
        state = domain.fold(decision.events, state)
    assert recorded == [0, 60]
    # A success ends the run: the next failure is recorded at once.
    ok = login(state, outcome=domain.AssertionOutcome(None, 1), now=NOW + timedelta(seconds=91))
    state = domain.fold(ok.events, state)
    assert state.get("pk1").last_failed_at is None
    again = login(state, problem="used", outcome=replay, now=NOW + timedelta(seconds=92))
    assert types(again.events) == ["passkey_login_failed"]
    # The suspension is never capped: it changes the passkey.
    clone = login(domain.fold(again.events, state), outcome=domain.AssertionOutcome(None, 1),
                  now=NOW + timedelta(seconds=93))
    assert types(clone.events) == ["passkey_login_failed", "passkey_suspended"]


def test_removed_or_shredded_passkey_cannot_log_in():
    state = registered(1)
    removed = domain.fold(domain.decide_remove(domain.RemovePasskey(CUSTOMER, "pk1", NOW), state), state)
    assert removed.get("pk1") is None and removed.listed() == []
    decision = login(removed, outcome=domain.AssertionOutcome(None, 1))
    assert decision.events == [] and decision.error.code == "passkey_login_failed"
    with pytest.raises(NotFound):
        domain.decide_remove(domain.RemovePasskey(CUSTOMER, "pk1", NOW), removed)
    shredded = domain.fold([NewEvent("passkey_registered", {
        "passkey_id": "pk9", "credential_id": domain.REDACTED, "public_key": domain.REDACTED,
        "nickname": domain.REDACTED, "registered_at": NOW.isoformat()})])
    assert not domain.needs_signature(shredded, "pk9", None)
    unusable = login(shredded, passkey_id="pk9", outcome=domain.AssertionOutcome(None, 1))
    assert unusable.events == [] and unusable.reason == domain.PASSKEY_UNUSABLE
    assert unusable.error.code == "passkey_login_failed"
    assert shredded.listed()[0]["nickname"] is None


def test_listing_shows_no_key_material():
    (view,) = registered(1).listed()
    assert set(view) == {"passkey_id", "nickname", "status", "registered_at", "last_used_at", "backed_up",
                         "aaguid"}
    assert "key1" not in str(view) and "cred1" not in str(view)


def test_contract_event_types_are_registered_for_the_passkeys_service():
    for name in contract.EVENT_TYPES:
        assert REGISTRY.source_service(name) == "passkeys"
    assert contract.stream_name(CUSTOMER) == "passkeys-0123456789"


def test_service_handlers_match_declared_subscriptions():
    from contracts.subscriptions import SUBSCRIPTIONS
    from identity.passkeys import PasskeysService
    from services.handlers import subscriptions_of
    handlers = set(subscriptions_of(PasskeysService))
    assert handlers and handlers == {s for s in SUBSCRIPTIONS if s.handler_service == "passkeys"}
