-- Experiments and live controls (issue 5): which experiment and arm each
-- request was assigned to, shadow calls, counterfactual scoring of a
-- candidate policy; operator overlays that outlive a config reload and a
-- restart (disabled models, arms added to or retired from a route) and the
-- experiments themselves. Changes are announced on `switchboard_control`.

ALTER TABLE requests ADD COLUMN experiment TEXT;
-- 'control' | 'candidate' (acting experiments), 'shadow' (a mirrored call),
-- 'forced' (onboarding exploration of a new arm).
ALTER TABLE requests ADD COLUMN experiment_arm TEXT;
-- A mirrored call whose answer no client saw (never charged to a key).
ALTER TABLE requests ADD COLUMN shadow BOOLEAN NOT NULL DEFAULT 0;
-- For a shadow row: the request it mirrored.
ALTER TABLE requests ADD COLUMN shadow_of TEXT;
-- A shadow policy's view of this decision: {"experiment", "version",
-- "choice", "p_logged"} (its probability of the logged model).
ALTER TABLE requests ADD COLUMN counterfactual TEXT;
CREATE INDEX requests_experiment ON requests (experiment, created_at) WHERE experiment IS NOT NULL;
CREATE INDEX requests_shadow_of ON requests (shadow_of) WHERE shadow_of IS NOT NULL;

CREATE TABLE model_flags (
    model       TEXT PRIMARY KEY,
    disabled    BOOLEAN NOT NULL,
    reason      TEXT,
    updated_at  TEXT NOT NULL
);

CREATE TABLE experiments (
    name        TEXT PRIMARY KEY,
    route       TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('canary', 'ab', 'shadow', 'shadow_policy')),
    candidate   TEXT NOT NULL,
    share       REAL NOT NULL CHECK (share >= 0 AND share <= 1),
    sticky_by   TEXT,
    status      TEXT NOT NULL CHECK (status IN ('running', 'promoted', 'stopped', 'rolled_back')),
    -- 'config' rows hold only the status of a `[[experiments]]` entry.
    source      TEXT NOT NULL CHECK (source IN ('config', 'api')),
    params      TEXT,
    note        TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Arms changed on a live route: 'added' (onboarded or promoted), 'retiring'
-- (share annealed to zero over window_s from started_at), 'retired'.
CREATE TABLE route_arms (
    route          TEXT NOT NULL,
    model          TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('added', 'retiring', 'retired')),
    prior_quality  REAL CHECK (prior_quality IS NULL OR (prior_quality >= 0 AND prior_quality <= 1)),
    explore_quota  INTEGER CHECK (explore_quota IS NULL OR explore_quota >= 0),
    explore_share  REAL CHECK (explore_share IS NULL OR (explore_share >= 0 AND explore_share <= 1)),
    window_s       INTEGER CHECK (window_s IS NULL OR window_s >= 0),
    started_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (route, model)
);

-- Results per experiment and arm. Reward: the latest quality feedback
-- (`request_reward`), or 0 for a request that failed.
CREATE VIEW experiment_results AS
SELECT r.experiment, r.experiment_arm, r.route,
    count(*) AS requests,
    sum(r.status = 'error') AS errors,
    avg(r.cost_usd) AS mean_cost_usd,
    avg(r.latency_ms) AS mean_latency_ms,
    avg(COALESCE(q.reward, CASE WHEN r.status = 'error' THEN 0 END)) AS mean_reward,
    count(COALESCE(q.reward, CASE WHEN r.status = 'error' THEN 0 END)) AS rewarded,
    min(r.created_at) AS first_seen,
    max(r.created_at) AS last_seen
FROM requests r LEFT JOIN request_reward q ON q.request_id = r.id
WHERE r.experiment IS NOT NULL
GROUP BY 1, 2, 3;
