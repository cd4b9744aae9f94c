-- Dashboards: hourly rollups kept current by triggers (so the dashboard
-- answers from a few thousand rows whatever the size of `requests`), and
-- exact views over the raw tables for psql and Grafana.
--
-- Rollup keys use '' for NULL so that the primary key (and upsert) works.
-- `hour` is Unix seconds at the start of the hour, the same type in Postgres
-- and SQLite so the store's queries are identical on both backends.
-- Latency buckets: `sb_latency_bucket` must stay equal to the CASE in the
-- SQLite migration and to `LATENCY_BUCKETS_MS` in src/store/dashboard.rs.

CREATE FUNCTION sb_hour(ts TIMESTAMPTZ) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (floor(extract(epoch FROM ts) / 3600) * 3600)::BIGINT $$;

-- 0 below 5 ms, i for [b(i-1), b(i)), 26 at or above 120 s.
CREATE FUNCTION sb_latency_bucket(ms DOUBLE PRECISION) RETURNS INTEGER
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT width_bucket(ms, ARRAY[5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500, 750,
        1000, 1500, 2000, 3000, 4000, 5000, 7500, 10000, 15000, 20000, 30000, 60000,
        120000]::DOUBLE PRECISION[]) $$;

CREATE TABLE rollup_hourly (
    hour               BIGINT NOT NULL,
    route              TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT NOT NULL,
    policy_version     TEXT NOT NULL,
    api_key_id         TEXT NOT NULL,
    tenant             TEXT NOT NULL,
    requests           BIGINT NOT NULL DEFAULT 0,
    errors             BIGINT NOT NULL DEFAULT 0,
    cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    latency_ms_sum     DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttft_ms_sum        DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttft_count         BIGINT NOT NULL DEFAULT 0,
    -- Requests with a `quality` feedback, and the sum of each one's latest value.
    rewarded           BIGINT NOT NULL DEFAULT 0,
    reward_sum         DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, route, model, provider, policy_version, api_key_id, tenant)
);

CREATE TABLE rollup_latency_hourly (
    hour      BIGINT NOT NULL,
    model     TEXT NOT NULL,
    bucket    INTEGER NOT NULL,
    requests  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, model, bucket)
);

-- Recent errors are read newest first; errors are rare, so a partial index.
CREATE INDEX requests_errors_created_at ON requests (created_at) WHERE status = 'error';

-- Backfill from what is already stored.
INSERT INTO rollup_hourly (hour, route, model, provider, policy_version, api_key_id, tenant,
    requests, errors, cost_usd, prompt_tokens, completion_tokens, latency_ms_sum, ttft_ms_sum,
    ttft_count, rewarded, reward_sum)
SELECT sb_hour(r.created_at), COALESCE(r.route, ''), COALESCE(r.model, ''),
    COALESCE(r.provider, ''), COALESCE(r.policy_version, ''), COALESCE(r.api_key_id, ''),
    COALESCE(r.tenant, ''), count(*), count(*) FILTER (WHERE r.status = 'error'),
    sum(r.cost_usd), COALESCE(sum(r.prompt_tokens), 0), COALESCE(sum(r.completion_tokens), 0),
    sum(r.latency_ms), COALESCE(sum(r.ttft_ms), 0), count(r.ttft_ms), count(q.value),
    COALESCE(sum(q.value), 0)
FROM requests r
LEFT JOIN LATERAL (SELECT f.value FROM feedback f
    WHERE f.request_id = r.id AND f.metric = 'quality'
    ORDER BY f.created_at DESC, f.id DESC LIMIT 1) q ON true
GROUP BY 1, 2, 3, 4, 5, 6, 7;

INSERT INTO rollup_latency_hourly (hour, model, bucket, requests)
SELECT sb_hour(created_at), COALESCE(model, ''), sb_latency_bucket(latency_ms), count(*)
FROM requests GROUP BY 1, 2, 3;

-- One aggregated upsert per INSERT statement (the batch writer inserts up to
-- 500 rows per statement). Rows skipped by ON CONFLICT DO NOTHING are not in
-- `new_rows`, so a replayed batch is not counted twice. A request whose
-- feedback was stored first (a stream still open when feedback came) picks
-- its reward up here.
CREATE FUNCTION rollup_requests() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_hourly AS t (hour, route, model, provider, policy_version, api_key_id,
        tenant, requests, errors, cost_usd, prompt_tokens, completion_tokens, latency_ms_sum,
        ttft_ms_sum, ttft_count, rewarded, reward_sum)
    SELECT sb_hour(n.created_at), COALESCE(n.route, ''), COALESCE(n.model, ''),
        COALESCE(n.provider, ''), COALESCE(n.policy_version, ''), COALESCE(n.api_key_id, ''),
        COALESCE(n.tenant, ''), count(*), count(*) FILTER (WHERE n.status = 'error'),
        sum(n.cost_usd), COALESCE(sum(n.prompt_tokens), 0), COALESCE(sum(n.completion_tokens), 0),
        sum(n.latency_ms), COALESCE(sum(n.ttft_ms), 0), count(n.ttft_ms), count(q.value),
        COALESCE(sum(q.value), 0)
    FROM new_rows n
    LEFT JOIN LATERAL (SELECT f.value FROM feedback f
        WHERE f.request_id = n.id AND f.metric = 'quality'
        ORDER BY f.created_at DESC, f.id DESC LIMIT 1) q ON true
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET
        requests = t.requests + excluded.requests,
        errors = t.errors + excluded.errors,
        cost_usd = t.cost_usd + excluded.cost_usd,
        prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = t.completion_tokens + excluded.completion_tokens,
        latency_ms_sum = t.latency_ms_sum + excluded.latency_ms_sum,
        ttft_ms_sum = t.ttft_ms_sum + excluded.ttft_ms_sum,
        ttft_count = t.ttft_count + excluded.ttft_count,
        rewarded = t.rewarded + excluded.rewarded,
        reward_sum = t.reward_sum + excluded.reward_sum;

    INSERT INTO rollup_latency_hourly AS t (hour, model, bucket, requests)
    SELECT sb_hour(created_at), COALESCE(model, ''), sb_latency_bucket(latency_ms), count(*)
    FROM new_rows GROUP BY 1, 2, 3
    ON CONFLICT (hour, model, bucket) DO UPDATE SET requests = t.requests + excluded.requests;
    RETURN NULL;
