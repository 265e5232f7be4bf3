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
    Projection("notifier_outbox", "notifier.projection:rebuild", ("notifier.outbox",), ("mail",)),
    Projection("notifier_addresses", "notifier.addresses_projection:rebuild",
               ("notifier.addresses",), ("customer", "notifyaddr")),
)}
