-- notifier's read model: the mail outbox (DESIGN.md "Mail").
--
-- One row per mail-<mail_id> stream, written in the same transaction as its events. It holds
-- no address and no mail text (those are personal fields of `mail_queued`, encrypted in the
-- log); it only says which mails are due and who is delivering one right now. `lease_until`
-- is that claim: a sender takes a mail by moving it forward atomically, so two notifier
-- processes (or the retry timer and the first attempt) never send the same mail at once.
-- Re-running this file is harmless.

CREATE SCHEMA IF NOT EXISTS notifier;

CREATE TABLE IF NOT EXISTS notifier.outbox (
    mail_id          uuid        PRIMARY KEY,
    template         text        NOT NULL,
    customer_number  text,
    source_event_id  uuid,
    status           text        NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    lease_until      timestamptz,
    last_error       text,
    message_id       text        NOT NULL,
    queued_at        timestamptz NOT NULL,
    sent_at          timestamptz,
    stream_version   bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The retry timer scans the due ones.
CREATE INDEX IF NOT EXISTS outbox_due_idx ON notifier.outbox (next_attempt_at) WHERE status = 'queued';
-- Operators look for the failed ones.
CREATE INDEX IF NOT EXISTS outbox_failed_idx ON notifier.outbox (queued_at) WHERE status = 'failed';

GRANT USAGE ON SCHEMA notifier TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA notifier TO tsunagi_service;