END $$;

CREATE TRIGGER requests_rollup AFTER INSERT ON requests
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_requests();

-- Quality feedback moves the reward of its request's rollup row: the first
-- one counts the request as rewarded; a later one replaces the value (latest
-- per request wins, as in the views); an older one arriving late changes
-- nothing.
CREATE FUNCTION rollup_feedback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_hourly AS t (hour, route, model, provider, policy_version, api_key_id,
        tenant, rewarded, reward_sum)
    SELECT sb_hour(r.created_at), COALESCE(r.route, ''), COALESCE(r.model, ''),
        COALESCE(r.provider, ''), COALESCE(r.policy_version, ''), COALESCE(r.api_key_id, ''),
        COALESCE(r.tenant, ''), sum(d.dn), sum(d.dsum)
    FROM (
        SELECT nl.request_id,
            CASE WHEN p.id IS NULL THEN 1 ELSE 0 END AS dn,
            CASE WHEN p.id IS NULL THEN nl.value
                 WHEN (nl.created_at, nl.id) > (p.created_at, p.id) THEN nl.value - p.value
                 ELSE 0 END AS dsum
        FROM (SELECT DISTINCT ON (request_id) request_id, value, created_at, id
              FROM new_rows WHERE metric = 'quality'
              ORDER BY request_id, created_at DESC, id DESC) nl
        -- The latest quality feedback stored before this statement; a set
        -- (hashed NOT IN) rather than a per-row probe, so a big INSERT stays linear.
        LEFT JOIN (SELECT DISTINCT ON (f.request_id) f.request_id, f.value, f.created_at, f.id
              FROM feedback f
              WHERE f.metric = 'quality'
                AND f.request_id IN (SELECT request_id FROM new_rows WHERE metric = 'quality')
                AND f.id NOT IN (SELECT id FROM new_rows)
              ORDER BY f.request_id, f.created_at DESC, f.id DESC) p
            ON p.request_id = nl.request_id
    ) d
    JOIN requests r ON r.id = d.request_id
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET
        rewarded = t.rewarded + excluded.rewarded,
        reward_sum = t.reward_sum + excluded.reward_sum;
    RETURN NULL;
END $$;

CREATE TRIGGER feedback_rollup AFTER INSERT ON feedback
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_feedback();

-- ---------------------------------------------------------------------------
-- Exact views over the raw tables (filter on `hour`/time in queries: they
-- scan `requests`). Same names and columns in the SQLite migration.

-- The latest `quality` feedback of each request: its reward.
CREATE VIEW request_reward AS
SELECT DISTINCT ON (request_id) request_id, value AS reward, created_at
FROM feedback WHERE metric = 'quality'
ORDER BY request_id, created_at DESC, id DESC;

CREATE VIEW model_hourly AS
SELECT date_trunc('hour', r.created_at) AS hour,
    r.model,
    count(*) AS requests,
    count(*) FILTER (WHERE r.status = 'error') AS errors,
    (count(*) FILTER (WHERE r.status = 'error'))::DOUBLE PRECISION / count(*) AS error_rate,
    sum(r.cost_usd) AS cost_usd,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_ms) AS p50_latency_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms) AS p95_latency_ms,
    avg(q.value) AS mean_reward,
    count(q.value) AS rewarded,
    count(q.value)::DOUBLE PRECISION / count(*) AS feedback_coverage
FROM requests r
LEFT JOIN LATERAL (SELECT f.value FROM feedback f
    WHERE f.request_id = r.id AND f.metric = 'quality'
    ORDER BY f.created_at DESC, f.id DESC LIMIT 1) q ON true
GROUP BY 1, 2;

CREATE VIEW route_share_hourly AS
SELECT date_trunc('hour', created_at) AS hour, route, model,
    count(*) AS requests,
    count(*)::DOUBLE PRECISION
        / sum(count(*)) OVER (PARTITION BY date_trunc('hour', created_at), route) AS share
FROM requests WHERE route IS NOT NULL
GROUP BY 1, 2, 3;

CREATE VIEW policy_version_stats AS
SELECT r.route, r.policy_version,
    count(*) AS requests,
    count(*)::DOUBLE PRECISION / sum(count(*)) OVER (PARTITION BY r.route) AS share,
    avg(q.value) AS mean_reward,
    count(q.value) AS rewarded,
    min(r.created_at) AS first_seen,
    max(r.created_at) AS last_seen
FROM requests r
LEFT JOIN LATERAL (SELECT f.value FROM feedback f
    WHERE f.request_id = r.id AND f.metric = 'quality'
    ORDER BY f.created_at DESC, f.id DESC LIMIT 1) q ON true
WHERE r.route IS NOT NULL
GROUP BY 1, 2;

CREATE VIEW key_spend_hourly AS
SELECT date_trunc('hour', created_at) AS hour,
    COALESCE(api_key_id, '') AS api_key_id,
    COALESCE(tenant, '') AS tenant,
    count(*) AS requests,
    sum(cost_usd) AS cost_usd
FROM requests
GROUP BY 1, 2, 3;
