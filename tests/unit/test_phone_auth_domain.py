"""R-INI-4 inbound-call verification, the decider as given / when / then."""
from datetime import datetime, timedelta, timezone

import pytest

from contracts import phone_auth as c
from contracts.errors import Conflict
from phone_auth import domain as d

T0 = datetime(2025, 1, 5, 0, 0, tzinfo=timezone.utc)
PHONE = "+819012345678"
OTHER_PHONE = "+819011112222"
TOLL_FREE = "+81120000110"
OTHER_TOLL_FREE = "+81120000111"
WINDOW = timedelta(seconds=120)


def given(*commands):
    """Fold the events the given commands decide, in order."""
    state = d.initial_state
    for cmd in commands:
        state = d.fold(d.decide(cmd, state), state)
    return state


def started(at=T0, window=WINDOW):
    return d.StartVerification("v-1", "app-1", "0123456789", PHONE, TOLL_FREE, "0120-000-110",
                               at, window)


def call(key="call-1", caller=PHONE, called=TOLL_FREE, after=timedelta(seconds=30), withheld=False):
    return d.ApplyCall(key, None if withheld else caller, withheld, called, T0 + after)


def types(events):
    return [e.type for e in events]


def reasons(events):
    return [e.data["reason"] for e in events if e.type == c.PHONE_VERIFICATION_ATTEMPT_FAILED.name]


def test_start_opens_a_window_of_120_seconds():
    events = d.decide(started(), d.initial_state)
    assert types(events) == ["phone_verification_started"]
    data = events[0].data
    assert data["caller"] == PHONE and data["call_to"] == TOLL_FREE
    assert data["expires_at"] == (T0 + WINDOW).isoformat() and data["window_seconds"] == 120
    state = d.fold(events)
    assert state.status == c.AWAITING_CALL and state.version == 1


def test_start_twice_is_a_conflict():
    with pytest.raises(Conflict):
        d.decide(started(), given(started()))


def test_r_ini_4_registered_phone_calling_the_number_in_time_verifies():
    events = d.decide(call(), given(started()))
    assert types(events) == ["phone_verification_succeeded"]
    assert events[0].data == {"verification_id": "v-1", "application_id": "app-1",
                              "customer_number": "0123456789", "call_key": "call-1",
                              "at": (T0 + timedelta(seconds=30)).isoformat()}


def test_r_ini_4_verifies_exactly_once():
    state = given(started(), call())
    assert state.status == c.VERIFIED
    assert d.decide(call(key="call-2", after=timedelta(seconds=40)), state) == []


def test_r_ini_4_withheld_caller_cannot_verify_and_may_call_again():
    state = given(started())
    events = d.decide(call(withheld=True), state)
    assert reasons(events) == [c.WITHHELD]
    state = d.fold(events, state)
    assert state.status == c.AWAITING_CALL and state.attempts == (c.WITHHELD,)
    assert types(d.decide(call(key="call-2", after=timedelta(seconds=60)), state)) == [
        "phone_verification_succeeded"]


def test_r_ini_4_another_number_is_an_unknown_caller():
    assert reasons(d.decide(call(caller=OTHER_PHONE), given(started()))) == [c.UNKNOWN_CALLER]


def test_r_ini_4_the_other_toll_free_number_is_a_wrong_number():
    assert reasons(d.decide(call(called=OTHER_TOLL_FREE), given(started()))) == [c.WRONG_NUMBER]


def test_r_ini_4_a_late_call_fails_and_expires_the_verification():
    events = d.decide(call(after=WINDOW), given(started()))
    assert types(events) == ["phone_verification_attempt_failed", "phone_verification_expired"]
    assert reasons(events) == [c.LATE]


def test_r_ini_4_a_call_after_expiry_is_a_late_attempt_only():
    state = given(started(), d.Expire(T0 + WINDOW))
    assert state.status == c.EXPIRED
    events = d.decide(call(after=WINDOW + timedelta(seconds=5)), state)
    assert types(events) == ["phone_verification_attempt_failed"] and reasons(events) == [c.LATE]


