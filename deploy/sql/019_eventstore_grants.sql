-- Roles are cluster-wide and created by `tsunagi db setup` before this file runs.
-- Services: read and append the log, nothing more on it; full use of their own read models.
GRANT USAGE ON SCHEMA eventstore, chassis TO tsunagi_service;
GRANT SELECT, INSERT ON eventstore.events, eventstore.log TO tsunagi_service;
GRANT SELECT, INSERT, DELETE ON eventstore.subject_keys TO tsunagi_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA chassis TO tsunagi_service;
REVOKE UPDATE, DELETE, TRUNCATE ON eventstore.events, eventstore.log FROM tsunagi_service;

-- Auditors: SELECT on schema audit and nothing else.
REVOKE ALL ON SCHEMA eventstore, chassis FROM auditor;
GRANT USAGE ON SCHEMA audit TO auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA audit TO auditor;
ALTER DEFAULT PRIVILEGES IN SCHEMA audit GRANT SELECT ON TABLES TO auditor;
