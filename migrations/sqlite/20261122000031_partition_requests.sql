-- Postgres partitions `requests` by month here; SQLite keeps one table and
-- applies the retention setting with DELETE, by age, for which feedback
-- needs an index on its time.
CREATE INDEX feedback_created_at ON feedback (created_at);
