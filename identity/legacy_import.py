"""The legacy import (R-LEG-1) on the service side: one batch of raw records → one result per
record. Every record is validated on its own; a bad one is reported and never stops the batch.

Idempotent: a customer number that is already imported with the same content answers
``unchanged``; with different content ``rejected`` (``already_imported_with_different_data``) —
a re-import never rewrites a customer (their stream may have moved on: passwords changed…).

The whole batch is appended in one transaction (events + the ``identity.legacy_imports``
projection), streams in customer-number order so concurrent batches cannot deadlock. If a
concurrent importer wins a customer number meanwhile, the batch is retried and then finds it.
"""
from __future__ import annotations

import psycopg

from contracts.errors import ConcurrencyConflict, ValidationFailed
from contracts.events import Metadata, NewEvent
from identity import readmodels
from identity.domain import customer as agg
from identity.domain import messages as msg
from identity.domain.legacy_record import RecordRejected, validate_record

MAX_BATCH = 2000
RETRIES = 5


def _line_of(raw, index: int):
    line = raw.get("line") if isinstance(raw, dict) else None
    return line if isinstance(line, int) and not isinstance(line, bool) else index + 1


def import_batch(store, records, metadata: Metadata) -> list[dict]:
    if not isinstance(records, list):
        raise ValidationFailed(msg.IMPORT_REASONS["invalid_record"],
                               errors={"records": [msg.IMPORT_REASONS["invalid_record"]]})
    if len(records) > MAX_BATCH:
        message = f"一度に取り込めるのは{MAX_BATCH}件までです。"
        raise ValidationFailed(message, "batch_too_large", errors={"records": [message]})

    results: list[dict | None] = [None] * len(records)
    candidates = []
    for index, raw in enumerate(records):
        line = _line_of(raw, index)
        try:
            record = validate_record(raw)
        except RecordRejected as rej:
            results[index] = {"line": line, "status": "rejected", "reason": rej.reason, "message": rej.message}
            continue
        candidates.append((record.customer_number, index, line, record))
    candidates.sort(key=lambda c: (c[0], c[1]))   # stream order: no deadlocks between batches

    for attempt in range(RETRIES):
        try:
            decided = _append_all(store, candidates, metadata)
            break
        except (ConcurrencyConflict, psycopg.errors.DeadlockDetected):
            if attempt == RETRIES - 1:
                raise
    for index, result in decided.items():
        results[index] = result
    return results


def _append_all(store, candidates, metadata: Metadata) -> dict[int, dict]:
    decided: dict[int, dict] = {}
    if not candidates:
        return decided
    with store.transaction() as conn:
        known = readmodels.imported_digests(conn, sorted({c[0] for c in candidates}))
        for number, index, line, record in candidates:
            digest = known.get(number)
            # The import decision needs only "does it exist, and with what content"; the
            # projection written with every import event answers that for the whole batch.
            state = agg.Customer(exists=True, record_digest=digest) if digest else agg.initial_state
            decision = agg.decide(agg.ImportLegacy(record), state)
            if decision.facts:
                store.append(f"customer-{number}", [NewEvent(f.type, f.data) for f in decision.facts],
                             0, metadata, conn=conn)
                for f in decision.facts:
                    readmodels.apply(conn, f"customer-{number}", f.type, f.data)
                known[number] = record.digest
            result = {"line": line, **decision.result}
            if record.warnings and result["status"] == "imported":
                result["warnings"] = list(record.warnings)
            decided[index] = result
    return decided
