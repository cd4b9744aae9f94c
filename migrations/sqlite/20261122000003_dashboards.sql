-- Dashboards on SQLite: the same rollup tables, views and column names as
-- the Postgres migration. Differences, and why:
-- * `hour` in the views is text ('YYYY-MM-DDTHH:00:00Z'); in the rollups it is
--   Unix seconds on both backends.
-- * SQLite has no percentile_cont: the views compute it with window
--   functions (row_number over latency, then linear interpolation between
--   the two neighbouring ranks at position 1 + p (n - 1), which is exactly
--   percentile_cont's definition).
-- * Triggers are per row (SQLite has no statement triggers); one machine,
--   modest rates, so that is cheap enough.
-- Latency bucket bounds must stay equal to `sb_latency_bucket` (Postgres)
-- and `LATENCY_BUCKETS_MS` in src/store/dashboard.rs.

CREATE TABLE latency_bucket_bounds (
    bucket    INTEGER PRIMARY KEY,
    lower_ms  REAL NOT NULL
);
INSERT INTO latency_bucket_bounds (bucket, lower_ms) VALUES (0, 0), (1, 5), (2, 10), (3, 20), (4, 30), (5, 50), (6, 75), (7, 100), (8, 150), (9, 200), (10, 300), (11, 400), (12, 500), (13, 750), (14, 1000), (15, 1500), (16, 2000), (17, 3000), (18, 4000), (19, 5000), (20, 7500), (21, 10000), (22, 15000), (23, 20000), (24, 30000), (25, 60000), (26, 120000);

CREATE TABLE rollup_hourly (
    hour               INTEGER NOT NULL,
    route              TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT NOT NULL,
    policy_version     TEXT NOT NULL,
    api_key_id         TEXT NOT NULL,
    tenant             TEXT NOT NULL,
    requests           INTEGER NOT NULL DEFAULT 0,
    errors             INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum     REAL NOT NULL DEFAULT 0,
    ttft_ms_sum        REAL NOT NULL DEFAULT 0,
    ttft_count         INTEGER NOT NULL DEFAULT 0,
    rewarded           INTEGER NOT NULL DEFAULT 0,
    reward_sum         REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, route, model, provider, policy_version, api_key_id, tenant)
);

CREATE TABLE rollup_latency_hourly (
    hour      INTEGER NOT NULL,
    model     TEXT NOT NULL,
    bucket    INTEGER NOT NULL,
    requests  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, model, bucket)
);

CREATE INDEX requests_errors_created_at ON requests (created_at) WHERE status = 'error';

-- The latest `quality` feedback of each request: its reward.
CREATE VIEW request_reward AS
SELECT request_id, reward, created_at FROM (
    SELECT request_id, value AS reward, created_at,
        row_number() OVER (PARTITION BY request_id ORDER BY created_at DESC, id DESC) AS rn
    FROM feedback WHERE metric = 'quality'
) WHERE rn = 1;

-- Backfill from what is already stored.
INSERT INTO rollup_hourly (hour, route, model, provider, policy_version, api_key_id, tenant, requests, errors, cost_usd,
    prompt_tokens, completion_tokens, latency_ms_sum, ttft_ms_sum, ttft_count, rewarded, reward_sum)
SELECT CAST(strftime('%s', r.created_at) AS INTEGER) / 3600 * 3600, COALESCE(r.route, ''),
    COALESCE(r.model, ''), COALESCE(r.provider, ''), COALESCE(r.policy_version, ''),
    COALESCE(r.api_key_id, ''), COALESCE(r.tenant, ''), count(*), sum(r.status = 'error'),
    sum(r.cost_usd), COALESCE(sum(r.prompt_tokens), 0), COALESCE(sum(r.completion_tokens), 0),
    sum(r.latency_ms), COALESCE(sum(r.ttft_ms), 0), count(r.ttft_ms), count(q.reward),
    COALESCE(sum(q.reward), 0)
FROM requests r LEFT JOIN request_reward q ON q.request_id = r.id
WHERE true
GROUP BY 1, 2, 3, 4, 5, 6, 7;

INSERT INTO rollup_latency_hourly (hour, model, bucket, requests)
SELECT CAST(strftime('%s', created_at) AS INTEGER) / 3600 * 3600, COALESCE(model, ''),
    (SELECT max(bucket) FROM latency_bucket_bounds WHERE lower_ms <= latency_ms), count(*)
FROM requests WHERE true GROUP BY 1, 2, 3;

