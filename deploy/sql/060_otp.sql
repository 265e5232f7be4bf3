-- otp_service's read models (SPEC R-INI-3…7, R-INI-9, R-RBA-2).
--
-- Each row is derived from the otpapp-/otptoken-/otpcust- streams and written in the same
-- transaction as their events (otp_service.projection), so a status query, an activation
-- and an OTP check always see what the log says; `tsunagi`'s replay can rebuild them.
-- No mail address and no password verifier is kept here. The TOTP secret is kept only
-- sealed (AES-GCM under a TOTP_KEYS master key, `secret_kid` names the key) and is erased
-- when the token is released.
-- Re-running this file is harmless.

CREATE SCHEMA IF NOT EXISTS otp;

CREATE TABLE IF NOT EXISTS otp.applications (
    application_id  uuid        PRIMARY KEY,
    customer_number text        NOT NULL,
    -- awaiting_call | verified | issued | activated | expired | failed
    status          text        NOT NULL CHECK (status IN ('awaiting_call', 'verified', 'issued',
                                                           'activated', 'expired', 'failed')),
    reason          text,
    verification_id text,
    service_id      text,
    user_id         text        UNIQUE,          -- the activation looks the application up by it
    token_serial    text,
    activation_failures integer NOT NULL DEFAULT 0,
    expires_at      timestamptz NOT NULL,        -- end of the call window
    submitted_at    timestamptz NOT NULL,
    stream_version  bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS applications_customer_idx ON otp.applications (customer_number, status);

CREATE TABLE IF NOT EXISTS otp.tokens (
    token_serial    text        PRIMARY KEY,
    customer_number text        NOT NULL,
    application_id  uuid        NOT NULL,
    app_instance_id text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('active', 'released')),
    suffix          text,
    display_name    text        NOT NULL,
    secret_kid      text,
    secret_sealed   text,                         -- base64(nonce ‖ AES-GCM ciphertext)
    activated_at    timestamptz NOT NULL,
    released_at     timestamptz,
    stream_version  bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'released' OR secret_sealed IS NOT NULL)
);
-- One active token per customer (R-INI-9 asks for "the" OTP of the customer).
CREATE UNIQUE INDEX IF NOT EXISTS tokens_one_active_per_customer
    ON otp.tokens (customer_number) WHERE status = 'active';
-- An OTP app holds at most 10 tokens (R-INI-7): counted per app instance.
CREATE INDEX IF NOT EXISTS tokens_app_instance_idx
    ON otp.tokens (app_instance_id) WHERE status = 'active';

-- The snapshot of otpcust-<customer_number>: the OTP fail counter, the lock and the last
-- accepted time step (replay protection). stream_version is the expected version of the
-- next append, so concurrent checks of one customer serialise on the stream.
CREATE TABLE IF NOT EXISTS otp.customers (
    customer_number      text        PRIMARY KEY,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    locked               boolean     NOT NULL DEFAULT false,
    locked_at            timestamptz,
    last_token_serial    text,
    last_time_step       bigint,
    stream_version       bigint      NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA otp TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA otp TO tsunagi_service;
