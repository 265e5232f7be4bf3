"""`tsunagi replay [PROJECTION…|--all] [--check]`: rebuild read models from the log (R-PLT-4).

For each projection, in ONE transaction (as the database owner, ADMIN_DATABASE_URL, since it
renames tables): every table is renamed aside, an empty copy (columns, constraints, indexes,
grants) takes its name, the projection's own rebuild function (services/projections.py)
replays the log into the copy, and the old table is dropped; commit switches readers over in
one step. Services that touch the tables meanwhile wait on the rename's lock instead of seeing
a half-built model; an event they append meanwhile commits after the switch and projects into
the new table, so nothing is lost. `--check` does the same, compares the rebuilt tables with
the live ones row by row (clock bookkeeping columns ignored), prints every difference and
rolls back: nothing switches. Exit 0: done / no difference; 1: differences found.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from psycopg import sql

from services import crypto
from services.cli._common import add_debug_flag, add_json_flag, emit_json
from services.eventstore.keyring import KeyRing

OLD_SUFFIX = "__replay_old"


def register(subparsers) -> None:
    from services.projections import PROJECTIONS
    p = subparsers.add_parser(
        "replay", help="rebuild read models from the event log (--check: compare only)",
        description="Rebuild read models from the event log into fresh tables and switch over "
                    "atomically. Projections: " + ", ".join(PROJECTIONS) + ". --check rebuilds "
                    "into a scratch copy, reports every difference from the live read model "
                    "and switches nothing (exit 1 when any). Needs ADMIN_DATABASE_URL.")
    p.add_argument("projections", nargs="*", metavar="PROJECTION")
    p.add_argument("--all", action="store_true", help="every projection")
    p.add_argument("--check", action="store_true", help="compare with the live read model only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    add_debug_flag(p)
    p.set_defaults(func=cmd_replay)


class _BoundStore:
    """The store, with transaction() = a savepoint of the replay's own transaction."""

    def __init__(self, store, conn):
        self._store, self._conn = store, conn

    def __getattr__(self, name):
        return getattr(self._store, name)

    @contextmanager
    def transaction(self):
        with self._conn.transaction():
            yield self._conn

    def seal_all(self, *args, **kw) -> int:   # sealed once before the replay began
        return 0

    # Pages of at least PAGE events: every rebuild loops "read after the last position until
    # a page comes back empty", so a larger page changes nothing but the number of queries.
    def read_all(self, after_position: int = 0, limit: int = 1000, **kw):
        return self._store.read_all(after_position, max(limit, PAGE), **kw)

    def read_category(self, category: str, after_position: int = 0, limit: int = 1000, **kw):
        return self._store.read_all(after_position, max(limit, PAGE), category=category, **kw)


PAGE = 10_000


class _ReplayKeyRing(KeyRing):
    """The store's key ring for one replay: every subject's wrapped data key is read in one
    query up front and unwrapped when first needed, instead of a query per subject (and again
    after the service's 30 s cache time, which a long replay outlives). A subject whose key
    appears later (a customer created during the replay) is looked up as usual. A key shredded
    during the replay is forgotten when the next projection takes its tables
    (``forget_shredded``); within one projection's rebuild the tables are locked, so the
    shred's handler applies to the switched-in table after it."""

    def __init__(self, master, conn):
        super().__init__(master)
        self._wrapped = {subject: (kid, bytes(wrapped)) for subject, kid, wrapped in conn.execute(
            "SELECT subject, master_kid, wrapped_key FROM eventstore.subject_keys")}
        self._opened: dict[str, bytes] = {}

    def forget_shredded(self, conn) -> int:
        """Drop every subject whose key was destroyed since the keys were read. Called once a
        projection holds its tables: a customer shredded while earlier projections were
        rebuilt would otherwise get their personal fields written back into this one's
        tables (the service's shred handler has already cleaned the live ones)."""
        live = {subject for (subject,) in conn.execute("SELECT subject FROM eventstore.subject_keys")}
        gone = [subject for subject in self._wrapped if subject not in live]
        for subject in gone:
            del self._wrapped[subject]
            self._opened.pop(subject, None)
        return len(gone)

    def data_key(self, conn, subject: str, *, create: bool) -> bytes | None:
        key = self._opened.get(subject)
        if key is not None:
            return key
        wrapped = self._wrapped.get(subject)
        if wrapped is None:
            return super().data_key(conn, subject, create=create)
        key = self._opened[subject] = self.master.unwrap(subject, crypto.WrappedKey(*wrapped))
        return key


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return schema, name