-- Rows skipped by ON CONFLICT DO NOTHING fire no trigger, so replays are not
-- counted twice. Feedback stored before its request is picked up here.
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
        (SELECT max(bucket) FROM latency_bucket_bounds WHERE lower_ms <= NEW.latency_ms), 1)
    ON CONFLICT (hour, model, bucket) DO UPDATE SET requests = requests + 1;
END;

-- The first quality feedback of a request counts it as rewarded; a later one
-- replaces the value (latest wins, as in the views); an older one arriving
-- late changes nothing.
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
    LEFT JOIN (SELECT value, created_at, id FROM feedback
        WHERE request_id = NEW.request_id AND metric = 'quality' AND id <> NEW.id
        ORDER BY created_at DESC, id DESC LIMIT 1) p ON 1
    WHERE r.id = NEW.request_id
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET
        rewarded = rewarded + excluded.rewarded,
        reward_sum = reward_sum + excluded.reward_sum;
END;

-- ---------------------------------------------------------------------------
-- Exact views over the raw tables; same names and columns as on Postgres.

CREATE VIEW model_hourly AS
WITH base AS (
    SELECT strftime('%Y-%m-%dT%H:00:00Z', r.created_at) AS hour, r.model AS model,
        r.status AS status, r.cost_usd AS cost_usd, r.latency_ms AS latency_ms, q.reward AS reward
    FROM requests r LEFT JOIN request_reward q ON q.request_id = r.id
), ranked AS (
    SELECT *,
        row_number() OVER (PARTITION BY hour, model ORDER BY latency_ms) AS rn,
        1 + 0.5 * (count(*) OVER (PARTITION BY hour, model) - 1) AS pos50,
        1 + 0.95 * (count(*) OVER (PARTITION BY hour, model) - 1) AS pos95
    FROM base
)
SELECT hour, model,
    count(*) AS requests,
    sum(status = 'error') AS errors,
    CAST(sum(status = 'error') AS REAL) / count(*) AS error_rate,
    sum(cost_usd) AS cost_usd,
    max(CASE WHEN rn = CAST(pos50 AS INTEGER) THEN latency_ms END) * (1 - (pos50 - CAST(pos50 AS INTEGER)))
        + COALESCE(max(CASE WHEN rn = CAST(pos50 AS INTEGER) + 1 THEN latency_ms END), 0)
          * (pos50 - CAST(pos50 AS INTEGER)) AS p50_latency_ms,
    max(CASE WHEN rn = CAST(pos95 AS INTEGER) THEN latency_ms END) * (1 - (pos95 - CAST(pos95 AS INTEGER)))
        + COALESCE(max(CASE WHEN rn = CAST(pos95 AS INTEGER) + 1 THEN latency_ms END), 0)
          * (pos95 - CAST(pos95 AS INTEGER)) AS p95_latency_ms,
    avg(reward) AS mean_reward,
    count(reward) AS rewarded,
    CAST(count(reward) AS REAL) / count(*) AS feedback_coverage
FROM ranked
GROUP BY hour, model;

CREATE VIEW route_share_hourly AS
SELECT hour, route, model, requests,
    CAST(requests AS REAL) / sum(requests) OVER (PARTITION BY hour, route) AS share
FROM (
    SELECT strftime('%Y-%m-%dT%H:00:00Z', created_at) AS hour, route, model, count(*) AS requests
    FROM requests WHERE route IS NOT NULL GROUP BY 1, 2, 3
);

CREATE VIEW policy_version_stats AS
SELECT route, policy_version, requests,
    CAST(requests AS REAL) / sum(requests) OVER (PARTITION BY route) AS share,
    mean_reward, rewarded, first_seen, last_seen
FROM (
    SELECT r.route AS route, r.policy_version AS policy_version, count(*) AS requests,
        avg(q.reward) AS mean_reward, count(q.reward) AS rewarded,
        min(r.created_at) AS first_seen, max(r.created_at) AS last_seen
    FROM requests r LEFT JOIN request_reward q ON q.request_id = r.id
    WHERE r.route IS NOT NULL
    GROUP BY 1, 2
);

CREATE VIEW key_spend_hourly AS
SELECT strftime('%Y-%m-%dT%H:00:00Z', created_at) AS hour,
    COALESCE(api_key_id, '') AS api_key_id,
    COALESCE(tenant, '') AS tenant,
    count(*) AS requests,
    sum(cost_usd) AS cost_usd
FROM requests
GROUP BY 1, 2, 3;
