-- Roles are cluster-wide and created by `tsunagi db setup` before this file runs.
-- Services: read and append events, nothing more on them; the global log is written only by
-- eventstore.seal() (SECURITY DEFINER), so a service can neither change nor forge its rows.
GRANT USAGE ON SCHEMA eventstore, chassis TO tsunagi_service;
GRANT SELECT, INSERT ON eventstore.events TO tsunagi_service;
GRANT SELECT ON eventstore.log TO tsunagi_service;
GRANT SELECT, INSERT, DELETE ON eventstore.subject_keys TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA chassis TO tsunagi_service;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON eventstore.log FROM tsunagi_service;
REVOKE UPDATE, DELETE, TRUNCATE ON eventstore.events FROM tsunagi_service;
REVOKE ALL ON FUNCTION eventstore.seal(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventstore.seal(integer) TO tsunagi_service;

-- Auditors: SELECT on schema audit and nothing else — not even temporary tables, and every
-- transaction read-only by default.
REVOKE ALL ON SCHEMA eventstore, chassis FROM auditor;
GRANT USAGE ON SCHEMA audit TO auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA audit TO auditor;
ALTER DEFAULT PRIVILEGES IN SCHEMA audit GRANT SELECT ON TABLES TO auditor;
ALTER ROLE auditor SET default_transaction_read_only = on;
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO tsunagi_service', current_database());
END $$;
REVOKE ALL ON FUNCTION eventstore.seal_horizon() FROM PUBLIC;
