"""The ``secret_questions`` Nameko service (SPEC R-INI-1, R-RBA-1, R-RBA-2).

Thin around the pure decider in ``identity.secret_questions_domain``: load the customer's
``secretq-<customer_number>`` stream, fold, decide, append with the expected version, retry on
a version conflict. argon2id hashing and verification run in ``eventlet.tpool`` (real threads;
argon2-cffi releases the GIL) so one customer's hash never stalls every other request of the
process (DESIGN.md, eventlet traps).
"""
from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

from eventlet import tpool
from marshmallow import ValidationError
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from contracts import secret_questions as contract
from contracts.errors import ConcurrencyConflict, Forbidden, Locked, ValidationFailed
from identity import secret_questions_domain as domain
from identity import verifiers
from services.dependencies import Clock, EventStoreProvider, Logger, RequestContext
from services.ping import PingMixin

MAX_ATTEMPTS = 5   # optimistic-concurrency retries before giving up with 409


class Policy(DependencyProvider):
    """Lockout settings, the same keys identity reads (one policy for every credential,
    R-RBA-2): Nameko config key, else environment variable, else the default.

    ``LOCKOUT_THRESHOLD`` consecutive wrong answers lock the secret answers (default 5).
    ``LOCK_RELEASE_SECONDS`` > 0 releases a lock by time; 0 (default) leaves unlocking to an
    operator.
    """

    def setup(self):
        cfg = self.container.config

        def value(key, default):
            raw = cfg.get(key)
            if raw in (None, ""):
                raw = os.environ.get(key)
            return int(raw) if raw not in (None, "") else default

        self.threshold = value("LOCKOUT_THRESHOLD", domain.DEFAULT_LOCKOUT_THRESHOLD)
        release = value("LOCK_RELEASE_SECONDS", 0)
        self.release_after = timedelta(seconds=release) if release > 0 else None
        if self.threshold < 1:
            raise ValueError("LOCKOUT_THRESHOLD must be at least 1")

    def get_dependency(self, worker_ctx):
        return self


def _load(schema_cls, payload: dict) -> dict:
    """Load RPC arguments; a wrong shape is a ValidationFailed in the gateway's error format."""
    try:
        return schema_cls().load(payload)
    except ValidationError as exc:
        errors = _string_keys(exc.messages)
        raise ValidationFailed(_first_message(errors) or ValidationFailed.default_detail,
                               "validation_failed", errors=errors) from None


def _string_keys(messages):
    if isinstance(messages, dict):
        return {str(k): _string_keys(v) for k, v in messages.items()}
    return messages


def _first_message(messages) -> str | None:
    if isinstance(messages, str):
        return messages
    values = messages.values() if isinstance(messages, dict) else messages
    for value in values:
        found = _first_message(value)
        if found:
            return found
    return None


