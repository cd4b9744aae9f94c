-- The feedback rollup trigger looked up each request's previous quality
-- feedback as a set (`request_id IN (new rows) AND id NOT IN (new rows)`).
-- Inside the trigger that plan is cached, and with the transition table's
-- generic estimate Postgres chose a sequential scan of `feedback`: every
-- batch read the whole table, so writes slowed down as it grew (~500 ms per
-- 500-row batch after ~30 k rows). Now each new feedback's request is probed
-- through the (request_id, metric, created_at) index, newest first, one row:
-- linear in the batch, independent of the table's size.
CREATE OR REPLACE FUNCTION rollup_feedback() RETURNS trigger LANGUAGE plpgsql AS $$
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
        -- The latest quality feedback stored before this statement.
        LEFT JOIN LATERAL (SELECT f.value, f.created_at, f.id
              FROM feedback f
              WHERE f.request_id = nl.request_id AND f.metric = 'quality'
                AND f.id NOT IN (SELECT id FROM new_rows)
              ORDER BY f.created_at DESC, f.id DESC
              LIMIT 1) p ON true
    ) d
    JOIN requests r ON r.id = d.request_id
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET
        rewarded = t.rewarded + excluded.rewarded,
        reward_sum = t.reward_sum + excluded.reward_sum;
    RETURN NULL;
END $$;
