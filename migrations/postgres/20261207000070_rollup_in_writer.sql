-- SQLite only (its request rollups move from a row-level trigger to the
-- outbox writer); Postgres keeps its statement-level triggers. Kept so both
-- backends share one list of versions.
SELECT 1;
