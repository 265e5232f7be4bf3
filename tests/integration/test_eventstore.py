"""R-PLT-2: the event store's guarantees on a real PostgreSQL (issue 2, DESIGN.md "Event store
guarantees").

Optimistic concurrency, a gap-free global reader under concurrent writers (and the trap a naive
reader falls into), append-only enforcement, tamper evidence of the hash chain, and
crypto-shredding of personal fields.
"""
from __future__ import annotations

import json
import random
import uuid

import eventlet
import psycopg
import psycopg.types.json
import pytest

from contracts.errors import ConcurrencyConflict
from contracts.events import Actor, Metadata, NewEvent, Registry, register
from services import crypto, db
from services.eventstore import ANY, NO_STREAM, EventStore
from services.eventstore.keyring import KeyRing
from tests.conftest import unique

META = Metadata(actor=Actor("system", "test"), service="test")


def ev(n: int = 0, **data) -> NewEvent:
    return NewEvent("test_happened", {"n": n, **data})


def admin_conn(settings, database_url: str) -> psycopg.Connection:
    """A superuser connection to the database behind ``database_url`` (for tampering)."""
    return psycopg.connect(db.admin_url_for(settings, db.dbname_of(database_url)), autocommit=True)


# -- optimistic concurrency -------------------------------------------------------------------

def _race(store: EventStore, stream: str, expected, hold: float) -> list:
    """Two writers, each on its own connection and transaction, append to ``stream`` with the
    same expected version at the same moment. Returns what each got (a version or the error)."""
    go = eventlet.event.Event()
    results: list = [None, None]

    def writer(i: int) -> None:
        go.wait()
        try:
            with store.transaction() as conn:
                v = store.append(stream, [ev(i, writer=i)], expected, META, conn=conn)
                eventlet.sleep(hold)  # keep the transaction open while the other one runs
            results[i] = v
        except ConcurrencyConflict as exc:
            results[i] = exc

    threads = [eventlet.spawn(writer, i) for i in (0, 1)]
    eventlet.sleep(0)
    go.send()
    for t in threads:
        t.wait()
    return results


@pytest.mark.parametrize("hold", [0.0, 0.05])
def test_two_concurrent_writers_exactly_one_wins(store, hold):
    """Two writers with the same expected version: one appends, the other gets
    ConcurrencyConflict (409 concurrent_update) and writes nothing."""
    for round_ in range(10):
        stream = f"race-{unique()}"
        expected = NO_STREAM
        if round_ % 2:
            expected = store.append(stream, [ev(-1)], NO_STREAM, META)
        results = _race(store, stream, expected, hold)
        winners = [r for r in results if isinstance(r, int)]
        losers = [r for r in results if isinstance(r, ConcurrencyConflict)]
        assert len(winners) == 1 and len(losers) == 1, results
        assert winners[0] == expected + 1
        assert losers[0].status == 409 and losers[0].code == "concurrent_update"
        events = store.read_stream(stream)
        assert [e.stream_version for e in events] == list(range(1, expected + 2))
        winner = results.index(winners[0])
        assert events[-1].data["writer"] == winner


def test_wrong_expected_version_inserts_nothing(store):
    stream = f"acct-{unique()}"
    assert store.append(stream, [ev(1), ev(2)], NO_STREAM, META) == 2
    for wrong in (5, 3, 1, NO_STREAM):   # too high, one too high, too low, "must not exist"
        with pytest.raises(ConcurrencyConflict):
            store.append(stream, [ev(99)], wrong, META)
    assert [e.data["n"] for e in store.read_stream(stream)] == [1, 2]
    assert store.stream_version(stream) == 2
    assert store.append(stream, [ev(3)], 2, META) == 3
    assert store.append(stream, [ev(4)], ANY, META) == 4


def test_any_appends_never_conflict_with_each_other(store):
    """ANY means "whatever the version": concurrent ANY appends all land, densely numbered."""
    stream = f"anylog-{unique()}"
    pool = eventlet.GreenPool()
    versions = list(pool.imap(lambda i: store.append(stream, [ev(i)], ANY, META), range(12)))
    assert sorted(versions) == list(range(1, 13))
    assert sorted(e.data["n"] for e in store.read_stream(stream)) == list(range(12))


