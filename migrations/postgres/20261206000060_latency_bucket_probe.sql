-- SQLite only (its row-level rollup trigger now finds the latency bucket by
-- index); Postgres's rollup buckets latencies without a lookup table. Kept
-- so both backends share one list of versions.
SELECT 1;