class SecretQuestionsService(PingMixin):
    name = contract.SERVICE

    store = EventStoreProvider()
    metadata = RequestContext()
    log = Logger()
    clock = Clock()
    policy = Policy()

    # -- queries -------------------------------------------------------------------------------

    @rpc
    def catalogue(self):
        return domain.catalogue()

    @rpc
    def status(self, customer_number):
        args = _load(contract.CustomerPayload, {"customer_number": customer_number})
        state = self._state(args["customer_number"])
        return {"registered": state.registered, "locked": state.locked}

    @rpc
    def pick_question(self, customer_number):
        args = _load(contract.CustomerPayload, {"customer_number": customer_number})
        state = self._state(args["customer_number"])
        if state.locked and domain.lock_released(state, self.clock.now(), self.policy.release_after):
            # The timed release is written when the next answer arrives; asking is allowed now.
            state = replace(state, locked=False)
        qid = domain.question_to_ask(state)
        return {"id": qid, "text": domain.CATALOGUE[qid]}

    # -- commands ------------------------------------------------------------------------------

    @rpc
    def register(self, customer_number, answers, confirmed):
        args = _load(contract.RegisterPayload, {"customer_number": customer_number,
                                                "answers": answers, "confirmed": confirmed})
        number = args["customer_number"]
        cmd = domain.RegisterSecretQuestions(
            number, tuple(domain.Answer(a["question_id"], a["answer"]) for a in args["answers"]),
            args["confirmed"])
        stream = contract.stream_name(number)
        state = self._state(number)
        domain.check_registration(cmd, state)      # cheap rules first: no hashing for bad input
        # argon2id with identity's parameters (identity/verifiers.py), in a real thread.
        hashed = tpool.execute(lambda: {a.question_id: verifiers.hash_secret(a.answer)
                                        for a in cmd.answers})
        cmd = domain.RegisterSecretQuestions(number, cmd.answers, cmd.confirmed, hashed)
        for _ in range(MAX_ATTEMPTS):
            events = domain.decide(cmd, state)
            try:
                self.store.append(stream, events, state.version, self.metadata, subject=number)
                break
            except ConcurrencyConflict:
                state = self._state(number)       # the winner may have registered: decide again
        else:
            raise ConcurrencyConflict(stream=stream)
        self.log.info("secret_questions_registered", customer_number=number,
                      question_ids=[a.question_id for a in cmd.answers])
        return {"registered": True}

    @rpc
    def verify_answer(self, customer_number, question_id, answer):
        args = _load(contract.VerifyPayload, {"customer_number": customer_number,
                                              "question_id": question_id, "answer": answer})
        number, qid = args["customer_number"], args["question_id"]
        stream = contract.stream_name(number)
        outcomes: dict[str, bool] = {}   # verifier -> matched (retries reuse the verification)
        for _ in range(MAX_ATTEMPTS):
            state = self._state(number)
            now = self.clock.now()
            domain.check_answerable(state, qid, now, self.policy.release_after)
            verifier = state.verifiers[qid]
            if verifier not in outcomes:
                outcomes[verifier] = verifiers.verify_secret_green(verifier, args["answer"])
            cmd = domain.VerifySecretAnswer(number, qid, outcomes[verifier], now,
                                            self.policy.threshold, self.policy.release_after)
            events = domain.decide(cmd, state)
            try:
                self.store.append(stream, events, state.version, self.metadata, subject=number)
                break
            except ConcurrencyConflict:
                continue
        else:
            raise ConcurrencyConflict(stream=stream)
        types = [e.type for e in events]
        self.log.info("secret_answer_checked", customer_number=number, question_id=qid,
                      events=types)
        if "secret_answers_locked" in types:
            raise Locked(domain.MSG_LOCKED, domain.CODE_LOCKED, credential=domain.CREDENTIAL)
        return "secret_answer_verified" in types

    @rpc
    def unlock(self, customer_number):
        """Operator procedure (R-RBA-2): lift the lock of the secret answers. The operator and
        the reason travel in the request context into the event's metadata."""
        return self._operator(customer_number, domain.UnlockSecretAnswers)

    @rpc
    def reset(self, customer_number):
        """Operator procedure (R-INI-1 "forgotten answers: operator reset only"): the customer
        registers three questions again."""
        return self._operator(customer_number, domain.ResetSecretQuestions)

    # -- helpers -------------------------------------------------------------------------------

    def _operator(self, customer_number, command_cls):
        if self.metadata.actor.kind != "operator":
            raise Forbidden(domain.MSG_OPERATOR_ONLY, "operator_only")
        args = _load(contract.CustomerPayload, {"customer_number": customer_number})
        number = args["customer_number"]
        for _ in range(MAX_ATTEMPTS):
            state = self._state(number)
            events = domain.decide(command_cls(number), state)
            try:
                self.store.append(contract.stream_name(number), events, state.version,
                                  self.metadata, subject=number)
                return {"events": [e.type for e in events]}
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(stream=contract.stream_name(number))

    def _state(self, customer_number: str) -> domain.SecretQuestions:
        return domain.fold(self.store.read_stream(contract.stream_name(customer_number)))
