"""`tsunagi audit events|journey`: the auditors' queries over the event log (R-PLT-4).

Connects as the read-only ``auditor`` role (AUDITOR_DATABASE_URL) to the view ``audit.events``
and nothing else. Rows stream from a server-side cursor in global order, so a query over
millions of events never holds more than one batch; ``--after POSITION --limit N`` pages by
key (the last position printed is the next page's ``--after``).

Personal fields are ciphertext in the log and are shown as ``***`` unless ``--reveal`` is
given with ``--auditor NAME``: then an ``audit_reveal`` event naming the auditor is appended
first (through the service role's store, the only one that holds the data keys), and only
then are the values decrypted and shown.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import uuid
from datetime import datetime

from services.cli._common import add_debug_flag

MASK = "***"
COLUMNS = ("global_position", "recorded_at", "stream_name", "stream_version", "event_type",
           "actor", "correlation_id", "reason", "data")
# Columns that are not columns of audit.events: the operator's (or auditor's) reason is in the
# metadata of the event (R-LEG-4: every operator action names the operator and the reason).
EXPRESSIONS = {"reason": "(metadata ->> 'reason') AS reason"}
PIPED_WIDTH = 320        # table width when stdout is no terminal (and COLUMNS is not set)
# The same expressions as the indexes of deploy/sql/080_audit.sql, so the planner uses them.
CUSTOMER_CONDITION = ("(substr(stream_name, strpos(stream_name, '-') + 1) = %s "
                      "OR (data ? 'customer_number' AND data ->> 'customer_number' = %s))")


def register(subparsers) -> None:
    audit = subparsers.add_parser(
        "audit", help="auditors' queries over the event log (read-only role)",
        description="Query the event log as the read-only auditor role (AUDITOR_DATABASE_URL).")
    sub = audit.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", required=True)

    ev = sub.add_parser(
        "events", help="events filtered by customer, stream, category, type, actor, correlation, time",
        description="Print events of the global log in order. Filters combine with AND; "
                    "--category and --type may repeat (OR within the option).")
    ev.add_argument("--customer", metavar="NUMBER",
                    help="events of streams whose id is this customer number, or whose data "
                         "names it as customer_number")
    ev.add_argument("--stream", metavar="NAME", help="one stream, e.g. customer-0123456789")
    ev.add_argument("--category", action="append", metavar="CAT", help="stream category, e.g. otpapp")
    ev.add_argument("--type", dest="event_type", action="append", metavar="TYPE", help="event type")
    ev.add_argument("--actor", metavar="[KIND:]ID", help="actor id, optionally with its kind")
    ev.add_argument("--correlation-id", metavar="ID")
    _common_args(ev)
    ev.set_defaults(func=cmd_events)

    jr = sub.add_parser(
        "journey", help="one customer's whole story across all services, in global order",
        description="Every event about CUSTOMER in every service (migration steps, calls, "
                    "mails, logins, locks, operator actions) in global order.")
    jr.add_argument("customer", metavar="CUSTOMER")
    _common_args(jr)
    jr.set_defaults(func=cmd_journey)


def _common_args(p) -> None:
    p.add_argument("--since", type=datetime.fromisoformat, metavar="ISO-TIME",
                   help="recorded at or after (ISO 8601, with offset)")
    p.add_argument("--until", type=datetime.fromisoformat, metavar="ISO-TIME",
                   help="recorded before (ISO 8601, with offset)")
    p.add_argument("--after", type=int, default=0, metavar="POSITION",
                   help="keyset paging: only events after this global position")
    p.add_argument("--limit", type=int, metavar="N", help="at most N events")
    p.add_argument("--format", choices=("table", "jsonl", "csv"), default="table",
                   help="output format (default table)")
    p.add_argument("--json", action="store_true", help="same as --format jsonl")
    p.add_argument("--reveal", action="store_true",
                   help="decrypt personal fields (recorded as an audit_reveal event; needs --auditor)")
    p.add_argument("--auditor", metavar="NAME", help="your name, recorded with --reveal")
    p.add_argument("--reason", metavar="TEXT", help="why you reveal (recorded with --reveal)")
    add_debug_flag(p)


# -- the query ------------------------------------------------------------------------------

def build_query(*, customer=None, stream=None, categories=None, event_types=None, actor=None,
                correlation_id=None, since=None, until=None, after=0, limit=None) -> tuple[str, list]:
    where, params = ["global_position > %s"], [after]
    if customer:
        where.append(CUSTOMER_CONDITION)
        params += [customer, customer]
    if stream:
        where.append("stream_name = %s")
        params.append(stream)
    if categories:
        where.append("category = ANY(%s)")
        params.append(list(categories))
    if event_types:
        where.append("event_type = ANY(%s)")
        params.append(list(event_types))
    if actor:
        kind, _, ident = actor.rpartition(":")
        where.append("actor ->> 'id' = %s")
        params.append(ident)
        if kind:
            where.append("actor ->> 'kind' = %s")
            params.append(kind)
    if correlation_id:
        where.append("(metadata ->> 'correlation_id') = %s")
        params.append(correlation_id)
    if since:
        where.append("recorded_at >= %s")
        params.append(since)
    if until:
        where.append("recorded_at < %s")
        params.append(until)
    select = ", ".join(EXPRESSIONS.get(c, c) for c in COLUMNS)
    sql = (f"SELECT {select} FROM audit.events WHERE {' AND '.join(where)} "
           "ORDER BY global_position")
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    return sql, params


def iter_events(auditor_url: str, sql: str, params: list, batch: int = 2000):
    """Rows as dicts from a server-side cursor: memory stays at one batch whatever the size."""
    import psycopg

    from services.cli import CommandFailed
    try:
        conn = psycopg.connect(auditor_url, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise CommandFailed(f"cannot connect as auditor: {str(exc).strip()}") from None
    try:
        with conn.transaction():
            cur = conn.cursor(name=f"audit_{uuid.uuid4().hex}")
            cur.itersize = batch
            cur.execute(sql, params)
            for row in cur:
                yield dict(zip(COLUMNS, row))
    finally:
        conn.close()


# -- personal fields --------------------------------------------------------------------------

def mask(value):
    from services.crypto import is_sealed
    if is_sealed(value):
        return MASK
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


class Revealer:
    """Decrypts sealed fields with the service role's store, one data-key lookup per subject."""

    def __init__(self, store):
        self.store = store
        self.keys: dict[str, bytes | None] = {}

    def record(self, auditor: str, command: str, filters: dict, reason: str | None) -> str:
        from contracts.audit import AUDIT_REVEAL, reveal_stream
        from contracts.events import Actor, Metadata, NewEvent
        from services.eventstore import NO_STREAM

        reveal_id = str(uuid.uuid4())
        meta = Metadata(actor=Actor("auditor", auditor), correlation_id=reveal_id,
                        service="tsunagi-cli", reason=reason)
        self.store.append(reveal_stream(reveal_id), [NewEvent(AUDIT_REVEAL.name, {
            "command": command, "filters": filters, "reason": reason})], NO_STREAM, meta)
        return reveal_id

    def open(self, conn, value, field: str = ""):
        from services import crypto
        if crypto.is_sealed(value):
            subject = value["s"]
            if subject not in self.keys:
                self.keys[subject] = self.store.keyring.data_key(conn, subject, create=False)
            return crypto.open_value(self.keys[subject], field, value)
        if isinstance(value, dict):
            return {k: self.open(conn, v, k) for k, v in value.items()}
        return value


