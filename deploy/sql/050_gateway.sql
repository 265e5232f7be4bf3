-- The gateway's own state: customer sessions. Not an audit record (logins are events in the
-- log); a row here only says "this bearer token is currently good".
-- Re-running this file is harmless: every statement is idempotent.

CREATE SCHEMA IF NOT EXISTS gateway;

-- Only the SHA-256 of a token is kept, so a copy of this table cannot be replayed as sessions.
CREATE TABLE IF NOT EXISTS gateway.sessions (
    token_hash      bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    customer_number text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('migration', 'customer')),
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    -- Sliding: min(last_seen_at + idle timeout, created_at + absolute lifetime).
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
CREATE INDEX IF NOT EXISTS sessions_customer_idx
    ON gateway.sessions (customer_number) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_expires_idx ON gateway.sessions (expires_at);

GRANT USAGE ON SCHEMA gateway TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON gateway.sessions TO tsunagi_service;
REVOKE ALL ON SCHEMA gateway FROM auditor;
REVOKE ALL ON gateway.sessions FROM auditor;