def _swap_in_empty_copy(conn, table: str) -> list[tuple[str, str]]:
    """Rename ``table`` aside and create an empty copy under its name. Returns the index
    renames to apply after the old table is dropped, so the copy keeps the original names."""
    schema, name = _split(table)
    old = name + OLD_SUFFIX
    indexes = conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass", (table,)).fetchall()
    grants = conn.execute(
        "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = %s AND table_name = %s AND grantee <> current_user",
        (schema, name)).fetchall()
    conn.execute(sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
        sql.Identifier(schema), sql.Identifier(name), sql.Identifier(old)))
    conn.execute(sql.SQL("CREATE TABLE {}.{} (LIKE {}.{} INCLUDING ALL)").format(
        sql.Identifier(schema), sql.Identifier(name), sql.Identifier(schema), sql.Identifier(old)))
    for grantee, privilege in grants:
        conn.execute(sql.SQL("GRANT {} ON {}.{} TO {}").format(
            sql.SQL(privilege), sql.Identifier(schema), sql.Identifier(name), sql.Identifier(grantee)))
    new_indexes = conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass", (table,)).fetchall()

    def shape(index_name, definition):
        return definition.replace(f"INDEX {index_name} ON", "INDEX ON", 1)

    by_shape = {shape(n, d): n for n, d in indexes}
    renames = []
    for n, d in new_indexes:
        original = by_shape.get(shape(n, d))
        if original and original != n:
            renames.append((n, original))
    return renames


def _differences(conn, table: str, ignore: tuple[str, ...], limit: int = 1000) -> list[dict]:
    schema, name = _split(table)
    q = sql.SQL(
        "(SELECT 'only_in_rebuild' AS side, to_jsonb(n) - %(ignore)s::text[] AS row FROM {s}.{n} n "
        " EXCEPT SELECT 'only_in_rebuild', to_jsonb(o) - %(ignore)s::text[] FROM {s}.{o} o) "
        "UNION ALL "
        "(SELECT 'only_in_live', to_jsonb(o) - %(ignore)s::text[] FROM {s}.{o} o "
        " EXCEPT SELECT 'only_in_live', to_jsonb(n) - %(ignore)s::text[] FROM {s}.{n} n) "
        "LIMIT %(limit)s").format(s=sql.Identifier(schema), n=sql.Identifier(name),
                                  o=sql.Identifier(name + OLD_SUFFIX))
    return [{"table": table, "side": side, "row": row}
            for side, row in conn.execute(q, {"ignore": list(ignore), "limit": limit})]


def _total_events(conn, categories) -> int:
    return conn.execute("SELECT count(*) FROM eventstore.events WHERE category = ANY(%s)",
                        (list(categories),)).fetchone()[0]


def _lock_and_seal(conn, store, tables) -> None:
    """Take the tables from the services first, then seal what they committed until then.

    Once the lock is held no service changes the live tables, and every event whose
    projection they hold is committed; sealing it now puts it into the log the rebuild reads,
    so `--check` compares both sides at one point of the log. LOCK assigns no transaction id,
    so this transaction does not hold the sealing horizon back. A service transaction that
    appended and now waits for the lock does: events committed behind it stay unsealed (and
    unprojected in the rebuild) — sealing stops at what is sealable instead of waiting for it.
    """
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
        sql.SQL(", ").join(sql.Identifier(*_split(t)) for t in tables)))
    deadline = time.monotonic() + 5
    while True:
        n = store.seal()
        if n > 0:
            continue
        if n == 0 or time.monotonic() > deadline:
            return
        time.sleep(0.01)            # -1: the relay's sealer is at it; let it finish