# -- output -----------------------------------------------------------------------------------

def _plain(row: dict) -> dict:
    out = dict(row)
    out["recorded_at"] = row["recorded_at"].isoformat()
    return out


class TableWriter:
    """A rich table printed in chunks, so rows stream instead of being held for the layout."""

    WIDTHS = {"global_position": 9, "recorded_at": 26, "stream_name": 26, "stream_version": 4,
              "event_type": 30, "actor": 20, "correlation_id": 12, "reason": 24, "data": None}

    def __init__(self, chunk: int = 200):
        from rich.console import Console
        self.console = Console(soft_wrap=False)
        if not self.console.is_terminal and not os.environ.get("COLUMNS"):
            # Piped into a file or a pager: rich would assume 80 columns and drop whole columns
            # (actor, reason); give every fixed column its width and the data the rest.
            self.console.width = PIPED_WIDTH
        self.rows: list[dict] = []
        self.chunk = chunk
        self.first = True

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        from rich import box
        from rich.table import Table
        if not self.rows and not self.first:
            return
        t = Table(box=box.SIMPLE_HEAD if self.first else None, show_header=self.first,
                  pad_edge=False, show_edge=False)
        for name in ("pos", "recorded_at", "stream", "v", "type", "actor", "correlation", "reason", "data"):
            t.add_column(name)
        for col, w in zip(t.columns, self.WIDTHS.values()):
            if w:
                col.min_width = col.max_width = w
            col.no_wrap = True
            col.overflow = "ellipsis"
        for r in self.rows:
            actor = r["actor"] or {}
            t.add_row(str(r["global_position"]), r["recorded_at"].isoformat(timespec="seconds"),
                      r["stream_name"], str(r["stream_version"]), r["event_type"],
                      f"{actor.get('kind', '')}:{actor.get('id', '')}",
                      (r["correlation_id"] or "")[:12], r["reason"] or "",
                      json.dumps(r["data"], ensure_ascii=False, default=str))
        self.console.print(t, markup=False, highlight=False)
        self.rows.clear()
        self.first = False


