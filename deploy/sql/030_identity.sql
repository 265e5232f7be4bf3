-- identity's own read models (schema `identity`). Each one is derived from the event log and
-- written in the same transaction as the events it follows; `identity.readmodels.rebuild`
-- recreates them by replay. Re-running this file is harmless.
CREATE SCHEMA IF NOT EXISTS identity;

-- Which customer numbers are imported, and with what content (digest): lets a batch of the
-- legacy import find its existing records with one query (idempotent re-import).
CREATE TABLE IF NOT EXISTS identity.legacy_imports (
    customer_number text        PRIMARY KEY CHECK (customer_number ~ '^[0-9]{10}$'),
    record_digest   text        NOT NULL,
    imported_at     timestamptz NOT NULL DEFAULT now()
);

-- challenge id -> customer, so `answer_challenge` finds the stream without the login ID.
CREATE TABLE IF NOT EXISTS identity.login_challenges (
    challenge_id    uuid        PRIMARY KEY,
    customer_number text        NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS login_challenges_expiry_idx ON identity.login_challenges (expires_at);

-- Fail counters of login IDs that have no such credential (unknown numbers, customers who have
-- not migrated yet at the normal login). They lock exactly like real credentials so that a lock
-- cannot be used to find out whether a customer number exists (R-RBA-2). Keyed by an HMAC of
-- the login ID: the table is not a list of numbers people typed. Not derived from events (an
-- unknown number has no stream); bookkeeping that may be emptied at any time.
CREATE TABLE IF NOT EXISTS identity.shadow_counters (
    key             bytea       NOT NULL,
    credential      text        NOT NULL,
    failures        integer     NOT NULL DEFAULT 0,
    locked_at       timestamptz,
    release_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, credential)
);

GRANT USAGE ON SCHEMA identity TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA identity TO tsunagi_service;
