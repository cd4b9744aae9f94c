-- The latency histogram's bucket was found by scanning every bound
-- (`max(bucket) WHERE lower_ms <= latency`) once per request row: about a
-- tenth of SQLite's work per row. Bounds rise with their bucket, so the
-- bucket is the one with the largest bound at or below the latency: one
-- index probe. The trigger is otherwise unchanged.
CREATE INDEX latency_bucket_bounds_lower_ms ON latency_bucket_bounds (lower_ms);

DROP TRIGGER requests_rollup;

CREATE TRIGGER requests_rollup AFTER INSERT ON requests BEGIN
    INSERT INTO rollup_hourly (hour, route, model, provider, policy_version, api_key_id, tenant, requests, errors, cost_usd,
        prompt_tokens, completion_tokens, latency_ms_sum, ttft_ms_sum, ttft_count, rewarded,
        reward_sum)
    VALUES (CAST(strftime('%s', NEW.created_at) AS INTEGER) / 3600 * 3600,
        COALESCE(NEW.route, ''), COALESCE(NEW.model, ''), COALESCE(NEW.provider, ''),
        COALESCE(NEW.policy_version, ''), COALESCE(NEW.api_key_id, ''), COALESCE(NEW.tenant, ''),
        1, NEW.status = 'error', NEW.cost_usd, COALESCE(NEW.prompt_tokens, 0),
        COALESCE(NEW.completion_tokens, 0), NEW.latency_ms, COALESCE(NEW.ttft_ms, 0),
        NEW.ttft_ms IS NOT NULL,
        EXISTS (SELECT 1 FROM feedback WHERE request_id = NEW.id AND metric = 'quality'),
        COALESCE((SELECT value FROM feedback WHERE request_id = NEW.id AND metric = 'quality'
            ORDER BY created_at DESC, id DESC LIMIT 1), 0))
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET
        requests = requests + excluded.requests,
        errors = errors + excluded.errors,
        cost_usd = cost_usd + excluded.cost_usd,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum,
        ttft_count = ttft_count + excluded.ttft_count,
        rewarded = rewarded + excluded.rewarded,
        reward_sum = reward_sum + excluded.reward_sum;
    INSERT INTO rollup_latency_hourly (hour, model, bucket, requests)
    VALUES (CAST(strftime('%s', NEW.created_at) AS INTEGER) / 3600 * 3600,
        COALESCE(NEW.model, ''),
        (SELECT bucket FROM latency_bucket_bounds WHERE lower_ms <= NEW.latency_ms
            ORDER BY lower_ms DESC LIMIT 1), 1)
    ON CONFLICT (hour, model, bucket) DO UPDATE SET requests = requests + 1;
END;
