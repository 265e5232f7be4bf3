"""The ``identity`` Nameko service: legacy import, legacy login, the order of the initial
operation, password change, login with risk-based step-up, confirmation password, lockouts.

Thin by design (DESIGN.md "Inside a service"): validate the arguments, load the customer's
stream, fold it, gather the inputs the pure decider needs (password checks in real threads,
secret-questions answers over RPC), decide, append with the expected version, retry on a
version conflict. The RPC interface is documented in ``contracts.identity``.

Lockouts and customer-number enumeration (R-RBA-2). A bank must tell a locked customer to
call (distinct code ``credential_locked``), yet a lock must not reveal that a number exists.
Chosen: login IDs without the credential — unknown numbers, and at the normal login also
customers who have not migrated yet — have *shadow counters* (``identity.shadow_counters``,
keyed by an HMAC of the login ID) that count failures and lock exactly like real ones. So any
login ID, real or not, answers ``invalid_credentials`` four times and ``credential_locked``
from the fifth failure on, and unknown IDs spend a dummy hash verification of the same kind
(same time) as a real wrong password. The alternative — answering a locked credential like a
wrong password until the right password comes — was rejected: it keeps a password oracle
open for a locked account and cannot tell a locked customer to contact the bank. The price is
a small table; it is bookkeeping, not audit data (no event: an unknown number has no stream;
the attempt is logged with the hashed key).

``already_migrated`` is only said to someone who typed the right legacy password, for the same
reason; the generic wrong-credentials message itself points migrated customers to the normal
login.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import eventlet
from nameko.exceptions import UnknownService
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc

from contracts import identity as contract  # noqa: F401  (registers identity's event types)
from contracts.errors import (ConcurrencyConflict, DomainError, Locked, NotFound, TooEarly,
                              Unauthenticated, Unavailable)
from contracts.events import NewEvent
from identity import legacy_import, readmodels, verifiers
from identity.domain import customer as agg
from identity.domain import inputs, lockout
from identity.domain import messages as msg
from identity.domain.environment import environment_key
from identity.domain.legacy_record import mask_phone
from identity.domain.legacy_record import phone_id as make_phone_id
from identity.domain.passwords import validate_password_change
from services import crypto
from services.config import Settings
from services.dependencies import Clock, EventStoreProvider, Logger, RequestContext
from services import ping  # the module, not the mixin: `nameko run` would take PingMixin for a service
from services.rpc import rpc_call

RETRIES = 5

# Login-state cache (issue 3: login throughput). Every login appends an event, so replaying and
# decrypting the whole customer stream on each login grows without bound. The cache keeps, per
# process, the folded state at a known stream version; a login reads only the events after it
# (plus the cached last event, whose id must still match, so a different database or a rewritten
# stream is never mistaken for the cached one). It is only a shortcut of the same fold of the
# log: the expected version of the append still guards every decision, and a conflict retries
# from a full load. Personal fields (phones, e-mail) are dropped before caching: login does not
# use them, and crypto-shredding must not leave them in memory. Bounded, least recently used.
# A login that changes the stream (every successful or failed attempt does) is decided on the
# cached state without any read at all (IdentityService._execute, ``unread``); its append's
# expected version is what proves the cache current.
_LOGIN_STATES: OrderedDict = OrderedDict()
_LOGIN_STATES_MAX = 20_000
# Domain errors are answers, not faults: Nameko logs them as warnings, not as errors.
expected = rpc(expected_exceptions=DomainError)


def stream_of(customer_number: str) -> str:
    return f"customer-{customer_number}"


@dataclass(frozen=True)
class IdentitySettings:
    cutover_at: datetime
    lockout: lockout.Policy
    challenge_ttl: timedelta
    rpc_timeout: float
    shadow_key: bytes


class IdentityConfig(DependencyProvider):
    """identity's settings: Nameko config keys first (tests, deploy/nameko.yml), then the
    environment, then defaults. ``CUTOVER_AT`` (ISO 8601), ``LOCKOUT_THRESHOLD`` (5),
    ``LOCK_RELEASE_SECONDS`` (0 = operator only), ``CHALLENGE_TTL_SECONDS`` (300)."""

    def setup(self):
        cfg = self.container.config
        base = Settings()

        def get(name, default):
            value = cfg.get(name)
            if value in (None, ""):
                value = os.environ.get(name)
            return default if value in (None, "") else value

        cutover = get("CUTOVER_AT", None)
        cutover_at = datetime.fromisoformat(cutover) if isinstance(cutover, str) else (cutover or base.cutover_at)
        if cutover_at.tzinfo is None:
            raise ValueError("CUTOVER_AT needs a time zone, e.g. 2025-01-05T07:00:00+09:00")
        master = crypto.parse_master_keys(base.field_keys)
        # A key of its own for the shadow counters, derived from the current master key.
        shadow_key = hmac.new(next(iter(master.values())), b"identity/shadow-counters", hashlib.sha256).digest()
        self.value = IdentitySettings(
            cutover_at=cutover_at,
            lockout=lockout.Policy(int(get("LOCKOUT_THRESHOLD", 5)), int(get("LOCK_RELEASE_SECONDS", 0))),
            challenge_ttl=timedelta(seconds=int(get("CHALLENGE_TTL_SECONDS", 300))),
            rpc_timeout=float(get("RPC_TIMEOUT", base.rpc_timeout)),
            shadow_key=shadow_key)

    def get_dependency(self, worker_ctx):
        return self.value


def _outcome(decision: agg.Decision):
    if decision.error is not None:
        raise decision.error
    return decision.result


def _parallel(first, second):
    """Run two blocking (tpool) calls at once; both are awaited even if one raises."""
    other = eventlet.spawn(second)
    try:
        a = first()
    finally:
        b = other.wait()
    return a, b


from identity import operator_procedures  # noqa: E402  (the module: `nameko run` must not see the mixin)


class IdentityService(operator_procedures.OperatorProcedures, ping.PingMixin):
    name = "identity"

    store = EventStoreProvider()
    context = RequestContext()
    log = Logger()
    clock = Clock()
    settings = IdentityConfig()
    secret_questions = RpcProxy("secret_questions")
    otp_service = RpcProxy("otp_service")

    # -- plumbing ----------------------------------------------------------------------------

    def _load(self, number: str) -> tuple[agg.Customer, int]:
        events = self.store.read_stream(stream_of(number))
        return agg.fold(events), (events[-1].stream_version if events else 0)

    def _login_cache_key(self, number: str) -> tuple:
        return (getattr(getattr(self.store, "pool", None), "conninfo", id(self.store)), number)

    def _remember_login_state(self, number: str, state: agg.Customer, version: int, last_id) -> None:
        key = self._login_cache_key(number)
        _LOGIN_STATES[key] = (replace(state, phones=(), email=None), version, last_id)
        _LOGIN_STATES.move_to_end(key)
        while len(_LOGIN_STATES) > _LOGIN_STATES_MAX:
            _LOGIN_STATES.popitem(last=False)

    def _load_for_login(self, number: str) -> tuple[agg.Customer, int]:
        """Like ``_load`` but folds only the events after the cached login state (see above)."""
        cached = _LOGIN_STATES.get(self._login_cache_key(number))
        events = []
        if cached is not None:
            state, version, last_id = cached
            events = self.store.read_stream(stream_of(number), version)
            if events and events[0].stream_version == version and events[0].event_id == last_id:
                events = events[1:]
            else:
                cached = None
        if cached is None:
            state, version = agg.initial_state, 0
            events = self.store.read_stream(stream_of(number))
        if events:
            state = replace(agg.fold(events, state), phones=(), email=None)
            version, last_id = events[-1].stream_version, events[-1].event_id
        if version:
            self._remember_login_state(number, state, version, last_id)
        return state, version

    def _cached_login_state(self, number: str) -> tuple[agg.Customer, int] | None:
        """The cached (state, version) of a migrated customer, not read from the stream."""
        cached = _LOGIN_STATES.get(self._login_cache_key(number))
        if cached is None or not (cached[0].exists and cached[0].migrated):
            return None
        return cached[0], cached[1]

    def _commit(self, number: str, facts, expected_version: int) -> list[NewEvent]:
        stream = stream_of(number)
        events = [NewEvent(f.type, f.data) for f in facts]
        if not any(f.type in readmodels.PROJECTED for f in facts):
            # Nothing to project (a login, the common case): the append is one statement,
            # atomic by itself, so no BEGIN/COMMIT round trips around it.
            self.store.append(stream, events, expected_version, self.context)
            return events
        with self.store.transaction() as conn:
            self.store.append(stream, events, expected_version, self.context, conn=conn)
            for f in facts:
                readmodels.apply(conn, stream, f.type, f.data)
        return events

    def _execute(self, number: str, make_command, loaded=None, *, unread: bool = False,
                 for_login: bool = False) -> tuple[agg.Decision, agg.Customer]:
        """Load, decide, append with the expected version; on a concurrent append start over.
        ``loaded``: the (state, version) used for the first attempt, read by the caller or, with
        ``unread``, the cached login state. An unread state is as good as a read one for a
        decision with facts: their append's expected version proves it current. A decision
        without facts has nothing to prove it, so it is taken again on a read (an unlock made
        by another process must count at once).
        ``for_login``: reads after the first attempt fold only the events after the cached
        login state, and the state after an append becomes the cached one."""
        load = self._load_for_login if for_login else self._load
        for _ in range(RETRIES):
            state, version = loaded or load(number)
            unproven, loaded = unread and loaded is not None, None
            decision = agg.decide(make_command(state), state)
            if decision.facts:
                try:
                    appended = self._commit(number, decision.facts, version)
                except ConcurrencyConflict:
                    continue
                state = agg.fold(decision.facts, state)
                if for_login:
                    self._remember_login_state(number, state, version + len(appended), appended[-1].event_id)
            elif unproven:
                continue
            self._log_facts(number, decision.facts)
            return decision, state
        raise ConcurrencyConflict()

    def _log_facts(self, number: str, facts) -> None:
        for f in facts:
            self.log.info(f.type, customer_number=number,
                          **{k: v for k, v in f.data.items() if k in ("credential", "consecutive_failures", "by")})

    def _sq(self, method: str, *args):
        try:
            return rpc_call(getattr(self.secret_questions, method), *args, timeout=self.settings.rpc_timeout)
        except UnknownService:
            raise Unavailable(service="secret_questions") from None

    def _secret_questions_registered(self, number: str) -> bool:
        answer = self._sq("status", number)
        return bool(isinstance(answer, dict) and answer.get("registered") is True)

    def _check_cutover(self, now: datetime) -> None:
        if now < self.settings.cutover_at:
            raise TooEarly(msg.too_early(self.settings.cutover_at), "before_cutover",
                           cutover_at=self.settings.cutover_at.isoformat())

    # -- hooks for the OTP issue (issue 4) ---------------------------------------------------

    def _otp(self, method: str, *args):
        # Fail closed: without an answer from otp_service a login cannot skip the OTP (R-INI-9).
        try:
            return rpc_call(getattr(self.otp_service, method), *args, timeout=self.settings.rpc_timeout)
        except UnknownService:
            raise Unavailable(service="otp_service") from None

    def otp_token_active(self, customer_number: str) -> bool:
        """OTP hook: does the customer have an active OTP token? Then login needs the OTP (R-INI-9)."""
        return self._otp("has_active_token", customer_number) is True

    def otp_code_valid(self, customer_number: str, otp: str | None) -> bool:
        """OTP hook: verify a login OTP with the OTP service (it counts its own failures and
        refuses a replayed code). Any refusal (wrong, replayed, malformed) is False. A lock is
        not: the customer who typed the right password must hear that OTP use is stopped and
        whom to call (423 ``otp_locked``), not "wrong OTP" forever (R-RBA-2)."""
        if not otp:
            return False
        try:
            answer = self._otp("verify_otp", customer_number, otp, "login")
        except (Unavailable, ConcurrencyConflict, Locked):
            raise
        except DomainError:
            return False
        return bool(isinstance(answer, dict) and answer.get("ok") is True)

    def otp_progress(self, customer_number: str) -> str:
        """The customer's OTP stage from otp_service: none | awaiting_call | issued | active."""
        answer = self._otp("progress", customer_number)
        return answer.get("stage", "none") if isinstance(answer, dict) else "none"

    def otp_application_done(self, customer_number: str) -> bool:
        """OTP hook: has the customer finished the OTP application (steps 5–9), i.e. activated
        a token? Until then ``next_step`` after the password change is ``otp_application``."""
        return self.otp_token_active(customer_number)

    # -- shadow counters (login IDs without the credential) ------------------------------------

    def _shadow_key(self, login_id: str) -> bytes:
        return hmac.new(self.settings.shadow_key, login_id.encode(), hashlib.sha256).digest()

    def _shadow_counter(self, conn, key: bytes, credential: str, *, lock: bool) -> lockout.Counter:
        row = conn.execute(
            "SELECT failures, locked_at, release_at FROM identity.shadow_counters "
            "WHERE key = %s AND credential = %s" + (" FOR UPDATE" if lock else ""),
            (key, credential)).fetchone()
        return lockout.Counter(*row) if row else lockout.Counter()

    def _shadow_failure(self, login_id: str, credential: str, dummy_verify, password: str,
                        invalid: DomainError) -> None:
        """A login ID that has no such credential: answer exactly like a wrong password."""
        now = self.clock.now()
        key = self._shadow_key(login_id)
        policy = self.settings.lockout
        with self.store.pool.connection() as conn:
            counter = self._shadow_counter(conn, key, credential, lock=False)
        if counter.is_locked(now):
            raise Locked(msg.LOCKED[credential], "credential_locked", credential=credential)
        dummy_verify(password)    # the same kind of work (and time) as a real wrong password
        with self.store.transaction() as conn:
            # The row must exist to be locked: concurrent first failures then count one by one.
            conn.execute("INSERT INTO identity.shadow_counters (key, credential) VALUES (%s, %s) "
                         "ON CONFLICT DO NOTHING", (key, credential))
            counter = self._shadow_counter(conn, key, credential, lock=True)
            if counter.release_due(now):
                counter = lockout.Counter()
            if counter.is_locked(now):
                raise Locked(msg.LOCKED[credential], "credential_locked", credential=credential)
            counter = lockout.after_failure(counter, policy, now)
            conn.execute(
                "INSERT INTO identity.shadow_counters (key, credential, failures, locked_at, release_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key, credential) DO UPDATE SET "
                "failures = EXCLUDED.failures, locked_at = EXCLUDED.locked_at, "
                "release_at = EXCLUDED.release_at, updated_at = EXCLUDED.updated_at",
                (key, credential, counter.failures, counter.locked_at, counter.release_at, now))
        self.log.info("unknown_login_id_failed", credential=credential, key=key.hex()[:16],
                      consecutive_failures=counter.failures)
        if counter.locked:
            raise Locked(msg.LOCKED[credential], "credential_locked", credential=credential)
        raise invalid

    # -- legacy import -------------------------------------------------------------------------

    @expected
    def import_legacy(self, records=None):
        results = legacy_import.import_batch(self.store, records, self.context)
        counts = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        self.log.info("legacy_import_batch", **counts)
        return results

    # -- initial operation -----------------------------------------------------------------------

    @expected
    def legacy_login(self, customer_number=None, password=None, client=None):
        number = inputs.customer_number(customer_number)
        secret = inputs.password(password)
        environment = environment_key(inputs.client(client))
        now = self.clock.now()
        self._check_cutover(now)
        cache: dict = {}

        def make(state: agg.Customer):
            if not state.exists:
                return None
            ok = None
            if not agg.blocked(state, agg.LEGACY, now):
                key = state.legacy_login_verifier
                if key not in cache:
                    cache[key] = verifiers.verify_legacy_green(key, secret)
                ok = cache[key]
            return agg.LegacyLogin(now, self.settings.cutover_at, environment, ok, self.settings.lockout)

        loaded = self._load(number)
        if not loaded[0].exists:
            self._shadow_failure(number, agg.LEGACY, verifiers.dummy_verify_legacy_green, secret,
                                 Unauthenticated(msg.LEGACY_INVALID_CREDENTIALS, "invalid_credentials"))
        decision, state = self._execute(number, make, loaded)
        _outcome(decision)
        return {"customer_number": number, "next_step": self._next_step(number, state)}

    def _next_step(self, number: str, state: agg.Customer) -> str:
        registered = True if state.migrated else self._secret_questions_registered(number)
        return agg.next_step(state, registered, self.otp_application_done(number) if state.migrated else False)

    @expected
    def migration_status(self, customer_number=None):
        number = inputs.customer_number(customer_number)
        state, _ = self._load(number)
        if not state.exists:
            raise NotFound(msg.CUSTOMER_NOT_FOUND, "customer_not_found")
        registered = True if state.migrated else self._secret_questions_registered(number)
        stage = self.otp_progress(number) if state.migrated else "none"
        otp_done = stage == "active"
        next_step = agg.next_step(state, registered, otp_done)
        # After the application: waiting for the call, then the mailed token to activate.
        if next_step == "otp_application" and stage in ("awaiting_call", "issued"):
            next_step = {"awaiting_call": "otp_awaiting_call", "issued": "otp_activation"}[stage]
        return {"next_step": next_step, "steps": agg.steps(state, registered, otp_done)}

    @expected
    def change_passwords(self, customer_number=None, body=None):
        number = inputs.customer_number(customer_number)
        change = validate_password_change(body)
        now = self.clock.now()
        policy = self.settings.lockout
        cache: dict = {}

        def make(state: agg.Customer):
            if "sq" not in cache:
                cache["sq"] = True if (state.migrated or not state.exists) else \
                    self._secret_questions_registered(number)
            registered = cache["sq"]
            cmd = dict(change=change, now=now, secret_questions_registered=registered,
                       current_login_ok=None, current_confirmation_ok=None, policy=policy)
            try:
                agg.password_change_allowed(state, registered)
            except DomainError:
                return agg.ChangePasswords(**cmd)
            if agg.blocked(state, agg.LEGACY, now) or agg.blocked(state, agg.CONFIRMATION, now):
                return agg.ChangePasswords(**cmd)
            key = (state.legacy_login_verifier, state.legacy_pin_verifier)
            if key not in cache:
                cache[key] = _parallel(
                    lambda: verifiers.verify_legacy_green(state.legacy_login_verifier, change.current_login_password),
                    lambda: verifiers.verify_legacy_green(state.legacy_pin_verifier,
                                                          change.current_confirmation_password))
            login_ok, pin_ok = cache[key]
            cmd.update(current_login_ok=login_ok, current_confirmation_ok=pin_ok)
            if login_ok and pin_ok:
                if "hashes" not in cache:
                    cache["hashes"] = _parallel(
                        lambda: verifiers.hash_secret_green(change.new_login_password),
                        lambda: verifiers.hash_secret_green(change.new_confirmation_password))
                cmd.update(new_login_password_hash=cache["hashes"][0],
                           new_confirmation_password_hash=cache["hashes"][1])
            return agg.ChangePasswords(**cmd)

        decision, state = self._execute(number, make)
        _outcome(decision)
        return {"next_step": agg.next_step(state, True, self.otp_application_done(number))}

    # -- login after migration (R-INI-9, R-RBA-1) ------------------------------------------------

    @expected
    def login(self, login_id=None, password=None, otp=None, client=None):
        lid = inputs.login_id(login_id)
        secret = inputs.password(password)
        otp_code = inputs.otp(otp)
        environment = environment_key(inputs.client(client))
        now = self.clock.now()
        invalid = Unauthenticated(msg.INVALID_CREDENTIALS, "invalid_credentials")
        # The login ID of a migrated customer is the customer number (R-INI-2 / issue 3).
        by_customer_number = inputs.CUSTOMER_NUMBER.fullmatch(lid) is not None
        cache: dict = {}

        def make(state: agg.Customer):
            ok = None
            if not agg.blocked(state, agg.LOGIN, now):
                key = ("pw", state.login_password_hash)
                if key not in cache:
                    cache[key] = verifiers.verify_secret_green(state.login_password_hash, secret)
                ok = cache[key]
            cmd = dict(now=now, environment=environment, password_ok=ok, policy=self.settings.lockout)
            if not ok:
                return agg.Login(**cmd)
            # A customer who never applied for OTP has no token: otp_service is not asked (the
            # argument, and why a racing application cannot slip through, at
            # agg.otp_token_possible). Decided per attempt, on the state a retry reloaded.
            if agg.otp_token_possible(state):
                if "otp" not in cache:
                    required = self.otp_token_active(lid)
                    cache["otp"] = (required, self.otp_code_valid(lid, otp_code) if required else None)
                cmd.update(otp_required=cache["otp"][0], otp_ok=cache["otp"][1])
                if cache["otp"][0] and not cache["otp"][1]:
                    return agg.Login(**cmd)
            if not agg.environment_known(state, environment):
                if "question" not in cache:
                    question = self._sq("pick_question", lid)
                    if not (isinstance(question, dict) and question.get("id") is not None and question.get("text")):
                        raise Unavailable(service="secret_questions")
                    cache["question"] = {"id": str(question["id"]), "text": question["text"]}
                    cache["challenge_id"] = str(uuid.uuid4())
                cmd.update(question=cache["question"], challenge_id=cache["challenge_id"],
                           challenge_expires_at=now + self.settings.challenge_ttl)
            return agg.Login(**cmd)

        # A repeat login reads nothing: it is decided on the cached state (see _execute).
        cached = self._cached_login_state(lid) if by_customer_number else None
        if cached is None:
            loaded = self._load_for_login(lid) if by_customer_number else (agg.initial_state, 0)
            if not (loaded[0].exists and loaded[0].migrated):
                self._shadow_failure(lid, agg.LOGIN, verifiers.dummy_verify_argon2_green, secret, invalid)
        decision, _ = self._execute(lid, make, cached or loaded, unread=cached is not None, for_login=True)
        return _outcome(decision)

    @expected
    def answer_challenge(self, challenge_id=None, answer=None, client=None):
        cid = inputs.challenge_id(challenge_id)
        text = inputs.answer(answer)
        environment = environment_key(inputs.client(client))
        now = self.clock.now()
        with self.store.pool.connection() as conn:
            number = readmodels.challenge_owner(conn, cid)
        if number is None:
            raise Unauthenticated(msg.CHALLENGE_INVALID, "challenge_invalid")
        cache: dict = {}

        def make(state: agg.Customer):
            try:
                challenge = agg.open_challenge(state, cid, environment, now)
            except DomainError:
                return agg.AnswerChallenge(cid, environment, now, False)   # the decider refuses it
            if "ok" not in cache:
                # The secret-questions service compares the answer and counts its own failures
                # (it raises Locked once the answers are locked). Asked once, even on a retry.
                cache["ok"] = self._sq("verify_answer", number, challenge.question_id, text) is True
            return agg.AnswerChallenge(cid, environment, now, cache["ok"])

        decision, _ = self._execute(number, make)
        return _outcome(decision)

    # -- for later issues --------------------------------------------------------------------------

    @expected
    def verify_confirmation_password(self, customer_number=None, password=None):
        number = inputs.customer_number(customer_number)
        secret = inputs.password(password)
        now = self.clock.now()
        cache: dict = {}

        def make(state: agg.Customer):
            ok = None
            if state.exists and not agg.blocked(state, agg.CONFIRMATION, now):
                kind, verifier = state.confirmation_verifier
                if (kind, verifier) not in cache:
                    check = verifiers.verify_secret_green if kind == "argon2" else verifiers.verify_legacy_green
                    cache[(kind, verifier)] = check(verifier, secret)
                ok = cache[(kind, verifier)]
            return agg.VerifyConfirmationPassword(now, ok, self.settings.lockout)

        decision, _ = self._execute(number, make)
        return _outcome(decision)

    @expected
    def phones(self, customer_number=None):
        number = inputs.customer_number(customer_number)
        state, _ = self._load(number)
        if not state.exists:
            raise NotFound(msg.CUSTOMER_NOT_FOUND, "customer_not_found")
        return [{"phone_id": make_phone_id(number, p), "masked": mask_phone(p)} for p in state.phones]

    @expected
    def phone(self, customer_number=None, phone_id=None):
        """One registered number in full (E.164), for the inbound-call verification."""
        number = inputs.customer_number(customer_number)
        wanted = inputs.text(phone_id, "phone_id", max_len=64)
        state, _ = self._load(number)
        for p in state.phones:
            if make_phone_id(number, p) == wanted:
                return {"phone_id": wanted, "masked": mask_phone(p), "e164": p}
        raise NotFound(msg.CUSTOMER_NOT_FOUND, "phone_not_found")

    @expected
    def unlock_credential(self, customer_number=None, credential=None):
        """Operator procedure (R-LEG-4, R-RBA-2): release a locked credential. The operator and
        the reason travel in the request context and end up in the event's metadata."""
        number = inputs.customer_number(customer_number)
        credential = inputs.text(credential, "credential", max_len=64)
        ctx = self.context
        decision, _ = self._execute(number, lambda state: agg.UnlockCredential(
            credential, self.clock.now(), ctx.actor.kind == "operator"))
        return _outcome(decision)
