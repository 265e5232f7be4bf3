"""Event store benchmark (issue 2, "Benchmark"): our store against raw PostgreSQL and the
`eventsourcing` library, in one run, on the same PostgreSQL server.

Fairness on a noisy 2-core machine:
- every contender runs for the same fixed time once per round, the rounds alternate the
  contenders (the order rotates each round), and every target ratio is the median of the
  ratios measured *within* each round — a slow spell of the machine hits both sides of a
  ratio, not one;
- each contender writes into a fresh database of its own (`services.db.setup`), dropped at
  the end; every writer has its own stream / aggregate, so no write ever conflicts;
- every transaction carries the same event: same payload, same metadata, a fresh UUID.

Contenders (W = concurrent writer threads, one event per transaction unless said):
- raw INSERT: one row per transaction into a plain table with the columns of
  eventstore.events (uuid, text, bigint, text, int, jsonb, jsonb, timestamptz) and a primary
  key; each writer holds its own connection — the baseline the targets are relative to;
- our store: `EventStore.append(stream, [event], expected_version, metadata)`; W=1, W=4,
  and batches of 100 events per append (W=1);
- eventsourcing 9.5 (`eventsourcing.postgres`): `app.save(aggregate)` with one new event per
  save (W=1, W=4) — its optimistic concurrency is the primary key on (id, version);
- reads: our `read_all` in pages of 1000, decoded to `RecordedEvent`s, after sealing; the
  peer's `notification_log.select` in pages of 1000 decoded by its mapper to domain events.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from psycopg import waiting
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

from contracts.events import REGISTRY, Actor, Metadata, NewEvent
from services import db
from services.config import Settings
from services.eventstore import open_store

EVENT_TYPE = "bench_transfer_limit_changed"
if REGISTRY.get(EVENT_TYPE) is None:
    REGISTRY.register(EVENT_TYPE, "bench", description="Benchmark event (no personal fields).")

# A realistic small domain event (~150 bytes of JSON) and the metadata every service attaches.
PAYLOAD = {"customer_number": "0123456789", "channel": "web", "limit_yen": 1_000_000,
           "previous_limit_yen": 500_000, "note": "振込限度額の変更"}
METADATA = Metadata(actor=Actor("customer", "0123456789"), correlation_id=str(uuid.uuid4()),
                    service="identity", client_address="203.0.113.7")
BATCH = 100
PAGE = 1000

RAW_TABLE = """
CREATE TABLE IF NOT EXISTS public.raw_events (
    event_id       uuid        PRIMARY KEY,
    stream_name    text        NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
GRANT SELECT, INSERT ON public.raw_events TO tsunagi_service;
"""
RAW_INSERT = ("INSERT INTO public.raw_events (event_id, stream_name, stream_version, event_type, "
              "schema_version, data, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s)")

# Wide enough for the tables when the output goes to a file or a CI log.
console = Console(highlight=False, width=None if os.isatty(1) else 120)


# -- the peer: eventsourcing ---------------------------------------------------------------

def _peer_classes():
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class TransferLimit(Aggregate):
        @event("Opened")
        def __init__(self, customer_number: str):
            self.customer_number = customer_number

        @event("Changed")
        def change(self, customer_number, channel, limit_yen, previous_limit_yen, note):
            self.limit_yen = limit_yen

    class BenchApp(Application):
        log_section_size = PAGE   # lets notification_log.select return pages of PAGE

    return TransferLimit, BenchApp


# -- measuring -------------------------------------------------------------------------------

Op = Callable[[], int]   # one transaction; returns the number of events it wrote or read


def drive(make_ops: Callable[[int], list[Op]], writers: int, seconds: float) -> float:
    """Run ``writers`` threads for ``seconds``, each repeating its op; events per second.

    The ops (connections, streams, aggregates) are made before the clock starts.
    """
    ops = make_ops(writers)
    barrier = threading.Barrier(writers + 1)
    counts = [0] * writers
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * writers
    errors: list[BaseException] = []
    deadline = [0.0]

    def loop(i: int) -> None:
        op = ops[i]
        barrier.wait()
        start = time.perf_counter()
        n = 0
        try:
            while time.perf_counter() < deadline[0]:
                n += op()
        except BaseException as exc:  # reported after the join, not lost in a thread
            errors.append(exc)
        counts[i] = n
        spans[i] = (start, time.perf_counter())

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(writers)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    barrier.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
    return sum(counts) / elapsed


@dataclass
class Contender:
    key: str
    label: str
    writers: int
    unit: str
    run: Callable[[float], float]
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def run_rounds(contenders: list[Contender], rounds: int, seconds: float, title: str) -> None:
    for r in range(rounds):
        shift = r % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        line = []
        for c in order:
            c.rates.append(c.run(seconds))
            line.append(f"{c.key} {c.rates[-1]:,.0f}")
        console.print(f"[dim]{title} round {r + 1}/{rounds}: {' · '.join(line)}[/dim]")


def paired_ratio(a: Contender, b: Contender) -> tuple[float, float, float]:
    """Median, min and max over rounds of a/b measured in the same round."""
    ratios = [x / y for x, y in zip(a.rates, b.rates)]
    return statistics.median(ratios), min(ratios), max(ratios)


# -- the benchmark -------------------------------------------------------------------------

class Bench:
    """Owns the databases, stores, peer applications and connections of one run."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.created: list[str] = []
        self.stores: list = []
        self.apps: list = []
        self.Aggregate, self.App = _peer_classes()

    # set-up / tear-down

    def database(self, label: str) -> str:
        """A fresh database of its own (schema applied by services.db.setup)."""
        name = f"tsunagi_bench_{label}_{self.tag}"
        self.created.append(name)
        db.setup(self.settings, name, log=lambda *_: None)
        return name

    def teardown(self) -> None:
        for store in self.stores:
            store.pool.close()
        for app in self.apps:
            app.close()
        for name in self.created:
            db.drop_database(self.settings, name)

    def open_store(self, label: str, max_size: int):
        url = db.url_for(self.settings.database_url, self.database(label))
        store = open_store(self.settings, database_url=url, max_size=max_size)
        self.stores.append(store)
        return store

    def open_peer(self, label: str):
        admin = conninfo_to_dict(self.settings.admin_database_url)
        # The peer's own documented set-up: its PostgreSQL persistence module configured by
        # environment variables; it creates its table in `public`, hence the owner role.
        app = self.App(env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.database(label),
            "POSTGRES_HOST": admin.get("host", "127.0.0.1"),
            "POSTGRES_PORT": str(admin.get("port", "5432")),
            "POSTGRES_USER": admin.get("user", "postgres"),
            "POSTGRES_PASSWORD": admin.get("password", ""),
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "4",
        })
        self.apps.append(app)
        return app

    # writers: each returns run(seconds) -> events/s

    def raw(self, writers: int) -> Callable[[float], float]:
        name = self.database(f"raw{writers}")
        with psycopg.connect(db.admin_url_for(self.settings, name), autocommit=True) as c:
            c.execute(RAW_TABLE)
        url = db.url_for(self.settings.database_url, name)
        meta = Jsonb(METADATA.as_dict())

        def run(seconds: float) -> float:
            conns: list[psycopg.Connection] = []

            def make_ops(n: int) -> list[Op]:
                def make() -> Op:
                    conn = psycopg.connect(url, autocommit=True)
                    conns.append(conn)
                    stream, version = f"bench-{uuid.uuid4().hex}", [0]

                    def op() -> int:
                        version[0] += 1
                        conn.execute(RAW_INSERT, (uuid.uuid4(), stream, version[0], EVENT_TYPE, 1,
                                                  Jsonb(PAYLOAD), meta))
                        return 1
                    return op
                return [make() for _ in range(n)]
            try:
                return drive(make_ops, writers, seconds)
            finally:
                for c in conns:
                    c.close()
        return run

    def ours(self, writers: int, batch: int = 1, store=None) -> Callable[[float], float]:
        label = f"store{writers}" if batch == 1 else f"store_batch{batch}"
        store = store or self.open_store(label, max_size=writers + 2)

        def make_ops(n: int) -> list[Op]:
            def make() -> Op:
                stream, version = f"bench-{uuid.uuid4().hex}", [0]

                def op() -> int:
                    events = [NewEvent(EVENT_TYPE, PAYLOAD) for _ in range(batch)]
                    version[0] = store.append(stream, events, version[0], METADATA)
                    return batch
                return op
            return [make() for _ in range(n)]
        run = lambda seconds: drive(make_ops, writers, seconds)  # noqa: E731
        run.store = store
        return run

    def peer(self, writers: int) -> Callable[[float], float]:
        app, Agg = self.open_peer(f"peer{writers}"), self.Aggregate

        def make_ops(n: int) -> list[Op]:
            def make() -> Op:
                agg = Agg(PAYLOAD["customer_number"])
                app.save(agg)          # the aggregate exists before the clock starts

                def op() -> int:
                    agg.change(**PAYLOAD)
                    app.save(agg)
                    return 1
                return op
            return [make() for _ in range(n)]
        run = lambda seconds: drive(make_ops, writers, seconds)  # noqa: E731
        run.app = app
        return run

    # readers

    def fill_and_seal(self, store, app, want: int) -> tuple[int, float]:
        """Top both logs up to ``want`` events, then seal ours. Returns (sealed, seal rate/s)."""
        with store.pool.connection() as c:
            have = c.execute("SELECT count(*) FROM eventstore.events").fetchone()[0]
        stream, version = f"bench-{uuid.uuid4().hex}", 0
        while have < want:
            version = store.append(stream, [NewEvent(EVENT_TYPE, PAYLOAD) for _ in range(BATCH)],
                                   version, METADATA)
            have += BATCH
        peer_have = app.recorder.max_notification_id() or 0
        agg = self.Aggregate(PAYLOAD["customer_number"])
        while peer_have < want:
            for _ in range(BATCH):
                agg.change(**PAYLOAD)
            app.save(agg)
            peer_have += BATCH
        # Seal everything written (in production the relay's sealer does this continuously).
        started = time.perf_counter()
        sealed = store.seal_all(timeout=600)
        return sealed, sealed / (time.perf_counter() - started)

    @staticmethod
    def read_ours(store, events: int) -> Callable[[float], float]:
        def run(_seconds: float) -> float:
            started, after, n = time.perf_counter(), 0, 0
            while n < events:
                page = store.read_all(after, min(PAGE, events - n))
                if not page:
                    raise RuntimeError(f"log ended after {n} events")
                n += len(page)
                after = page[-1].global_position
            return n / (time.perf_counter() - started)
        return run

    @staticmethod
    def read_peer(app, events: int) -> Callable[[float], float]:
        def run(_seconds: float) -> float:
            started, start, n = time.perf_counter(), 1, 0
            decode = app.mapper.to_domain_event
            while n < events:
                page = app.notification_log.select(start, min(PAGE, events - n))
                if not page:
                    raise RuntimeError(f"notification log ended after {n} events")
                decoded = [decode(item) for item in page]
                n += len(decoded)
                start = page[-1].id + 1
            return n / (time.perf_counter() - started)
        return run


