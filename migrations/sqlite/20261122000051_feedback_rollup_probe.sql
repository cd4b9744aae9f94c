-- Postgres only (its statement-level feedback rollup trigger is rewritten);
-- SQLite's row-level trigger already probes by index. Kept so both
-- backends share one list of versions.
SELECT 1;