def run_query(args, command: str, filters: dict) -> int:
    from services.cli import CommandFailed
    from services.config import Settings

    fmt = "jsonl" if args.json else args.format
    if args.reveal and not args.auditor:
        raise CommandFailed("--reveal needs --auditor NAME (every reveal is recorded)", code=2)
    settings = Settings()
    sql, params = build_query(after=args.after, limit=args.limit, since=args.since,
                              until=args.until, **filters)
    revealer = store = key_conn = None
    if args.reveal:
        from services.cli._common import open_store_checked
        store = open_store_checked(max_size=1)
        revealer = Revealer(store)
        recorded = {k: v for k, v in {**filters, "since": args.since, "until": args.until,
                                      "after": args.after, "limit": args.limit}.items()
                    if v not in (None, [], 0)}
        revealer.record(args.auditor, command,
                        json.loads(json.dumps(recorded, default=str)), args.reason)
    count = 0
    try:
        if store is not None:
            key_conn = store.pool.getconn()
        table = TableWriter() if fmt == "table" else None
        writer = csv.writer(sys.stdout) if fmt == "csv" else None
        if writer:
            writer.writerow(COLUMNS)
        for row in iter_events(settings.auditor_database_url, sql, params):
            row["data"] = revealer.open(key_conn, row["data"]) if revealer else mask(row["data"])
            count += 1
            if table:
                table.write(row)
            elif writer:
                p = _plain(row)
                writer.writerow([json.dumps(p[c], ensure_ascii=False, default=str)
                                 if isinstance(p[c], (dict, list)) else p[c] for c in COLUMNS])
            else:
                sys.stdout.write(json.dumps(_plain(row), ensure_ascii=False, default=str) + "\n")
        if table:
            table.flush()
            print(f"{count} events", file=sys.stderr)
    finally:
        if key_conn is not None:
            key_conn.rollback()
            store.pool.putconn(key_conn)
        if store is not None:
            store.pool.close()
    return 0


def cmd_events(args) -> int:
    filters = {"customer": args.customer, "stream": args.stream, "categories": args.category,
               "event_types": args.event_type, "actor": args.actor,
               "correlation_id": args.correlation_id}
    return run_query(args, "events", filters)


def cmd_journey(args) -> int:
    return run_query(args, "journey", {"customer": args.customer})
