-- The trainer lock on SQLite: a lease row (one machine, no advisory locks).
-- `expires_at` is Unix seconds; a lease past it may be taken over.
-- Postgres uses an advisory lock instead (src/store/lock.rs).
CREATE TABLE trainer_lock (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