def test_metadata_is_recorded(store):
    stream = f"acct-{unique()}"
    meta = Metadata(actor=Actor("operator", "op-7"), correlation_id="corr-1", causation_id="cause-1",
                    service="identity", client_address="192.0.2.1", reason="本人確認済み")
    store.append(stream, [ev(1)], NO_STREAM, meta)
    (e,) = store.read_stream(stream)
    assert e.metadata == {"actor": {"kind": "operator", "id": "op-7"}, "correlation_id": "corr-1",
                          "causation_id": "cause-1", "service": "identity",
                          "client_address": "192.0.2.1", "reason": "本人確認済み"}


# -- the global log: gap-free under concurrent writers ------------------------------------------

def test_global_reader_misses_nothing_with_four_concurrent_writers(scratch_store):
    """4 writers with random commit delays (some roll back) while a reader tails the log:
    the set read equals the set committed, positions are dense 1..N, nothing twice."""
    store = scratch_store
    committed: set[uuid.UUID] = set()
    rolled_back: set[uuid.UUID] = set()
    done = eventlet.event.Event()
    rng = random.Random(20250105)

    class Rollback(Exception):
        pass

    def writer(w: int) -> None:
        stream = f"writer-{w}"
        for i in range(40):
            e = ev(i, writer=w)
            try:
                with store.transaction() as conn:
                    store.append(stream, [e], ANY, META, conn=conn)
                    eventlet.sleep(rng.uniform(0, 0.008))   # commit late, at random
                    if rng.random() < 0.15:
                        raise Rollback
                committed.add(e.event_id)
            except Rollback:
                rolled_back.add(e.event_id)

    read: list = []

    def tail() -> None:
        last = 0
        while True:
            finished = done.ready()
            store.seal()
            while batch := store.read_all(last, 50):
                read.extend(batch)
                last = batch[-1].global_position
            if finished:
                return
            eventlet.sleep(0.002)

    reader = eventlet.spawn(tail)
    writers = [eventlet.spawn(writer, w) for w in range(4)]
    for t in writers:
        t.wait()
    store.seal_all()
    done.send()
    reader.wait()

    ids = [e.event_id for e in read]
    assert len(ids) == len(set(ids)), "an event was read twice"
    assert set(ids) == committed
    assert not set(ids) & rolled_back
    assert [e.global_position for e in read] == list(range(1, len(committed) + 1))
    assert len(committed) > 100 and rolled_back


def test_naive_identity_cursor_misses_a_late_commit_but_the_store_does_not(scratch_store):
    """The trap our reader exists for: ordering by the identity column ``eventstore.events.id``
    with a ``> last seen`` cursor skips an event whose transaction commits after a later one."""
    store = scratch_store
    naive_last, naive_seen = 0, []
    ours_last, ours_seen = 0, []

    def naive_poll() -> None:
        nonlocal naive_last
        with store.pool.connection() as c:
            for (id_, event_id) in c.execute(
                    "SELECT id, event_id FROM eventstore.events WHERE id > %s ORDER BY id",
                    (naive_last,)).fetchall():
                naive_seen.append(event_id)
                naive_last = id_

    def our_poll() -> None:
        nonlocal ours_last
        store.seal()
        for e in store.read_all(ours_last):
            ours_seen.append(e.event_id)
            ours_last = e.global_position

    early, late = ev(1), ev(2)
    with store.pool.connection() as t1:
        with t1.transaction():
            store.append("trap-a", [early], NO_STREAM, META, conn=t1)  # takes the lower id
            with store.transaction() as t2:
                store.append("trap-b", [late], NO_STREAM, META, conn=t2)
            # `late` is committed, `early` is not yet.
            naive_poll()
            our_poll()
            assert naive_seen == [late.event_id]
            assert ours_seen == []            # not sealed while an older transaction is open
        # now `early` commits, with the lower id
    naive_poll()
    our_poll()
    assert early.event_id not in naive_seen, "the naive reader should have skipped it"
    assert ours_seen == [early.event_id, late.event_id]


