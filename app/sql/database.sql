-- Statements about the database itself rather than a resource.

-- name: ping
-- Readiness: the database answers a query.
SELECT 1;

-- name: lock-schema-changes
-- Serialise schema.sql runs (several workers or `init-db`s starting at once);
-- held until the applying transaction ends.
SELECT pg_advisory_xact_lock(hashtext('contactsync.schema'));

-- name: allow-slow-schema-changes
-- A schema change may rewrite a large table (a column with a volatile
-- default, a new index): no statement timeout for this transaction only.
SET LOCAL statement_timeout = 0;

-- name: set-transaction-read-only
-- A dry run's transaction (DESIGN 15): PostgreSQL itself refuses any write in it.
SET TRANSACTION READ ONLY;
