"""The OTP deciders as given-events / when-command / then-events tables
(SPEC R-INI-3, R-INI-5, R-INI-6, R-INI-7, R-INI-9, R-RBA-2)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from contracts import otp as contract
from contracts.errors import Conflict, Locked, NotFound, Unauthenticated, ValidationFailed
from contracts.events import NewEvent
from otp_service import domain

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
APP = "6f1c1d1e-0000-4000-8000-000000000001"
CUSTOMER = "0123456789"


def ev(type_, **data):
    return NewEvent(type_, data)


def assert_decides(decide, command, state, then):
    """One table row: ``then`` is the list of event types decided, or (error class, code) of the refusal."""
    if isinstance(then, tuple):
        with pytest.raises(then[0]) as err:
            decide(command, state)
        assert err.value.code == then[1]
    else:
        assert [e.type for e in decide(command, state)] == then


SUBMITTED = ev("otp_application_submitted", application_id=APP, customer_number=CUSTOMER,
               email="taro@example.jp", activation_password_verifier="$argon2id$x", phone_id="p1",
               verification_id="v1", call_from_masked="*****5678", call_to="0120-000-110",
               expires_at=(NOW + timedelta(seconds=120)).isoformat(), submitted_at=NOW.isoformat())
VERIFIED = ev("otp_application_verified", application_id=APP, customer_number=CUSTOMER, verification_id="v1",
              verified_at=NOW.isoformat())
ISSUED = ev("token_issued", application_id=APP, customer_number=CUSTOMER, service_id="AMBK000117",
            user_id="ABCDEFGHJKMNPQRS", email="taro@example.jp", issued_at=NOW.isoformat())
EXPIRED = ev("otp_application_expired", application_id=APP, customer_number=CUSTOMER, verification_id="v1",
             reason=contract.REASON_CALL_TIMEOUT)
ACTIVATED = ev("otp_application_activated", application_id=APP, customer_number=CUSTOMER,
               token_serial="TK2345678ABC", at=NOW.isoformat())


def failed(n):
    return ev("otp_activation_failed", application_id=APP, customer_number=CUSTOMER, app_instance_id="app-00000001",
              consecutive_failures=n, threshold=5, at=NOW.isoformat())


VOIDED = ev("otp_application_voided", application_id=APP, customer_number=CUSTOMER,
            reason=contract.REASON_ACTIVATION_ATTEMPTS, at=NOW.isoformat())


def submit(**kw):
    base = dict(application_id=APP, customer_number=CUSTOMER, email="taro@example.jp", verifier="$argon2id$x",
                phone_id="p1", verification_id="v1", call_from_masked="*****5678", call_to="0120-000-110",
                expires_at=NOW + timedelta(seconds=120), now=NOW)
    base.update(kw)
    return domain.SubmitApplication(**base)


def verify(verification_id="v1"):
    return domain.RecordVerification(verification_id, "AMBK000117", "ABCDEFGHJKMNPQRS", NOW)


# -- the application: given / when / then ---------------------------------------------------------------

APPLICATION_CASES = [
    # (name, given, when, then: event types or an error class and code)
    ("R-INI-3 a new application starts awaiting the call", [], submit(),
     ["otp_application_submitted"]),
    ("R-INI-3 one application in flight per customer", [],
     submit(customer=domain.CustomerApplications(in_flight_application="other")),
     (Conflict, domain.CODE_APPLICATION_IN_PROGRESS)),
    ("R-INI-3 a customer with an active token releases it first", [],
     submit(customer=domain.CustomerApplications(active_token="TK2345678ABC")),
     (Conflict, domain.CODE_TOKEN_ACTIVE)),
    ("R-INI-5 the verifying call issues Service ID and User ID", [SUBMITTED], verify(),
     ["otp_application_verified", "token_issued"]),
    ("R-INI-5 a second report of the same call issues nothing", [SUBMITTED, VERIFIED, ISSUED], verify(), []),
    ("R-INI-5 a report about another verification is ignored", [SUBMITTED], verify("v2"), []),
    ("R-INI-4 a verification that expired is recorded", [SUBMITTED],
     domain.RecordExpiry("v1", NOW), ["otp_application_expired"]),
    ("R-INI-4 an expiry after the token was issued changes nothing", [SUBMITTED, VERIFIED, ISSUED],
     domain.RecordExpiry("v1", NOW), []),
    ("R-INI-4 a call reported after the expiry issues nothing", [SUBMITTED, EXPIRED], verify(), []),
]


@pytest.mark.parametrize("name,given,when,then", APPLICATION_CASES, ids=[c[0] for c in APPLICATION_CASES])
def test_application_decider(name, given, when, then):
    assert_decides(domain.decide_application, when, domain.fold_application(given), then)


def test_issued_token_carries_ids_and_the_address_R_INI_5():
    events = domain.decide_application(verify(), domain.fold_application([SUBMITTED]))
    issued = events[1].data
    assert issued == {"application_id": APP, "customer_number": CUSTOMER, "service_id": "AMBK000117",
                      "user_id": "ABCDEFGHJKMNPQRS", "email": "taro@example.jp", "issued_at": NOW.isoformat()}


# -- activation (step 8) ----------------------------------------------------------------------------------

def activate(matched=True, on_instance=0, has_token=False):
    return domain.ActivateToken(app_instance_id="app-00000001", password_matched=matched, token_serial="TK2345678ABC",
                                sealed_secret={"kid": "k", "ct": "c"}, now=NOW, tokens_on_instance=on_instance,
                                customer_has_active_token=has_token)


ACTIVATION_CASES = [
    ("R-INI-6 right password: the application is used up, a token is born", [SUBMITTED, VERIFIED, ISSUED],
     activate(), (["otp_application_activated"], ["token_activated"])),
    ("R-RBA-2 a wrong password is counted", [SUBMITTED, VERIFIED, ISSUED], activate(False),
     (["otp_activation_failed"], [])),
    ("R-RBA-2 the fifth wrong password voids the application",
     [SUBMITTED, VERIFIED, ISSUED] + [failed(n) for n in range(1, 5)], activate(False),
     (["otp_activation_failed", "otp_application_voided"], [])),
    ("R-INI-6 the three values never work again", [SUBMITTED, VERIFIED, ISSUED, ACTIVATED], activate(),
     (Conflict, domain.CODE_ALREADY_ACTIVATED)),
    ("R-INI-6 not even with a wrong password (nothing counted)", [SUBMITTED, VERIFIED, ISSUED, ACTIVATED],
     activate(False), (Conflict, domain.CODE_ALREADY_ACTIVATED)),
    ("R-RBA-2 a voided application cannot be activated", [SUBMITTED, VERIFIED, ISSUED] +
     [failed(n) for n in range(1, 6)] + [VOIDED], activate(), (Conflict, domain.CODE_APPLICATION_VOID)),
    ("R-INI-6 nothing issued yet: unknown IDs", [SUBMITTED], activate(), (NotFound, domain.CODE_ACTIVATION_NOT_FOUND)),
    ("R-INI-7 an app holds at most 10 tokens", [SUBMITTED, VERIFIED, ISSUED], activate(on_instance=10),
     (Conflict, domain.CODE_TOKEN_LIMIT)),
    ("R-INI-7 the tenth token still fits", [SUBMITTED, VERIFIED, ISSUED], activate(on_instance=9),
     (["otp_application_activated"], ["token_activated"])),
    ("R-INI-9 one active token per customer", [SUBMITTED, VERIFIED, ISSUED], activate(has_token=True),
     (Conflict, domain.CODE_TOKEN_ACTIVE)),
]


@pytest.mark.parametrize("name,given,when,then", ACTIVATION_CASES, ids=[c[0] for c in ACTIVATION_CASES])
def test_activation_decider(name, given, when, then):
    state = domain.fold_application(given)
    if isinstance(then[0], type):
        with pytest.raises(then[0]) as err:
            domain.decide_activation(when, state)
        assert err.value.code == then[1]
    else:
        app_events, token_events = domain.decide_activation(when, state)
        assert ([e.type for e in app_events], [e.type for e in token_events]) == then


def test_activation_outcome_tells_remaining_attempts_R_RBA_2():
    state = domain.fold_application([SUBMITTED, VERIFIED, ISSUED, failed(1)])
    app_events, _ = domain.decide_activation(activate(False), state)
    with pytest.raises(Unauthenticated) as err:
        domain.raise_activation_outcome(app_events, 5)
    assert err.value.code == domain.CODE_ACTIVATION_PASSWORD_WRONG
    assert err.value.extra["remaining_attempts"] == 3
    assert "あと3回" in err.value.detail
    state = domain.fold_application([SUBMITTED, VERIFIED, ISSUED] + [failed(n) for n in range(1, 5)])
    app_events, _ = domain.decide_activation(activate(False), state)
    with pytest.raises(Locked) as err:
        domain.raise_activation_outcome(app_events, 5)
    assert err.value.code == domain.CODE_ACTIVATION_ATTEMPTS_EXCEEDED
    assert domain.fold_application([*[SUBMITTED, VERIFIED, ISSUED], *app_events]).status == contract.FAILED


def test_token_activated_event_holds_the_sealed_secret_only():
    _, token_events = domain.decide_activation(activate(), domain.fold_application([SUBMITTED, VERIFIED, ISSUED]))
    data = token_events[0].data
    assert data["secret"] == {"kid": "k", "ct": "c"}
    assert data["display_name"] == "青森みちのく銀行"
    assert (data["algorithm"], data["digits"], data["period"]) == ("SHA1", 6, 30)


# -- what the page reports ------------------------------------------------------------------------------

def test_public_status_R_INI_4():
    exp, grace = NOW + timedelta(seconds=120), timedelta(seconds=15)
    assert domain.public_status("awaiting_call", None, exp, NOW, grace) == ("awaiting_call", None, False)
    assert domain.public_status("awaiting_call", None, exp, exp + timedelta(seconds=16), grace) == \
        ("expired", contract.REASON_CALL_TIMEOUT, False)
    assert domain.public_status("activated", None, exp, NOW, grace) == ("issued", None, True)
    assert domain.public_status("failed", "x", exp, NOW, grace) == ("failed", "x", False)
    assert domain.in_flight("awaiting_call", exp, NOW, grace)
    assert not domain.in_flight("awaiting_call", exp, exp + timedelta(seconds=16), grace)
    assert not domain.in_flight("issued", exp, NOW, grace)


# -- the form of step 5 -----------------------------------------------------------------------------------

GOOD_FORM = {"email": "taro.yamada@example.co.jp", "email_confirmation": "taro.yamada@example.co.jp",
             "activation_password": "1234", "activation_password_confirmation": "1234", "phone_id": "p1",
             "confirmation_password": "Conf12"}

FORM_CASES = [
    ("mail addresses differ", {"email_confirmation": "taro@example.co.jp"}, "email_confirmation"),
    ("not a mail address", {"email": "taro", "email_confirmation": "taro"}, "email"),
    ("full-width mail address", {"email": "ｔａｒｏ@example.jp", "email_confirmation": "ｔａｒｏ@example.jp"}, "email"),
    ("no TLD", {"email": "taro@localhost", "email_confirmation": "taro@localhost"}, "email"),
    ("activation password of 3 digits", {"activation_password": "123", "activation_password_confirmation": "123"},
     "activation_password"),
    ("activation password of 9 digits", {"activation_password": "123456789",
                                         "activation_password_confirmation": "123456789"}, "activation_password"),
    ("full-width digits", {"activation_password": "１２３４", "activation_password_confirmation": "１２３４"},
     "activation_password"),
    ("letters", {"activation_password": "12ab", "activation_password_confirmation": "12ab"}, "activation_password"),
    ("activation passwords differ", {"activation_password_confirmation": "1235"}, "activation_password_confirmation"),
    ("no phone chosen", {"phone_id": ""}, "phone_id"),
    ("no confirmation password", {"confirmation_password": ""}, "confirmation_password"),
]


@pytest.mark.parametrize("name,change,field", FORM_CASES, ids=[c[0] for c in FORM_CASES])
def test_application_form_rules_R_INI_3(name, change, field):
    with pytest.raises(ValidationFailed) as err:
        domain.check_application_form({**GOOD_FORM, **change})
    assert field in err.value.extra["errors"]
    assert all(not m.isascii() for m in err.value.extra["errors"][field])   # Japanese messages


def test_good_forms_pass_R_INI_3():
    domain.check_application_form(GOOD_FORM)
    for pw in ("1234", "12345678", "0000"):
        domain.check_application_form({**GOOD_FORM, "activation_password": pw,
                                       "activation_password_confirmation": pw})
    # Japanese carriers' legacy addresses with consecutive / trailing dots still receive mail.
    for address in ("taro..yamada.@docomo.ne.jp", "a+b@sub.example.com", "x_y-z@am-bk.co.jp"):
        domain.check_application_form({**GOOD_FORM, "email": address, "email_confirmation": address})


def test_every_broken_rule_is_reported_at_once_R_INI_3():
    with pytest.raises(ValidationFailed) as err:
        domain.check_application_form({**GOOD_FORM, "email_confirmation": "x@example.jp",
                                       "activation_password": "12", "phone_id": ""})
    assert set(err.value.extra["errors"]) == {"email_confirmation", "activation_password", "phone_id"}


# -- the display name (step 9) ------------------------------------------------------------------------

TOKEN_ACTIVATED = ev("token_activated", token_serial="TK2345678ABC", customer_number=CUSTOMER, application_id=APP,
                     app_instance_id="app-00000001", display_name="青森みちのく銀行", secret={"kid": "k", "ct": "c"},
                     algorithm="SHA1", digits=6, period=30, activated_at=NOW.isoformat())
RELEASED = ev("token_released", token_serial="TK2345678ABC", customer_number=CUSTOMER, reason="customer_request",
              at=NOW.isoformat())


def name_cmd(suffix, instance="app-00000001", customer=None):
    return domain.SetDisplayName("TK2345678ABC", suffix, instance, customer)


DISPLAY_NAME_CASES = [
    ("R-INI-7 no suffix: the prefix alone", name_cmd(None), "青森みちのく銀行"),
    ("R-INI-7 empty suffix: the prefix alone", name_cmd(""), "青森みちのく銀行"),
    ("R-INI-7 blanks only: the prefix alone", name_cmd("\u3000 "), "青森みちのく銀行"),
    ("R-INI-7 the guide's example", name_cmd("本店用"), "青森みちのく銀行 本店用"),
    ("R-INI-7 eight full-width characters", name_cmd("みちのく銀行契約"), "青森みちのく銀行 みちのく銀行契約"),
    ("R-INI-7 full-width alphanumerics and symbols", name_cmd("ＡＢＣ１２３○※"), "青森みちのく銀行 ＡＢＣ１２３○※"),
    ("R-INI-7 by the customer instead of the app", name_cmd("青森銀行分", None, CUSTOMER), "青森みちのく銀行 青森銀行分"),
    ("R-INI-7 nine full-width characters", name_cmd("みちのく銀行の契約"), (ValidationFailed, domain.CODE_SUFFIX_TOO_LONG)),
    ("R-INI-7 half-width letters", name_cmd("honten"), (ValidationFailed, domain.CODE_SUFFIX_HALF_WIDTH)),
    ("R-INI-7 half-width katakana", name_cmd("ﾎﾝﾃﾝ"), (ValidationFailed, domain.CODE_SUFFIX_HALF_WIDTH)),
    ("R-INI-7 mixed widths", name_cmd("本店1"), (ValidationFailed, domain.CODE_SUFFIX_HALF_WIDTH)),
    ("R-INI-7 emoji", name_cmd("本店🏦"), (ValidationFailed, domain.CODE_SUFFIX_BAD_CHAR)),
    ("another app's token reads as none", name_cmd("本店", "app-99999999"), (NotFound, domain.CODE_TOKEN_NOT_FOUND)),
    ("another customer's token reads as none", name_cmd("本店", None, "9999999999"),
     (NotFound, domain.CODE_TOKEN_NOT_FOUND)),
]


@pytest.mark.parametrize("name,when,then", DISPLAY_NAME_CASES, ids=[c[0] for c in DISPLAY_NAME_CASES])
def test_display_name_decider(name, when, then):
    state = domain.fold_token([TOKEN_ACTIVATED])
    if isinstance(then, tuple):
        with pytest.raises(then[0]) as err:
            domain.decide_token(when, state)
        assert err.value.code == then[1]
        if then[0] is ValidationFailed:
            assert "全角" in err.value.detail or "使用できない" in err.value.detail
    else:
        events = domain.decide_token(when, state)
        assert [e.type for e in events] == ["token_display_name_set"]
        assert events[0].data["display_name"] == then


def test_released_token_takes_no_name_and_no_second_release():
    state = domain.fold_token([TOKEN_ACTIVATED, RELEASED])
    with pytest.raises(Conflict):
        domain.decide_token(name_cmd("本店"), state)
    with pytest.raises(Conflict):
        domain.decide_token(domain.ReleaseToken("TK2345678ABC", CUSTOMER, "customer_request", NOW), state)
    assert domain.decide_token(domain.ReleaseToken("TK2345678ABC", CUSTOMER, "customer_request", NOW),
                               domain.fold_token([TOKEN_ACTIVATED]))[0].type == "token_released"


# -- using the token: verification, replay, lock (R-INI-9, R-RBA-2) ---------------------------------------

def otp_ok(step):
    return ev("otp_verified", customer_number=CUSTOMER, token_serial="TK2345678ABC", time_step=step, purpose="login",
              at=NOW.isoformat())


def otp_bad(n):
    return ev("otp_verification_failed", customer_number=CUSTOMER, token_serial="TK2345678ABC", purpose="login",
              reason="mismatch", consecutive_failures=n, at=NOW.isoformat())


LOCKED = ev("otp_locked", customer_number=CUSTOMER, consecutive_failures=5, threshold=5, locked_at=NOW.isoformat())


def check(step, now=NOW, release_after=None, token="TK2345678ABC"):
    return domain.VerifyOtp(CUSTOMER, token, step, "login", now, 5, release_after)


OTP_CASES = [
    ("R-INI-9 a matching code is accepted", [], check(100), ["otp_verified"]),
    ("R-INI-9 the same step again is a replay", [otp_ok(100)], check(100), ["otp_verification_failed"]),
    ("R-INI-9 an older step after a newer one is a replay", [otp_ok(101)], check(100), ["otp_verification_failed"]),
    ("R-INI-9 the next step is fine", [otp_ok(100)], check(101), ["otp_verified"]),
    ("R-INI-9 a new token starts afresh", [otp_ok(100)], check(50, token="TKNEW2345678"), ["otp_verified"]),
    ("R-INI-9 no match is a failure", [], check(None), ["otp_verification_failed"]),
    ("R-RBA-2 the fifth consecutive failure locks", [otp_bad(n) for n in range(1, 5)], check(None),
     ["otp_verification_failed", "otp_locked"]),
    ("R-RBA-2 a success in between resets the count", [otp_bad(1), otp_bad(2), otp_bad(3), otp_bad(4), otp_ok(7)],
     check(None), ["otp_verification_failed"]),
    ("R-RBA-2 locked: even the right code is refused", [LOCKED], check(100), (Locked, domain.CODE_OTP_LOCKED)),
    ("R-RBA-2 a timed release unlocks", [LOCKED], check(100, NOW + timedelta(minutes=31), timedelta(minutes=30)),
     ["otp_unlocked", "otp_verified"]),
    ("R-RBA-2 not before its time", [LOCKED], check(100, NOW + timedelta(minutes=29), timedelta(minutes=30)),
     (Locked, domain.CODE_OTP_LOCKED)),
]


@pytest.mark.parametrize("name,given,when,then", OTP_CASES, ids=[c[0] for c in OTP_CASES])
def test_otp_decider(name, given, when, then):
    assert_decides(domain.decide_customer, when, domain.fold_customer(given), then)


def test_otp_outcomes_become_errors_R_INI_9():
    replay = domain.decide_customer(check(100), domain.fold_customer([otp_ok(100)]))
    with pytest.raises(Unauthenticated) as err:
        domain.raise_otp_outcome(replay, 5)
    assert err.value.code == domain.CODE_OTP_REPLAYED
    wrong = domain.decide_customer(check(None), domain.fold_customer([otp_bad(1)]))
    with pytest.raises(Unauthenticated) as err:
        domain.raise_otp_outcome(wrong, 5)
    assert (err.value.code, err.value.extra["remaining_attempts"]) == (domain.CODE_OTP_WRONG, 3)
    locking = domain.decide_customer(check(None), domain.fold_customer([otp_bad(n) for n in range(1, 5)]))
    with pytest.raises(Locked):
        domain.raise_otp_outcome(locking, 5)
    domain.raise_otp_outcome(domain.decide_customer(check(5), domain.fold_customer([])), 5)   # no error


def test_operator_unlock_R_RBA_2():
    with pytest.raises(Conflict):
        domain.decide_customer(domain.UnlockOtp(CUSTOMER, NOW), domain.fold_customer([]))
    events = domain.decide_customer(domain.UnlockOtp(CUSTOMER, NOW), domain.fold_customer([LOCKED]))
    assert events[0].data["release"] == "operator"
    state = domain.fold_customer([otp_bad(1), LOCKED, *events])
    assert not state.locked and state.consecutive_failures == 0


def test_input_formats():
    for good in ("123456", "000000"):
        assert domain.check_otp_format(good) == good
    for bad in ("12345", "1234567", "12345a", "１２３４５６", None, 123456):
        with pytest.raises(ValidationFailed):
            domain.check_otp_format(bad)
    with pytest.raises(ValidationFailed):
        domain.check_app_instance_id("short")
    with pytest.raises(ValidationFailed):
        domain.check_app_instance_id("bad id with spaces")
    assert domain.check_app_instance_id("3f2b8c1e-aaaa-bbbb") == "3f2b8c1e-aaaa-bbbb"


def test_handlers_are_declared_in_contracts():
    from contracts.subscriptions import SUBSCRIPTIONS
    from otp_service.service import OtpService
    from services.handlers import subscriptions_of
    subs = subscriptions_of(OtpService)
    assert {(s.source_service, s.event_type) for s in subs} == {
        ("phone_auth", "phone_verification_succeeded"), ("phone_auth", "phone_verification_expired")}
    assert set(subs) <= set(SUBSCRIPTIONS)