def test_r_ini_4_the_same_call_twice_has_one_effect():
    state = given(started(), call(withheld=True))
    assert d.decide(call(withheld=True), state) == []
    verified = given(started(), call())
    assert d.decide(call(), verified) == []


def test_a_call_from_before_the_verification_does_not_count():
    assert d.decide(call(after=-timedelta(seconds=30)), given(started())) == []


def test_r_ini_4_expiry_happens_at_the_end_of_the_window_not_before():
    state = given(started())
    assert d.decide(d.Expire(T0 + WINDOW - timedelta(milliseconds=1)), state) == []
    assert types(d.decide(d.Expire(T0 + WINDOW), state)) == ["phone_verification_expired"]


def test_r_ini_4_expiry_is_emitted_once_and_never_after_success():
    assert d.decide(d.Expire(T0 + WINDOW * 2), given(started(), d.Expire(T0 + WINDOW))) == []
    assert d.decide(d.Expire(T0 + WINDOW * 2), given(started(), call())) == []
    assert d.decide(d.Expire(T0 + WINDOW), d.initial_state) == []


# -- routing a call to verifications --------------------------------------------------------------

def cand(vid, idx="mine", call_to=TOLL_FREE, status=c.AWAITING_CALL, started_s=0, window=WINDOW):
    return d.Candidate(vid, idx, call_to, status, T0 + timedelta(seconds=started_s),
                       T0 + timedelta(seconds=started_s) + window)


AT = T0 + timedelta(seconds=30)


def route(idx, called=TOLL_FREE, at=AT, *rows):
    return d.route_call(caller_index=idx, called=called, at=at, candidates=list(rows))


def test_route_registered_phone_goes_to_its_newest_open_verification_of_that_number():
    rows = [cand("old", started_s=-60), cand("new", started_s=-10), cand("theirs", idx="x")]
    assert route("mine", TOLL_FREE, AT, *rows) == ["new"]


def test_route_registered_phone_dialling_the_other_number_is_a_wrong_number_attempt():
    assert route("mine", OTHER_TOLL_FREE, AT, cand("v")) == ["v"]


def test_route_late_call_goes_to_the_recently_expired_verification():
    rows = [cand("v", status=c.EXPIRED, started_s=-200)]
    assert route("mine", TOLL_FREE, AT, *rows) == ["v"]
    long_ago = AT + d.LATE_CALL_GRACE + WINDOW
    assert route("mine", TOLL_FREE, long_ago, *rows) == []


def test_route_verified_phone_calling_again_touches_nothing():
    rows = [cand("v", status=c.VERIFIED), cand("theirs", idx="x")]
    assert route("mine", TOLL_FREE, AT, *rows) == []


def test_route_withheld_or_unknown_caller_is_an_attempt_on_every_open_verification_dialled():
    rows = [cand("a", idx="x"), cand("b", idx="y"), cand("c", idx="z", call_to=OTHER_TOLL_FREE),
            cand("gone", idx="w", started_s=-200)]
    assert sorted(route(None, TOLL_FREE, AT, *rows)) == ["a", "b"]
    assert sorted(route("stranger", TOLL_FREE, AT, *rows)) == ["a", "b"]
    assert route(None, TOLL_FREE, AT) == []


def test_choose_toll_free_avoids_the_callers_own_number_then_spreads_load():
    pool = [TOLL_FREE, OTHER_TOLL_FREE]
    assert d.choose_toll_free(pool, {}, set()) == TOLL_FREE
    assert d.choose_toll_free(pool, {TOLL_FREE: 3}, set()) == OTHER_TOLL_FREE
    assert d.choose_toll_free(pool, {}, {TOLL_FREE}) == OTHER_TOLL_FREE
    assert d.choose_toll_free(pool, {OTHER_TOLL_FREE: 9}, {TOLL_FREE}) == OTHER_TOLL_FREE
    with pytest.raises(ValueError):
        d.choose_toll_free([], {}, set())


def test_effective_time_never_lies_in_the_future():
    assert d.effective_time(T0 + timedelta(seconds=90), T0) == T0
    assert d.effective_time(T0 - timedelta(seconds=2), T0) == T0 - timedelta(seconds=2)
