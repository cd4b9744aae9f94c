-- The same rollup as before (the first quality feedback counts its request
-- as rewarded; a later one replaces the value; an older one arriving late
-- changes nothing), with the previous feedback joined by its id. The old body
-- LEFT JOINed a derived table with ORDER BY ... LIMIT 1, which SQLite cannot
-- flatten: every quality feedback opened, filled and freed an ephemeral
-- B-tree (a page cache of its own, a transaction and a rollback) to hold at
-- most one row, ~12,000 instructions of a bandit route's request-and-feedback
-- cycle (docs/performance.md, session 21). The subquery that finds the id
-- depends on NEW only, so it runs once; the join is a rowid lookup.
-- SQLite only: Postgres sums a statement's new rows in one set-based trigger.
DROP TRIGGER feedback_rollup;
CREATE TRIGGER feedback_rollup AFTER INSERT ON feedback WHEN NEW.metric = 'quality' BEGIN
    INSERT INTO rollup_hourly (hour, route, model, provider, policy_version, api_key_id, tenant, rewarded, reward_sum)
    SELECT CAST(strftime('%s', r.created_at) AS INTEGER) / 3600 * 3600, COALESCE(r.route, ''),
        COALESCE(r.model, ''), COALESCE(r.provider, ''), COALESCE(r.policy_version, ''),
        COALESCE(r.api_key_id, ''), COALESCE(r.tenant, ''),
        CASE WHEN p.id IS NULL THEN 1 ELSE 0 END,
        CASE WHEN p.id IS NULL THEN NEW.value
             WHEN NEW.created_at > p.created_at
                  OR (NEW.created_at = p.created_at AND NEW.id > p.id) THEN NEW.value - p.value
             ELSE 0 END
    FROM requests r
    LEFT JOIN feedback p ON p.id = (SELECT id FROM feedback
        WHERE request_id = NEW.request_id AND metric = 'quality' AND id <> NEW.id
        ORDER BY created_at DESC, id DESC LIMIT 1)
    WHERE r.id = NEW.request_id
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET
        rewarded = rewarded + excluded.rewarded,
        reward_sum = reward_sum + excluded.reward_sum;
END;
