-- passkeys (biometric login with WebAuthn, SPEC R-INI-8/R-INI-9).
-- Re-running this file is harmless: every statement is idempotent.

CREATE SCHEMA IF NOT EXISTS passkeys;

-- Read model of the passkeys-<customer_number> streams, written in the same transaction as
-- their events and rebuilt by `tsunagi replay passkeys`. Only what a login must look up before
-- it knows the customer: which customer a credential ID belongs to, and whether it is usable.
-- The public key and the nickname stay in the (encrypted) events. A removed credential's row
-- is deleted; a crypto-shredded customer's rows are deleted too (and not rebuilt: the
-- credential ID reads as redacted).
CREATE TABLE IF NOT EXISTS passkeys.credentials (
    passkey_id      uuid        PRIMARY KEY,
    customer_number text        NOT NULL,
    credential_id   text        NOT NULL,           -- base64url, as the browser sends it
    status          text        NOT NULL CHECK (status IN ('active', 'suspended')),
    sign_count      bigint      NOT NULL,
    registered_at   timestamptz NOT NULL,
    last_used_at    timestamptz,
    stream_version  bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- One credential ID belongs to one customer: a registration quoting somebody else's credential
-- ID (they are public: allowCredentials) with a key of its own is refused here too.
CREATE UNIQUE INDEX IF NOT EXISTS credentials_credential_id_idx ON passkeys.credentials (credential_id);
CREATE INDEX IF NOT EXISTS credentials_customer_idx ON passkeys.credentials (customer_number);

-- WebAuthn challenges: single-use, expiring. Not a read model and not audit data (asking for
-- options is public; an event per request would let anybody fill the log).
CREATE TABLE IF NOT EXISTS passkeys.challenges (
    challenge_id    uuid        PRIMARY KEY,
    challenge       bytea       NOT NULL CHECK (octet_length(challenge) BETWEEN 16 AND 64),
    purpose         text        NOT NULL CHECK (purpose IN ('registration', 'login')),
    customer_number text,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS challenges_challenge_idx ON passkeys.challenges (challenge);
CREATE INDEX IF NOT EXISTS challenges_expires_idx ON passkeys.challenges (expires_at);

-- Gateway state: the sessions that a passkey login opened. Registering a passkey needs a
-- session from the ID/password login (R-INI-8), so a stolen device cannot enrol more devices.
CREATE TABLE IF NOT EXISTS gateway.passkey_sessions (
    token_hash bytea PRIMARY KEY REFERENCES gateway.sessions (token_hash) ON DELETE CASCADE,
    passkey_id uuid  NOT NULL
);

GRANT USAGE ON SCHEMA passkeys TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA passkeys TO tsunagi_service;
GRANT SELECT, INSERT, DELETE ON gateway.passkey_sessions TO tsunagi_service;
REVOKE ALL ON SCHEMA passkeys FROM auditor;
REVOKE ALL ON ALL TABLES IN SCHEMA passkeys FROM auditor;
REVOKE ALL ON gateway.passkey_sessions FROM auditor;