def test_open_transaction_in_another_database_does_not_hold_back_sealing(store, scratch_store):
    """Only this database's in-flight transactions bound the horizon: a long transaction of
    another database on the same server (here: the session database) must not stall the log."""
    with store.transaction() as elsewhere:
        elsewhere.execute("SELECT pg_current_xact_id()")      # takes an xid, stays open
        e = ev(1)
        scratch_store.append("elsewhere-1", [e], NO_STREAM, META)
        assert scratch_store.seal() == 1
        assert [x.event_id for x in scratch_store.read_all(0)] == [e.event_id]


def test_read_category_and_seal_idempotent(scratch_store):
    store = scratch_store
    a, b = f"alpha-{unique()}", f"beta-{unique()}"
    store.append(a, [ev(1), ev(2)], NO_STREAM, META)
    store.append(b, [ev(3)], NO_STREAM, META)
    assert store.read_stream(a)[0].global_position is None    # committed, not sealed yet
    assert store.seal_all() == 3
    assert store.seal() == 0
    assert [e.data["n"] for e in store.read_category("alpha")] == [1, 2]
    assert [e.global_position for e in store.read_all()] == [1, 2, 3]
    assert [e.global_position for e in store.read_all(1, limit=1)] == [2]
    assert store.read_stream(a)[0].global_position == 1
    assert store.head()[0] == 3


def test_concurrent_sealers_keep_the_log_dense(scratch_store):
    """Several sealers at once: one works, the others step aside; no position twice or missing."""
    store = scratch_store
    pool = eventlet.GreenPool()
    for w in range(3):
        pool.spawn(lambda w=w: [store.append(f"s-{w}", [ev(i)], ANY, META) for i in range(30)])
        pool.spawn(lambda: [store.seal(max_batch=7) for _ in range(30)])
    pool.waitall()
    store.seal_all()
    assert [e.global_position for e in store.read_all(0, 1000)] == list(range(1, 91))
    assert store.verify().ok


# -- append-only ------------------------------------------------------------------------------

CHANGES = [
    "UPDATE eventstore.events SET event_type = 'forged' WHERE id = (SELECT max(id) FROM eventstore.events)",
    "DELETE FROM eventstore.events WHERE id = (SELECT max(id) FROM eventstore.events)",
    "TRUNCATE eventstore.events CASCADE",
    "UPDATE eventstore.log SET link = '\\x00' WHERE global_position = (SELECT max(global_position) FROM eventstore.log)",
    "DELETE FROM eventstore.log WHERE global_position = (SELECT max(global_position) FROM eventstore.log)",
    "TRUNCATE eventstore.log",
]


@pytest.fixture
def sealed_event(store):
    stream = f"acct-{unique()}"
    store.append(stream, [ev(1)], NO_STREAM, META)
    store.seal_all()
    return stream


@pytest.mark.parametrize("statement", CHANGES)
def test_service_role_cannot_change_the_log(store, sealed_event, statement):
    """UPDATE/DELETE/TRUNCATE refused for tsunagi_service (the DATABASE_URL role)."""
    with store.pool.connection() as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "tsunagi_service"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with c.transaction(force_rollback=True):
                c.execute(statement)
    assert store.read_stream(sealed_event)[0].type == "test_happened"


@pytest.mark.parametrize("statement", CHANGES)
def test_owner_cannot_change_the_log_with_triggers_on(settings, store, sealed_event, statement):
    """Even the superuser who owns the tables is refused by the append-only triggers."""
    with admin_conn(settings, settings.database_url) as c:
        assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        # force_rollback: should the trigger ever be missing, the session log stays intact.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            with c.transaction(force_rollback=True):
                c.execute(statement)
    assert store.read_stream(sealed_event)[0].type == "test_happened"


def test_service_role_cannot_forge_log_rows(store, sealed_event):
    """Only the sealer writes the log: a service cannot insert a position or link itself."""
    with store.pool.connection() as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO eventstore.log (global_position, event_seq, tx_id, link) "
                      "SELECT 999999999, max(id), '1', '\\x00' FROM eventstore.events")


# -- tamper evidence --------------------------------------------------------------------------

@pytest.fixture
def chain(scratch_store, settings, scratch_db):
    """A scratch log of 12 sealed events and a superuser connection to tamper with it."""
    for i in range(12):
        scratch_store.append(f"acct-{i % 3}", [ev(i)], ANY, META)
    scratch_store.seal_all()
    assert scratch_store.verify().ok
    with admin_conn(settings, scratch_db) as admin:
        yield scratch_store, admin