def compare_wait_functions(stores: dict[int, object], bench: Bench, rounds: int,
                           seconds: float) -> list[Contender]:
    """Our store with psycopg's C wait function against `wait_selector`, alternated."""
    def with_wait(func, writers):
        inner = bench.ours(writers, store=stores[writers])

        def run(s: float) -> float:
            saved = waiting.wait
            waiting.wait = func
            try:
                return inner(s)
            finally:
                waiting.wait = saved
        return run
    cs = [Contender(f"{name}/{w}", f"our append, {name}", w, "events/s", with_wait(fn, w))
          for w in (1, 4) for name, fn in (("wait_c", waiting.wait_c),
                                            ("wait_selector", waiting.wait_selector))]
    run_rounds(cs, rounds, seconds, "wait functions")
    return cs


def report(cs: dict[str, Contender], seal: tuple[int, float], read_events: int,
           waits: list[Contender], params: str) -> list[tuple[str, bool]]:
    figures = Table(title=f"Event store benchmark — {params}", title_justify="left")
    for col, just in (("contender", "left"), ("writers", "right"), ("median", "right"),
                      ("unit", "left"), ("min – max over rounds", "right"),
                      ("× raw 1 writer", "right")):
        figures.add_column(col, justify=just)
    raw1 = cs["raw1"]
    shown = ("raw1", "raw4", "ours1", "ours4", "batch", "peer1", "peer4", "read_ours", "read_peer")
    for c in (cs[k] for k in shown):
        ratio = (paired_ratio(c, raw1)[0] if c.unit == "events/s" and "read" not in c.key
                 else None)
        figures.add_row(c.label, str(c.writers), f"{c.median:,.0f}", c.unit,
                        f"{min(c.rates):,.0f} – {max(c.rates):,.0f}",
                        f"{ratio:.2f}×" if ratio is not None else "")
    figures.add_row("seal (sealer, info)", "1", f"{seal[1]:,.0f}", "events/s",
                    f"{seal[0]:,} events sealed", "")
    console.print(figures)

    targets = [
        ("1 writer ≥ 0.8× raw single-row INSERT", "ours1", "raw1", 0.8),
        ("1 writer ≥ 3× eventsourcing save rate", "ours1", "peer1", 3.0),
        ("4 writers ≥ 1.5× raw 1 writer", "ours4", "raw1", 1.5),
        ("batches of 100 ≥ 5× raw 1 writer (events/s)", "batch", "raw1", 5.0),
        (f"global read ≥ 1.1× eventsourcing decoded read ({read_events:,} events, "
         f"pages of {PAGE})", "read_ours", "read_peer", 1.1),
    ]
    table = Table(title="Targets (ratio = median of the per-round ratios)", title_justify="left")
    for col, just in (("target", "left"), ("ratio", "right"), ("min – max", "right"),
                      ("needed", "right"), ("", "left")):
        table.add_column(col, justify=just)
    outcome = []
    for text, a, b, need in targets:
        med, lo, hi = paired_ratio(cs[a], cs[b])
        ok = med >= need
        outcome.append((text, ok))
        table.add_row(text, f"{med:.2f}×", f"{lo:.2f} – {hi:.2f}", f"{need:g}×",
                      "[bold green]PASS[/]" if ok else "[bold red]MISS[/]")
    console.print(table)

    context = Table(title="Context (no targets)", title_justify="left")
    context.add_column("comparison")
    context.add_column("ratio", justify="right")
    for text, a, b in (("eventsourcing 4 writers / its 1 writer", "peer4", "peer1"),
                       ("raw 4 writers / raw 1 writer", "raw4", "raw1"),
                       ("our 4 writers / our 1 writer", "ours4", "ours1"),
                       ("our 4 writers / raw 4 writers", "ours4", "raw4"),
                       ("our 4 writers / eventsourcing 4 writers", "ours4", "peer4")):
        context.add_row(text, f"{paired_ratio(cs[a], cs[b])[0]:.2f}×")
    if waits:
        by = {c.key: c for c in waits}
        for w in (1, 4):
            context.add_row(f"our append, {w} writer(s): wait_c / wait_selector "
                            f"({by[f'wait_c/{w}'].median:,.0f} vs "
                            f"{by[f'wait_selector/{w}'].median:,.0f} events/s)",
                            f"{paired_ratio(by[f'wait_c/{w}'], by[f'wait_selector/{w}'])[0]:.2f}×")
    console.print(context)
    return outcome


