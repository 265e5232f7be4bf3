-- otp_service's read model of the mail notification password (SPEC R-MAIL-1, R-MAIL-2, R-RBA-2).
--
-- One row per customer: the snapshot of mailotp-<customer_number>, written in the same
-- transaction as its events (otp_service.mail_otp_projection) and rebuildable by replay.
-- `current` holds the latest code as the decider sees it: issue id, purpose, the keyed digest
-- of its operation and its verifier — an HMAC-SHA256 under a MAIL_OTP_KEYS key that is not in
-- the database. Never the code. `previous` keeps the few codes it superseded, so an old code
-- is answered with "enter the latest one" instead of counting as a guess.
-- stream_version is the expected version of the next append: concurrent entries of one
-- customer serialise on the stream, so a code is accepted exactly once.
-- Re-running this file is harmless.

CREATE SCHEMA IF NOT EXISTS otp;

CREATE TABLE IF NOT EXISTS otp.mail_otp_customers (
    customer_number      text        PRIMARY KEY,
    current              jsonb,
    previous             jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- copies of current->status / current->expires_at for the expiry sweep
    current_status       text,
    current_expires_at   timestamptz,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    locked               boolean     NOT NULL DEFAULT false,
    locked_at            timestamptz,
    stream_version       bigint      NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- The sweep closes codes that expired unused (and destroys their sealing keys).
CREATE INDEX IF NOT EXISTS mail_otp_customers_expiry_idx
    ON otp.mail_otp_customers (current_expires_at) WHERE current_status = 'active';

GRANT USAGE ON SCHEMA otp TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA otp TO tsunagi_service;