def _seq(admin, pos: int) -> int:
    return admin.execute("SELECT event_seq FROM eventstore.log WHERE global_position = %s",
                         (pos,)).fetchone()[0]


def test_verify_names_a_changed_event(chain):
    store, admin = chain
    result = store.verify()
    assert (result.ok, result.checked, result.head_position) == (True, 12, 12)
    seq = _seq(admin, 5)
    original = admin.execute("SELECT data FROM eventstore.events WHERE id = %s", (seq,)).fetchone()[0]
    with admin.transaction():
        admin.execute("ALTER TABLE eventstore.events DISABLE TRIGGER ALL")
        admin.execute("UPDATE eventstore.events SET data = jsonb_set(data, '{n}', '999') WHERE id = %s",
                      (seq,))
        admin.execute("ALTER TABLE eventstore.events ENABLE TRIGGER ALL")

    result = store.verify()
    assert (result.ok, result.first_broken, result.checked) == (False, 5, 4)
    assert result.reason == "link does not match event"
    assert store.verify(from_position=3).first_broken == 5
    assert store.verify(from_position=6).ok           # the links after it are intact
    assert store.verify(from_position=6).checked == 7

    # Re-linking the forged row only moves the break to the next position.
    admin.execute("SET session_replication_role = replica")
    admin.execute("UPDATE eventstore.log SET link = sha256((SELECT link FROM eventstore.log "
                  "WHERE global_position = 4) || eventstore.canonical(5, e)) "
                  "FROM eventstore.events e WHERE e.id = %s AND global_position = 5", (seq,))
    assert store.verify().first_broken == 6

    admin.execute("UPDATE eventstore.events SET data = %s WHERE id = %s",
                  (psycopg.types.json.Jsonb(original), seq))
    assert store.verify().first_broken == 5


def test_verify_names_changed_metadata(chain):
    store, admin = chain
    admin.execute("SET session_replication_role = replica")
    admin.execute("UPDATE eventstore.events SET metadata = jsonb_set(metadata, '{actor,id}', '\"mallory\"') "
                  "WHERE id = %s", (_seq(admin, 9),))
    assert store.verify().first_broken == 9


def test_verify_names_a_deleted_log_row(chain):
    store, admin = chain
    admin.execute("SET session_replication_role = replica")
    admin.execute("DELETE FROM eventstore.log WHERE global_position = 7")
    result = store.verify()
    assert (result.ok, result.first_broken, result.reason) == (False, 7, "position missing")
    assert store.verify(from_position=8).first_broken == 7   # its predecessor link is gone
    assert store.verify(from_position=2).first_broken == 7


def test_verify_names_a_deleted_event_row(chain):
    store, admin = chain
    admin.execute("SET session_replication_role = replica")   # also switches off the FK check
    admin.execute("DELETE FROM eventstore.events WHERE id = %s", (_seq(admin, 3),))
    result = store.verify()
    assert (result.ok, result.first_broken, result.reason) == (False, 3, "event row missing")


def test_verify_names_a_reordered_log(chain):
    store, admin = chain
    admin.execute("SET session_replication_role = replica")
    a, b = _seq(admin, 10), _seq(admin, 11)
    admin.execute("UPDATE eventstore.log SET event_seq = CASE global_position WHEN 10 THEN %s ELSE %s END "
                  "WHERE global_position IN (10, 11)", (-a, -b))
    admin.execute("UPDATE eventstore.log SET event_seq = CASE global_position WHEN 10 THEN %s ELSE %s END "
                  "WHERE global_position IN (10, 11)", (b, a))
    assert store.verify().first_broken == 10


# -- crypto-shredding -------------------------------------------------------------------------

PERSONAL_TYPE = register(unique("test_person_registered_"), "test_identity",
                         personal_fields=("email", "name"))
EMAIL = "taro.yamada@example.jp"
NAME = "山田太郎"


def _person(email: str = EMAIL, name: str = NAME) -> NewEvent:
    return NewEvent(PERSONAL_TYPE.name, {"email": email, "name": name, "plan": "basic", "phone": None})


