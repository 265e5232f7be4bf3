-- phone_auth's read model: the verifications an inbound call may concern (SPEC R-INI-4).
--
-- Derived from the phoneverif-<id> streams and written in the same transaction as their
-- events, so a call, the timer and a status query always see what the log says. It holds no
-- phone number: `caller_index` is a keyed hash (HMAC-SHA256) of the registered phone's E.164
-- form — enough to find "this caller's verification", useless to read a number from — and
-- `caller_masked` is the last four digits the page shows anyway.
-- Re-running this file is harmless.

CREATE SCHEMA IF NOT EXISTS phone_auth;

CREATE TABLE IF NOT EXISTS phone_auth.verifications (
    verification_id uuid        PRIMARY KEY,
    application_id  text        NOT NULL,
    customer_number text        NOT NULL,
    caller_index    text        NOT NULL,
    caller_masked   text        NOT NULL,
    call_to         text        NOT NULL,            -- E.164 of the toll-free number
    call_to_display text        NOT NULL,            -- national format, as shown
    status          text        NOT NULL CHECK (status IN ('awaiting_call', 'verified', 'expired')),
    attempts        text[]      NOT NULL DEFAULT '{}',
    started_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    stream_version  bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A call looks up the caller's verifications and the open ones of the number dialled.
CREATE INDEX IF NOT EXISTS verifications_caller_idx
    ON phone_auth.verifications (caller_index, expires_at);
CREATE INDEX IF NOT EXISTS verifications_open_call_to_idx
    ON phone_auth.verifications (call_to, expires_at) WHERE status = 'awaiting_call';
-- The expiry timer scans the open ones that are overdue.
CREATE INDEX IF NOT EXISTS verifications_open_expiry_idx
    ON phone_auth.verifications (expires_at) WHERE status = 'awaiting_call';
-- An operator's phone change closes the customer's open ones.
CREATE INDEX IF NOT EXISTS verifications_open_customer_idx
    ON phone_auth.verifications (customer_number) WHERE status = 'awaiting_call';
CREATE INDEX IF NOT EXISTS verifications_application_idx
    ON phone_auth.verifications (application_id);

GRANT USAGE ON SCHEMA phone_auth TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA phone_auth TO tsunagi_service;
