-- `requests (model, created_at)` serves no query of the router's: the
-- dashboards read per-model figures from the hourly rollups, training reads
-- by route, export and retention by time. Every request row paid for it on
-- insert (~1,300 instructions a row on SQLite, and an index entry per row
-- on every partition here; docs/performance.md, session 19). An operator who
-- queries raw rows by model can create it again.
DROP INDEX IF EXISTS requests_model_created_at;