def test_personal_fields_encrypted_then_shredded(store):
    """R-PLT-2 with crypto-shredding: e-mail and name are stored encrypted; after the subject's key is destroyed
    they read as redacted, other fields are intact, and the chain still verifies."""
    subject, other = unique("c"), unique("c")
    stream, other_stream = f"person-{subject}", f"person-{other}"
    store.append(stream, [_person()], NO_STREAM, META)
    store.append(other_stream, [_person("hanako@example.jp", "佐藤花子")], NO_STREAM, META)

    with store.pool.connection() as c:
        raw = c.execute("SELECT data::text FROM eventstore.events WHERE stream_name = %s",
                        (stream,)).fetchone()[0]
    assert EMAIL not in raw and NAME not in raw and "taro" not in raw
    assert json.loads(raw)["plan"] == "basic"

    (e,) = store.read_stream(stream)
    assert (e.data["email"], e.data["name"], e.data["plan"], e.data["phone"]) == (EMAIL, NAME, "basic", None)

    store.shred(subject, META)
    store.keyring.forget_cache()
    store.seal_all()
    (e,) = store.read_stream(stream)
    assert e.data == {"email": crypto.REDACTED, "name": crypto.REDACTED, "plan": "basic", "phone": None}
    (o,) = store.read_stream(other_stream)
    assert o.data["email"] == "hanako@example.jp"
    assert [x.type for x in store.read_stream(f"subject-{subject}")] == ["subject_key_shredded"]
    (logged,) = store.read_all(e.global_position - 1, 1)
    assert (logged.event_id, logged.data["email"]) == (e.event_id, crypto.REDACTED)
    assert store.verify().ok


def test_key_of_a_rolled_back_transaction_is_not_reused(store):
    """A subject's first event appended in a transaction that rolls back must not leave its
    (never committed) data key in the cache: later events would be unreadable."""
    subject = unique("c")
    stream = f"person-{subject}"
    with pytest.raises(ZeroDivisionError):
        with store.transaction() as conn:
            store.append(stream, [_person()], NO_STREAM, META, conn=conn)
            store.append(stream, [_person()], 1, META, conn=conn)
            1 / 0
    store.append(stream, [_person()], NO_STREAM, META)
    store.keyring.forget_cache()
    (e,) = store.read_stream(stream)
    assert e.data["email"] == EMAIL


def test_rotated_master_key_still_opens_old_data(scratch_store, settings):
    """FIELD_KEYS "new:…,old:…": data keys wrapped under the old master still unwrap.
    (A scratch database: keys under a master the session does not configure stay out of it.)"""
    store = scratch_store
    subject = unique("c")
    store.append(f"person-{subject}", [_person()], NO_STREAM, META)
    rotated = EventStore(store.pool, KeyRing(crypto.MasterKeys(
        "new2025:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpBQkNERUY=," + settings.field_keys)))
    (e,) = rotated.read_stream(f"person-{subject}")
    assert e.data["email"] == EMAIL
    fresh = unique("c")
    rotated.append(f"person-{fresh}", [_person()], NO_STREAM, META)
    with store.pool.connection() as c:
        kid = c.execute("SELECT master_kid FROM eventstore.subject_keys WHERE subject = %s",
                        (fresh,)).fetchone()[0]
    assert kid == "new2025"


def test_old_schema_versions_are_upcast_on_read(store):
    """An event stored at v1 reads as v3 through the registry's upcasters."""
    name = unique("test_renamed_")
    v1, v3 = Registry(), Registry()
    v1.register(name, "test")
    v3.register(name, "test", version=3, upcasters={
        1: lambda d: {**d, "kana": ""},
        2: lambda d: {"full_name": d.pop("name"), **d}})
    stream = f"upc-{unique()}"
    EventStore(store.pool, store.keyring, registry=v1).append(stream, [NewEvent(name, {"name": "x"})],
                                                             NO_STREAM, META)
    (old,) = EventStore(store.pool, store.keyring, registry=v1).read_stream(stream)
    (new,) = EventStore(store.pool, store.keyring, registry=v3).read_stream(stream)
    assert (old.schema_version, old.data) == (1, {"name": "x"})
    assert (new.schema_version, new.data) == (3, {"full_name": "x", "kana": ""})
