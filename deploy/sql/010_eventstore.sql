-- The event store: an append-only log on PostgreSQL.
--
-- Two insert-only tables. `events` takes what writers append, concurrently and without any
-- lock beyond the per-stream unique constraint. `log` is written by exactly one sealer: it
-- gives every committed event its gap-free global position and hash-chain link, in the order
-- in which transactions fell below the oldest in-flight transaction (pg_snapshot_xmin). A
-- reader of the global log reads `log`, so an event that commits late is sealed late, at
-- a later position, and is never skipped.
-- Re-running this file is harmless: every statement is idempotent.

CREATE SCHEMA IF NOT EXISTS eventstore;

CREATE TABLE IF NOT EXISTS eventstore.events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream_name     text        NOT NULL CHECK (stream_name ~ '^[a-z][a-z0-9_]*-.+$'),
    category        text        NOT NULL GENERATED ALWAYS AS (split_part(stream_name, '-', 1)) STORED,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_name, stream_version)
);
CREATE INDEX IF NOT EXISTS events_tx_idx ON eventstore.events (tx_id, id);

CREATE TABLE IF NOT EXISTS eventstore.log (
    global_position bigint PRIMARY KEY CHECK (global_position > 0),
    event_seq       bigint NOT NULL UNIQUE REFERENCES eventstore.events (id),
    tx_id           xid8   NOT NULL,
    link            bytea  NOT NULL
);
CREATE INDEX IF NOT EXISTS log_cursor_idx ON eventstore.log (tx_id, event_seq);

-- Per-subject data keys for personal fields (crypto-shredding). Deleting a row here is the
-- point of the table: the ciphertext left in the log can then never be read again.
CREATE TABLE IF NOT EXISTS eventstore.subject_keys (
    subject     text        PRIMARY KEY,
    master_kid  text        NOT NULL,
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Append-only, enforced by the database for every role, the owner included.
CREATE OR REPLACE FUNCTION eventstore.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eventstore.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'log'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgname = t || '_append_only'
                         AND tgrelid = ('eventstore.' || t)::regclass) THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON eventstore.%I
                            FOR EACH ROW EXECUTE FUNCTION eventstore.refuse_change()',
                           t || '_append_only', t);
            EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON eventstore.%I
                            FOR EACH STATEMENT EXECUTE FUNCTION eventstore.refuse_change()',
                           t || '_no_truncate', t);
        END IF;
    END LOOP;
END $$;

-- The canonical bytes a chain link covers. `verify` recomputes them in Python from the raw
-- columns, so a change to any covered column (or to this function) shows up as a broken link.
CREATE OR REPLACE FUNCTION eventstore.canonical(
    pos bigint, e eventstore.events) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_to(concat_ws(chr(31),
        pos::text, e.event_id::text, e.stream_name, e.stream_version::text, e.event_type,
        e.schema_version::text, e.data::text, e.metadata::text,
        (extract(epoch FROM e.recorded_at) * 1000000)::bigint::text), 'UTF8')
$$;

-- The horizon: the oldest transaction still in flight in THIS database, or the next xid when
-- none is. pg_snapshot_xmin() alone would count transactions of every database in the cluster,
-- so one long transaction in an unrelated database would stall sealing (and every relay).
-- A transaction of the snapshot is skipped only when pg_stat_activity positively shows it
-- running in another database; anything unknown (a prepared transaction, one that just
-- ended) still holds the horizon back, which only delays sealing, never loses an event.
-- Transactions that start later get an xid >= the snapshot's xmax, never below the horizon.
CREATE OR REPLACE FUNCTION eventstore.seal_horizon() RETURNS xid8
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH s AS (SELECT pg_current_snapshot() AS snap)
    SELECT coalesce(
        (SELECT min(x) FROM s, pg_snapshot_xip(s.snap) AS x
          WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                             WHERE a.backend_xid = x::xid
                               AND a.datid IS DISTINCT FROM
                                   (SELECT oid FROM pg_database WHERE datname = current_database()))),
        (SELECT pg_snapshot_xmax(s.snap) FROM s))
$$;

-- Seal committed events into the global log. Only one sealer runs at a time (advisory
-- lock; a second caller returns -1 at once). Cursor = (tx_id, id) of the last sealed event:
-- every transaction below the horizon has finished, so nothing can still appear behind it.
-- SECURITY DEFINER: the sealer is the only writer of `log`; the services' role may call it
-- but cannot insert positions or links of its own (019_eventstore_grants.sql). As the owner
-- it also sees other roles' transactions in pg_stat_activity (for the horizon).
CREATE OR REPLACE FUNCTION eventstore.seal(max_batch integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    horizon  xid8 := eventstore.seal_horizon();
    last_pos bigint;
    last_link bytea;
    last_tx  xid8;
    last_seq bigint;
    r        eventstore.events;
    n        integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7031704581) THEN
        RETURN -1;
    END IF;
    SELECT l.global_position, l.link, l.tx_id, l.event_seq
      INTO last_pos, last_link, last_tx, last_seq
      FROM eventstore.log l ORDER BY l.global_position DESC LIMIT 1;
    last_pos  := coalesce(last_pos, 0);
    last_link := coalesce(last_link, '\x'::bytea);
    last_tx   := coalesce(last_tx, '0'::xid8);
    last_seq  := coalesce(last_seq, 0);
    FOR r IN
        SELECT * FROM eventstore.events e
         WHERE (e.tx_id, e.id) > (last_tx, last_seq) AND e.tx_id < horizon
         ORDER BY e.tx_id, e.id
         LIMIT max_batch
    LOOP
        last_pos  := last_pos + 1;
        last_link := sha256(last_link || eventstore.canonical(last_pos, r));
        INSERT INTO eventstore.log (global_position, event_seq, tx_id, link)
             VALUES (last_pos, r.id, r.tx_id, last_link);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Tracking of handled events and relay/projection checkpoints (mutable bookkeeping, not log).
CREATE SCHEMA IF NOT EXISTS chassis;
CREATE TABLE IF NOT EXISTS chassis.handled_events (
    handler    text        NOT NULL,
    event_id   uuid        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, event_id)
);
CREATE TABLE IF NOT EXISTS chassis.checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Auditors read this view and nothing else. It runs with its owner's rights, so the
-- `auditor` role needs no privilege on the underlying tables.
CREATE SCHEMA IF NOT EXISTS audit;
CREATE OR REPLACE VIEW audit.events AS
SELECT l.global_position,
       e.stream_name,
       e.category,
       e.stream_version,
       e.event_id,
       e.event_type,
       e.schema_version,
       e.recorded_at,
       e.metadata -> 'actor'                AS actor,
       (e.metadata ->> 'correlation_id')    AS correlation_id,
       (e.metadata ->> 'causation_id')      AS causation_id,
       e.data,
       e.metadata,
       encode(l.link, 'hex')                AS chain_link
  FROM eventstore.log l
  JOIN eventstore.events e ON e.id = l.event_seq;
