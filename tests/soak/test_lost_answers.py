"""A lost activation answer does not strand the customer, and the three values stay single use
(R-INI-6; issue 7 item 1: "failed with a clear error and can be finished by retrying").

The soak found it: an activation committed while its reply was lost (the RabbitMQ connection
cut, the gateway's RPC deadline) left an active token whose secret nobody had seen. Only the
very same request (same app instance, same ``Idempotency-Key``) is answered again, for a short
while and until the token is first used (otp_service.domain.replayable_activation).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from contracts import otp as contract
from contracts.events import NewEvent
from otp_service import domain

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
APP = "app-00000001"
KEY = domain.request_key_of(APP, "k" * 32)


def activated(at=NOW, app=APP, key=KEY, name="青森みちのく銀行"):
    data = {"token_serial": "TK2345678ABC", "app_instance_id": app, "activated_at": at.isoformat(),
            "display_name": name, "secret": {"kid": "x", "ct": "y"}}
    if key:
        data["request_key"] = key
    return NewEvent(contract.TOKEN_ACTIVATED.name, data)


def test_the_same_request_is_answered_again_within_the_window():
    token = domain.replayable_activation([activated()], APP, KEY, NOW + timedelta(seconds=30))
    assert token is not None and token["token_serial"] == "TK2345678ABC"
    named = NewEvent(contract.TOKEN_DISPLAY_NAME_SET.name, {"display_name": "青森みちのく銀行スマホ"})
    token = domain.replayable_activation([activated(), named], APP, KEY, NOW)
    assert token["display_name"] == "青森みちのく銀行スマホ"


def test_any_other_use_of_the_three_values_stays_refused():
    later = NOW + timedelta(seconds=30)
    assert domain.replayable_activation([activated()], APP, None, later) is None            # no key
    other_key = domain.request_key_of(APP, "z" * 32)
    assert domain.replayable_activation([activated()], APP, other_key, later) is None       # another key
    assert domain.replayable_activation([activated()], "app-00000002", KEY, later) is None  # another app
    assert domain.replayable_activation([activated(key=None)], APP, KEY, later) is None     # sent none then
    too_late = NOW + timedelta(seconds=domain.ACTIVATION_REPLAY_SECONDS + 1)
    assert domain.replayable_activation([activated()], APP, KEY, too_late) is None
    used = NewEvent(contract.OTP_VERIFIED.name, {"token_serial": "TK2345678ABC"})
    assert domain.replayable_activation([activated(), used], APP, KEY, later) is None       # used once
    released = NewEvent(contract.TOKEN_RELEASED.name, {"token_serial": "TK2345678ABC"})
    assert domain.replayable_activation([activated(), released], APP, KEY, later) is None


def test_a_use_or_a_lock_in_the_customer_stream_ends_the_window_R_INI_6():
    # Where otp_service really records them: otp_verified / otp_locked in otpcust-<number>.
    later = NOW + timedelta(seconds=30)
    used = NewEvent(contract.OTP_VERIFIED.name, {"token_serial": "TK2345678ABC", "time_step": 1})
    other_token = NewEvent(contract.OTP_VERIFIED.name, {"token_serial": "TKOTHER00001", "time_step": 1})
    locked_before = NewEvent(contract.OTP_LOCKED.name, {"locked_at": (NOW - timedelta(days=3)).isoformat()})
    locked_after = NewEvent(contract.OTP_LOCKED.name, {"locked_at": (NOW + timedelta(seconds=5)).isoformat()})
    again = lambda *customer: domain.replayable_activation([activated()], APP, KEY, later,  # noqa: E731
                                                           customer_events=customer)
    assert again(used) is None
    assert again(locked_after) is None
    assert again(other_token, locked_before) is not None     # another token's use, an old lock


def test_the_request_key_is_bound_to_the_app_and_needs_a_real_key():
    assert domain.request_key_of(APP, "k" * 32) != domain.request_key_of("app-00000002", "k" * 32)
    assert domain.request_key_of(APP, "short") is None and domain.request_key_of(APP, None) is None


def test_activation_records_the_request_key_only_when_sent():
    from otp_service.domain import ActivateToken, decide_activation, Application
    app = Application(application_id="a1", customer_number="1234567890", status=contract.ISSUED,
                      service_id="AMBK000117", user_id="U" * 16, verifier="v", version=3)
    base = dict(app_instance_id=APP, password_matched=True, token_serial="TK2345678ABC",
                sealed_secret={"kid": "x", "ct": "y"}, now=NOW, tokens_on_instance=0,
                customer_has_active_token=False)
    _, [with_key] = decide_activation(ActivateToken(**base, request_key=KEY), app)
    _, [without] = decide_activation(ActivateToken(**base), app)
    assert with_key.data["request_key"] == KEY and "request_key" not in without.data
