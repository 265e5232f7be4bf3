"""R-INI-9: ``otp_token_possible`` — given the customer's events, can an OTP token exist?
False must be a proof (the login then skips the question to otp_service); see
identity/domain/customer.py for the argument, tests/integration/test_login_otp_question.py for
the service around it."""
from __future__ import annotations

import pytest

from identity.domain import customer as agg

F = agg.Fact
IMPORTED = F("legacy_customer_imported", {"customer_number": "0123456789", "login_password_verifier": "x",
                                          "confirmation_pin_verifier": "y", "phones": [], "email": None})
MIGRATED = F("passwords_changed", {"login_password_hash": "$argon2id$new", "confirmation_password_hash": "$argon2id$pin"})
VERIFIED = F("confirmation_password_verified", {})
FAILED = F("credential_check_failed", {"credential": agg.CONFIRMATION, "consecutive_failures": 1})
LOGGED_IN = F("login_succeeded", {"environment": "env", "method": "password"})
PIN_CHANGED = F("confirmation_password_changed", {"confirmation_password_hash": "$argon2id$pin2"})


@pytest.mark.parametrize("given, possible", [
    ([], False),
    ([IMPORTED], False),
    ([IMPORTED, MIGRATED, LOGGED_IN], False),                 # steps 2–4 and logins: no application
    ([IMPORTED, MIGRATED, FAILED], False),                    # a wrong confirmation password: refused
    ([IMPORTED, MIGRATED, VERIFIED], True),                   # step 5 begins with this check
    ([IMPORTED, VERIFIED, MIGRATED], True),                   # whenever it happened
    ([IMPORTED, MIGRATED, VERIFIED, LOGGED_IN, PIN_CHANGED], True),   # never forgotten
])
def test_r_ini_9_otp_token_possible_only_after_a_verified_confirmation_password(given, possible):
    assert agg.otp_token_possible(agg.fold(given)) is possible


def test_r_ini_9_the_flag_survives_folding_in_steps():
    """The login-state cache folds new events onto a cached state: same answer as a full fold."""
    cached = agg.fold([IMPORTED, MIGRATED, VERIFIED])
    assert agg.otp_token_possible(agg.fold([LOGGED_IN], cached))
