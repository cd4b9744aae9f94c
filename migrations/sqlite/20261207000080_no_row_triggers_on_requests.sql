-- The outbox writer is the only code that inserts request rows on SQLite,
-- and it now does what the last two row-level triggers on `requests` did
-- (src/store/batch/): it sums `rollup_errors_hourly` per batch, as it
-- already summed `rollup_hourly` and `rollup_latency_hourly`, and credits
-- quality feedback stored before its request row with one statement per
-- batch. Any row-level trigger on a table makes SQLite copy every row of a
-- multi-row insert through a temporary table before inserting it; with
-- none left, a request row costs SQLite ~6,700 fewer instructions
-- (callgrind, docs/performance.md).
DROP TRIGGER requests_rollup_errors;
DROP TRIGGER requests_rollup_early_feedback;
