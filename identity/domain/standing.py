"""The customer's login standing: may a login that skips the login password — biometric login
with a passkey (R-INI-8, R-INI-9) — open a customer session now? Pure; identity answers it by
RPC (``login_standing``) and the passkeys service decides with the answer.

A passkey stands in for the login ID and password (the smartphone guide: 「ログインID、ログイン
パスワードを入力せずに生体認証でログイン」), so it is worth no more than they are at this moment:

- ``initial_operation_pending``: steps 2–4 (R-INI-1..2) are not done, there is no login at all
  yet; the customer finishes the initial operation with ID and password.
- ``locked``: the login password is locked (R-RBA-2: wrong guesses, not yet released by an
  operator or by the timed release). A lock means somebody is attacking this login; a second
  way in around it would make the lock pointless.
- ``password_change_required``: an operator re-issued the login password (R-LEG-4); nothing but
  the forced change may happen until the customer has logged in with the temporary password
  and chosen a new one.
- ``unknown``: identity has no such customer (never imported, or crypto-shredded).

A pending confirmation-password reset does not matter here: the password login opens a customer
session too, and every transaction or settings change is refused until it is changed.
"""
from __future__ import annotations

from datetime import datetime

from identity.domain import customer as agg

OK = "ok"
UNKNOWN = "unknown"
INITIAL_OPERATION_PENDING = "initial_operation_pending"
LOCKED = "locked"
PASSWORD_CHANGE_REQUIRED = "password_change_required"
STANDINGS = (OK, UNKNOWN, INITIAL_OPERATION_PENDING, LOCKED, PASSWORD_CHANGE_REQUIRED)


def login_standing(state: agg.Customer, now: datetime) -> str:
    if not state.exists:
        return UNKNOWN
    if not state.migrated:
        return INITIAL_OPERATION_PENDING
    if agg.blocked(state, agg.LOGIN, now):        # a due timed release counts as released
        return LOCKED
    if state.login_password_change_required:
        return PASSWORD_CHANGE_REQUIRED
    return OK
