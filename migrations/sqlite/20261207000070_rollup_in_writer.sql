-- The hourly rollups of request rows are summed by the outbox writer, once
-- per batch and group (src/store/batch.rs), instead of by a row-level
-- trigger: that trigger's two upserts, two `strftime` parses and two
-- feedback probes were ~40 % of what SQLite spent on a request row. The
-- writer is the only code that inserts request rows on SQLite.
--
-- What only the database knows stays here: quality feedback stored before
-- its request row (a stream whose feedback came before its end, or a batch
-- that failed and was replayed after a later one) is credited to the
-- request's hour when the row arrives, as the old trigger did. Feedback
-- stored after its request is credited by `feedback_rollup`, unchanged.
DROP TRIGGER requests_rollup;

CREATE TRIGGER requests_rollup_early_feedback AFTER INSERT ON requests
WHEN EXISTS (SELECT 1 FROM feedback WHERE request_id = NEW.id AND metric = 'quality')
BEGIN
    INSERT INTO rollup_hourly (hour, route, model, provider, policy_version, api_key_id, tenant,
        rewarded, reward_sum)
    VALUES (CAST(strftime('%s', NEW.created_at) AS INTEGER) / 3600 * 3600,
        COALESCE(NEW.route, ''), COALESCE(NEW.model, ''), COALESCE(NEW.provider, ''),
        COALESCE(NEW.policy_version, ''), COALESCE(NEW.api_key_id, ''), COALESCE(NEW.tenant, ''),
        1,
        (SELECT value FROM feedback WHERE request_id = NEW.id AND metric = 'quality'
            ORDER BY created_at DESC, id DESC LIMIT 1))
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET
        rewarded = rewarded + excluded.rewarded,
        reward_sum = reward_sum + excluded.reward_sum;
END;
