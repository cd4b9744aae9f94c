-- SQLite only (its last row-level triggers on `requests` move to the outbox
-- writer); Postgres keeps its statement-level triggers. Kept so both
-- backends share one list of versions.
SELECT 1;
