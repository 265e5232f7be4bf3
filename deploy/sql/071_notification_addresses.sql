-- notifier's read model of notification addresses (SPEC R-MAIL-1, R-MAIL-4, R-MAIL-5).
--
-- One row per customer and slot: `registered` (the legacy record's address, copied from
-- identity's legacy_customer_imported) and `select1`/`select2` (the Select E-mail service,
-- from notifyaddr-<customer_number>). It tells the mail handlers where a mail notification
-- password and a 取引受付メール go. Written in the same transaction as the events (or the
-- handler's tracking row), rebuildable by replay; a customer's rows are deleted when the
-- customer's data key is shredded, so no address outlives the crypto-shredding of the log.
-- Addresses are stored encrypted under the customer's data key (notifier/addresses_projection.py)
-- and never logged in full.
-- Re-running this file is harmless.

CREATE SCHEMA IF NOT EXISTS notifier;

CREATE TABLE IF NOT EXISTS notifier.addresses (
    customer_number   text        NOT NULL,
    slot              text        NOT NULL CHECK (slot IN ('registered', 'select1', 'select2')),
    address           text        NOT NULL,
    enabled           boolean     NOT NULL DEFAULT true,
    -- a confirmed mail-notification-password destination (always true for `registered`)
    receives_mail_otp boolean     NOT NULL DEFAULT false,
    -- asked to receive it; waits for the code mailed to this address (R-MAIL-5)
    pending_mail_otp  boolean     NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_number, slot)
);

GRANT USAGE ON SCHEMA notifier TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA notifier TO tsunagi_service;
