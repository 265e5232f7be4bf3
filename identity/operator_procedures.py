"""Operator procedures of identity (R-LEG-4), and the customer's own password changes that
complete them. A mixin of ``identity.service.IdentityService`` (it uses that class's
``_execute``, ``_load``, ``context``, ``clock`` and ``settings``).

The procedures come from ``tsunagi operator …`` with the operator and the reason in the Nameko
context (``actor_kind=operator``, ``actor_id``, ``reason``); the decider refuses a call without
all three, and the events carry the operator and the reason in their metadata. Temporary
passwords are generated here (``secrets``), satisfy the rules of R-INI-2, are hashed with
argon2id (only the hash is stored, encrypted per customer) and are returned once, to the
operator's command, never logged.

Forced change: after ``reissue_login_password`` the next login with the temporary password
answers ``password_change_required`` (the gateway opens a session that can only change the
password); after ``reset_confirmation_password`` every confirmation-password check refuses
with ``password_change_required`` until the customer has set a new one. Either way nothing
that needs the confirmation password (transactions, settings, OTP application or release)
goes through before the change.
"""
from __future__ import annotations

import secrets

from nameko.rpc import rpc

from contracts.errors import DomainError
from identity import verifiers
from identity.domain import customer as agg
from identity.domain import inputs, procedures, standing
from identity.domain.legacy_record import mask_phone
from identity.domain.legacy_record import phone_id as make_phone_id
from identity.domain.passwords import validate_single_change

expected = rpc(expected_exceptions=DomainError)


def new_temporary_password() -> str:
    """10 characters from an alphabet without look-alikes (0/O, 1/l/I), at least one upper-case
    letter, one lower-case letter and one digit: ≈ 57 bits, and R-INI-2's login rules hold."""
    alphabet = (procedures.TEMPORARY_ALPHABET_UPPER + procedures.TEMPORARY_ALPHABET_LOWER
                + procedures.TEMPORARY_ALPHABET_DIGITS)
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(procedures.TEMPORARY_LENGTH))
        if procedures.temporary_password_ok(candidate):
            return candidate


def _outcome(decision: agg.Decision):
    if decision.error is not None:
        raise decision.error
    return decision.result


class OperatorProcedures:

    def _by_operator(self) -> bool:
        return procedures.names_operator_and_reason(self.context, self.name)

    def _temporary(self, number: str, make_command) -> dict:
        temporary = new_temporary_password()
        hashed = verifiers.hash_secret_green(temporary)
        by_operator = self._by_operator()
        decision, _ = self._execute(number, lambda state: make_command(self.clock.now(), hashed, by_operator))
        result = dict(_outcome(decision))
        result["temporary_password"] = temporary
        return result

    @expected
    def reissue_login_password(self, customer_number=None):
        """Operator procedure (R-LEG-4): a one-time temporary login password; unlocks the login
        password. The customer's next login with it must change it first."""
        number = inputs.customer_number(customer_number)
        return self._temporary(number, agg.ReissueLoginPassword)

    @expected
    def reset_confirmation_password(self, customer_number=None):
        """Operator procedure (R-LEG-4, PIN reset): a one-time temporary confirmation password;
        unlocks it. It must be changed before any transaction or settings change."""
        number = inputs.customer_number(customer_number)
        return self._temporary(number, agg.ResetConfirmationPassword)

    @expected
    def change_phones(self, customer_number=None, phones=None):
        """Operator procedure (R-LEG-4): replace the registered phone numbers (Japanese numbers,
        normalised to E.164; one invalid number refuses the whole change)."""
        number = inputs.customer_number(customer_number)
        new = procedures.registered_phones(phones)
        by_operator = self._by_operator()
        decision, state = self._execute(number, lambda state: agg.ChangeRegisteredPhones(
            self.clock.now(), new, by_operator))
        result = dict(_outcome(decision))
        result["phones"] = [{"phone_id": make_phone_id(number, p), "masked": mask_phone(p)} for p in state.phones]
        return result

    @expected
    def initialise_login_id(self, customer_number=None):
        """Operator procedure (R-LEG-4): the login ID back to the customer number, and the lock
        of its password lifted."""
        number = inputs.customer_number(customer_number)
        by_operator = self._by_operator()
        decision, _ = self._execute(number, lambda state: agg.InitialiseLoginId(self.clock.now(), by_operator))
        return _outcome(decision)

    # -- read-only: what the procedures left behind, for the passkeys service ------------------

    @expected
    def login_standing(self, customer_number=None):
        """May a login without the login password (a passkey, R-INI-8) open a customer session
        now? ``standing``: ok | unknown | initial_operation_pending | locked |
        password_change_required (identity/domain/standing.py). Reads only; no event."""
        number = inputs.customer_number(customer_number)
        state, _ = self._load_for_login(number)
        return {"customer_number": number, "standing": standing.login_standing(state, self.clock.now())}

    # -- the customer completes the procedure --------------------------------------------------

    @expected
    def change_login_password(self, customer_number=None, body=None):
        """The customer's login password change (forced after a re-issue): current, new twice."""
        return self._change_one(customer_number, body, agg.LOGIN)

    @expected
    def change_confirmation_password(self, customer_number=None, body=None):
        """The customer's confirmation password change (forced after an operator reset)."""
        return self._change_one(customer_number, body, agg.CONFIRMATION)

    def _change_one(self, customer_number, body, credential: str) -> dict:
        number = inputs.customer_number(customer_number)
        change = validate_single_change(credential, body)
        now = self.clock.now()
        cache: dict = {}

        def make(state: agg.Customer):
            cmd = dict(credential=credential, now=now, current_ok=None, policy=self.settings.lockout)
            if not (state.exists and state.migrated) or agg.blocked(state, credential, now) or \
                    (credential == agg.CONFIRMATION and state.login_password_change_required):
                return agg.ChangeOnePassword(**cmd)
            current_hash, other_hash = (state.login_password_hash, state.confirmation_password_hash) \
                if credential == agg.LOGIN else (state.confirmation_password_hash, state.login_password_hash)
            key = (current_hash, other_hash)
            if key not in cache:
                cache[key] = (verifiers.verify_secret_green(current_hash, change.current),
                              verifiers.verify_secret_green(other_hash, change.new))
            current_ok, same_as_other = cache[key]
            cmd.update(current_ok=current_ok, same_as_other=same_as_other)
            if current_ok and not same_as_other:
                if "hash" not in cache:
                    cache["hash"] = verifiers.hash_secret_green(change.new)
                cmd["new_hash"] = cache["hash"]
            return agg.ChangeOnePassword(**cmd)

        decision, _ = self._execute(number, make)
        return _outcome(decision)
