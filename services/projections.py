"""The read models `tsunagi replay` can rebuild: one registry, named by module path strings.

The chassis must not import the service packages (they stand on it), so each projection's
rebuild function is named here as ``"module:function"`` and imported only when a replay runs,
as services/topology.py does for the service modules. A rebuild function has the signature
``rebuild(store, ..., progress=None) -> events_seen``: it empties its tables and replays the
log into them inside ``store.transaction()`` (replay hands it a store whose transaction is the
replay's own, so it writes into fresh tables that are switched in atomically).
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

# Bookkeeping columns set by the database clock when a row is written: a rebuilt row carries
# the replay's time, so they are not part of what must equal the log.
CLOCK_COLUMNS = ("imported_at", "updated_at")


@dataclass(frozen=True)
class Projection:
    name: str
    rebuild: str                 # "module:function"
    tables: tuple[str, ...]      # schema-qualified tables the function (re)fills
    categories: tuple[str, ...]  # stream categories it reads (for the progress total)
    ignore_columns: tuple[str, ...] = CLOCK_COLUMNS

    def load(self):
        module, _, func = self.rebuild.partition(":")
        return getattr(importlib.import_module(module), func)

    def run(self, store, progress=None) -> int:
        fn = self.load()
        if progress is not None and "progress" in inspect.signature(fn).parameters:
            return fn(store, progress=progress)
        return fn(store)


PROJECTIONS: dict[str, Projection] = {p.name: p for p in (
    Projection("identity", "identity.readmodels:rebuild",
               ("identity.legacy_imports", "identity.login_challenges"), ("customer",)),
    Projection("otp", "otp_service.projection:rebuild",
               ("otp.applications", "otp.tokens", "otp.customers"), ("otpapp", "otptoken", "otpcust")),
    # A delivery lease is the notifier's claim on a mail being sent right now, never in the
    # log (a rebuild starts with no leases).
    Projection("notifier_outbox", "notifier.projection:rebuild", ("notifier.outbox",), ("mail",),
               ignore_columns=CLOCK_COLUMNS + ("lease_until",)),
    Projection("notifier_addresses", "notifier.addresses_projection:rebuild",
               ("notifier.addresses",), ("customer", "notifyaddr")),
    Projection("phone_auth", "phone_auth.projection:rebuild",
               ("phone_auth.verifications",), ("phoneverif",)),
    Projection("mail_otp", "otp_service.mail_otp_projection:rebuild",
               ("otp.mail_otp_customers",), ("mailotp",)),
    Projection("passkeys", "identity.passkeys:rebuild", ("passkeys.credentials",), ("passkeys",)),
)}

# Tables of the services' schemas that are deliberately NOT read models, and why: replay must
# neither rebuild nor empty them. Every other table of a service schema must belong to a
# projection above (tests/integration/test_replay_cli.py checks this against the database).
NOT_READ_MODELS: dict[str, str] = {
    "identity.shadow_counters":
        "fail counters of login IDs that have no credential (R-RBA-2); an unknown number has "
        "no stream, so nothing in the log derives them — bookkeeping that may be emptied",
    "gateway.sessions":
        "bearer-token state: only the token's hash is kept, and no event carries it; a "
        "rebuilt session table would be empty (= everybody logged out), not equal to the log",
    "chassis.handled_events":
        "handler idempotency bookkeeping (which event ids a handler has done), not a view of "
        "the log's content: rebuilding it would make handlers skip or redo side effects",
    "chassis.checkpoints":
        "relay/consumer cursors: where each reader of the log stands, not derived from it",
    "passkeys.challenges":
        "WebAuthn challenges: single-use, minutes-long state of a ceremony in progress; asking "
        "for options is public, so no event records them",
    "gateway.passkey_sessions":
        "which live sessions a passkey login opened (they may not register passkeys, R-INI-8); "
        "session state like gateway.sessions, which it references",
    "eventstore.events": "the log itself",
    "eventstore.log": "the log itself (global positions and the hash chain)",
    "eventstore.subject_keys":
        "per-customer data keys (crypto-shredding); deleting one is the point, never rebuilt",
}
