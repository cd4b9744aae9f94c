-- The trainer lock is an advisory lock on Postgres (pg_try_advisory_lock,
-- src/store/lock.rs): nothing to create. This file keeps the migration
-- versions of both backends in step (SQLite creates a lease table here).
SELECT 1;