def replay_one(store, admin_url: str, projection, *, check: bool, progress=None) -> dict:
    import psycopg
    with psycopg.connect(admin_url) as conn:
        started = time.monotonic()
        conn.execute("SET lock_timeout = '30s'")   # a stuck service fails the replay, not the bank
        _lock_and_seal(conn, store, projection.tables)
        if isinstance(store.keyring, _ReplayKeyRing):
            store.keyring.forget_shredded(conn)
        renames = {t: _swap_in_empty_copy(conn, t) for t in projection.tables}
        # No pipeline mode here: a rebuild streams its categories through one server-side
        # cursor (services/eventstore/bulk_read.py), folds them in memory and writes each
        # table with COPY, neither of which pipeline mode allows; there are no per-event
        # statements left whose round trips a pipeline would hide.
        seen = projection.run(_BoundStore(store, conn), progress=progress)
        result = {"projection": projection.name, "events": seen,
                  "seconds": round(time.monotonic() - started, 3), "switched": False}
        if check:
            diffs = []
            for t in projection.tables:
                diffs += _differences(conn, t, projection.ignore_columns)
            result["differences"] = diffs
            conn.rollback()
            return result
        for t in projection.tables:
            schema, name = _split(t)
            conn.execute(sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(schema),
                                                            sql.Identifier(name + OLD_SUFFIX)))
            for new, original in renames[t]:
                conn.execute(sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                    sql.Identifier(schema), sql.Identifier(new), sql.Identifier(original)))
        conn.commit()
        result["switched"] = True
        return result


def cmd_replay(args) -> int:
    from services import db
    from services.cli import CommandFailed
    from services.cli._common import open_store_checked
    from services.config import Settings
    from services.projections import PROJECTIONS

    if args.all == bool(args.projections):
        raise CommandFailed("name the projections to replay or give --all (not both); known: "
                            + ", ".join(PROJECTIONS), code=2)
    unknown = [p for p in args.projections if p not in PROJECTIONS]
    if unknown:
        raise CommandFailed(f"unknown projection(s) {', '.join(unknown)}; known: "
                            + ", ".join(PROJECTIONS), code=2)
    chosen = [PROJECTIONS[n] for n in (args.projections or PROJECTIONS)]
    settings = Settings()
    admin_url = db.admin_url_for(settings, db.dbname_of(settings.database_url))
    store = open_store_checked(admin_url, max_size=2)
    started = time.monotonic()
    try:
        store.seal_all()
        with store.pool.connection() as c:
            store.keyring = _ReplayKeyRing(store.keyring.master, c)
        show = not (args.json or args.no_progress) and sys.stderr.isatty()
        results = _run_all(store, admin_url, chosen, args.check, show)
        log_events = store.head()[0]
    finally:
        store.pool.close()
    elapsed = round(time.monotonic() - started, 3)
    differences = sum(len(r.get("differences", [])) for r in results)
    if args.json:
        # events: what the projections accounted for (a category two projections read counts
        # twice); log_events: the sealed log's length once the replay ended, for a rate per
        # event of the log.
        emit_json({"ok": differences == 0, "check": args.check, "projections": results,
                   "events": sum(r["events"] for r in results), "log_events": log_events,
                   "seconds": elapsed})
    else:
        for r in results:
            rate = r["events"] / r["seconds"] if r["seconds"] else 0
            verb = "checked" if args.check else "rebuilt and switched"
            print(f"{r['projection']}: {verb}, {r['events']} events in {r['seconds']:.2f} s "
                  f"({rate:,.0f} events/s)")
            for d in r.get("differences", []):
                print(f"  DIFF {d['table']} {d['side']}: {d['row']}")
        if len(results) > 1:
            total = sum(r["events"] for r in results)
            print(f"all: {total} events in {elapsed:.2f} s ({total / elapsed if elapsed else 0:,.0f} "
                  "events/s)")
        if args.check:
            print("no differences" if differences == 0 else f"{differences} difference(s)")
    return 0 if differences == 0 else 1


def _run_all(store, admin_url, chosen, check: bool, show: bool) -> list[dict]:
    """Each projection in its own transaction, one after the other, under one progress bar."""
    if not show:
        return [replay_one(store, admin_url, p, check=check) for p in chosen]
    import psycopg
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                               TextColumn, TimeRemainingColumn)

    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TaskProgressColumn(), TextColumn("{task.fields[rate]:>10} ev/s"),
                  TimeRemainingColumn(), transient=True) as bar:
        for projection in chosen:
            with psycopg.connect(admin_url) as c:
                total = _total_events(c, projection.categories)
            task = bar.add_task(projection.name, total=total or None, rate="-")
            started = time.monotonic()

            def progress(seen: int, task=task, started=started) -> None:
                elapsed = time.monotonic() - started
                bar.update(task, completed=seen, rate=f"{seen / elapsed:,.0f}" if elapsed else "-")

            results.append(replay_one(store, admin_url, projection, check=check, progress=progress))
    return results
