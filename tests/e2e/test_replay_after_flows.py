"""`tsunagi replay` against the running system after real flows filled the log (issue 6,
R-PLT-4): every read model rebuilt from the log equals the one the services kept, the switch
happens while the services run, and they keep working on the switched-in tables."""
from __future__ import annotations

import json
import uuid

import pyotp

from services.projections import PROJECTIONS
from tests.e2e.test_initial_operation_full import (activate, issued_customer, login, seed_otp,  # noqa: F401
                                                   status, token_mail)
from tests.e2e.test_initial_operation_steps_2_4 import api, rpc  # noqa: F401
from tests.integration.test_cli import tsunagi


def _replay(*args: str) -> dict:
    result = tsunagi("replay", "--all", "--json", *args, timeout=180)
    assert result.returncode in (0, 1) and result.stdout.strip(), result.stdout + result.stderr
    return json.loads(result.stdout)


def test_replay_all_then_check_finds_no_difference_after_the_end_to_end_flows_R_PLT_4(system, seed_otp):
    # A complete initial operation (import → … → token activated → login with the OTP) fills
    # every service's streams; earlier e2e modules of the session add theirs to the same log.
    c, issued = issued_customer(system, seed_otp)
    token_mail(system, c)          # (the notifier's outbox row is settled, not mid-delivery)
    r = activate(c, issued["service_id"], issued["user_id"], app_instance=f"app-{uuid.uuid4().hex}")
    assert r.status_code == 200, r.text
    totp = pyotp.parse_uri(r.json()["otpauth_uri"])
    assert login(c, totp.now()).status_code == 200

    before = _replay("--check")
    assert before["ok"], [d for p in before["projections"] for d in p["differences"]]
    assert {p["projection"] for p in before["projections"]} == set(PROJECTIONS)
    assert sum(p["events"] for p in before["projections"]) > 0

    switched = _replay()
    assert switched["ok"] and all(p["switched"] for p in switched["projections"])
    after = _replay("--check")
    assert after["ok"], [d for p in after["projections"] for d in p["differences"]]
    # The services work on the switched-in tables: the application reads as activated, and a
    # second customer's flow goes through phone_auth and otp_service as before.
    assert status(c, issued["application_id"])["activated"] is True
    other, other_issued = issued_customer(system, seed_otp)
    assert other_issued["status"] == "issued"
    token_mail(system, other)
    assert _replay("--check")["ok"]