def main(args) -> list[tuple[str, bool]]:
    quick = bool(getattr(args, "quick", False))
    # Many short rounds pair the contenders more tightly in time than a few long ones.
    rounds, seconds = (4, 0.5) if quick else (12, 1.0)
    read_events = 5_000 if quick else 20_000
    read_rounds = 3 if quick else 9
    params = (f"{rounds} rounds × {seconds:g} s per contender, "
              f"psycopg wait function {os.environ.get('PSYCOPG_WAIT_FUNC', 'default')}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    bench = Bench(Settings())
    try:
        console.print(f"[bold]set-up[/bold]: one fresh database per contender")
        ours1, ours4 = bench.ours(1), bench.ours(4)
        peer1 = bench.peer(1)
        # The order rotates every round; neighbours stay neighbours, so each target's pair
        # (ours1/raw1, ours1/peer1, ours4/raw1, batch/raw1) runs close together in time.
        writers = [
            Contender("peer1", "eventsourcing save, 1 event per transaction", 1, "events/s",
                      peer1),
            Contender("ours1", "our append, 1 event per transaction", 1, "events/s", ours1),
            Contender("raw1", "raw INSERT, 1 row per transaction", 1, "events/s", bench.raw(1)),
            Contender("ours4", "our append, 1 event per transaction", 4, "events/s", ours4),
            Contender("batch", f"our append, {BATCH} events per transaction", 1, "events/s",
                      bench.ours(1, BATCH)),
            Contender("raw4", "raw INSERT, 1 row per transaction", 4, "events/s", bench.raw(4)),
            Contender("peer4", "eventsourcing save, 1 event per transaction", 4, "events/s",
                      bench.peer(4)),
        ]
        # Warm-up (not counted): connections opened, statements prepared, caches filled.
        for c in writers:
            c.run(0.3)
        console.print(f"[bold]writing[/bold]: {params}")
        run_rounds(writers, rounds, seconds, "write")
        # Reads use the 1-writer databases, topped up to the same number of events.
        seal = bench.fill_and_seal(ours1.store, peer1.app, read_events)
        readers = [
            Contender("read_ours", f"our read_all → RecordedEvent (pages of {PAGE})", 1,
                      "events/s", bench.read_ours(ours1.store, read_events)),
            Contender("read_peer", f"eventsourcing notification log → domain events "
                      f"(pages of {PAGE})", 1, "events/s", bench.read_peer(peer1.app, read_events)),
        ]
        for c in readers:
            c.run(0)
        run_rounds(readers, read_rounds, 0, f"read {read_events:,}")
        waits = ([] if quick else
                 compare_wait_functions({1: ours1.store, 4: ours4.store}, bench, 3, 1.5))
        cs = {c.key: c for c in writers + readers}
        outcome = report(cs, seal, read_events, waits, params)
        load = os.getloadavg()[0]
        if load > (os.cpu_count() or 1):
            console.print(f"[yellow]load average {load:.1f} at the end: other work shared the "
                          f"machine; the ratios (paired per round) hold better than the rates[/]")
        return outcome
    finally:
        bench.teardown()
