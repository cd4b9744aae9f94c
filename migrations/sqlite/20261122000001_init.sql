-- One row per request the router served (or refused after routing).
CREATE TABLE requests (
    id                      TEXT PRIMARY KEY,
    created_at              TEXT NOT NULL,
    api_key_id              TEXT,
    tenant                  TEXT,
    route                   TEXT,
    tier                    TEXT,
    user_id                 TEXT,
    requested_model         TEXT NOT NULL,
    model                   TEXT,
    provider                TEXT,
    eligible_models         TEXT NOT NULL DEFAULT '[]',
    policy_version          TEXT,
    propensity              REAL CHECK (propensity IS NULL OR (propensity > 0 AND propensity <= 1)),
    features                TEXT,
    decision                TEXT,
    stream                  BOOLEAN NOT NULL,
    prompt_tokens           INTEGER CHECK (prompt_tokens IS NULL OR prompt_tokens >= 0),
    completion_tokens       INTEGER CHECK (completion_tokens IS NULL OR completion_tokens >= 0),
    tokens_counted_locally  BOOLEAN NOT NULL DEFAULT FALSE,
    cost_usd                REAL NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    latency_ms              REAL NOT NULL CHECK (latency_ms >= 0),
    ttft_ms                 REAL CHECK (ttft_ms IS NULL OR ttft_ms >= 0),
    status                  TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    status_code             INTEGER NOT NULL,
    error_kind              TEXT,
    fallback_chain          TEXT NOT NULL DEFAULT '[]',
    attempts                INTEGER NOT NULL DEFAULT 0,
    cache_hit               BOOLEAN NOT NULL DEFAULT FALSE,
    tags                    TEXT
);
CREATE INDEX requests_created_at ON requests (created_at);
CREATE INDEX requests_route_created_at ON requests (route, created_at);
CREATE INDEX requests_model_created_at ON requests (model, created_at);

-- Quality feedback; several rows per request are allowed (latest per metric wins).
CREATE TABLE feedback (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    metric       TEXT NOT NULL,
    value        REAL NOT NULL CHECK (value >= 0 AND value <= 1),
    source       TEXT,
    comment      TEXT,
    feedback_id  TEXT UNIQUE
);
CREATE INDEX feedback_request_id ON feedback (request_id, metric, created_at);

-- Every policy version the router ever served or considered.
CREATE TABLE policy_snapshots (
    version      TEXT PRIMARY KEY,
    route        TEXT NOT NULL,
    algorithm    TEXT NOT NULL,
    parameters   TEXT NOT NULL,
    metrics      TEXT,
    status       TEXT NOT NULL CHECK (status IN ('candidate', 'active', 'retired')),
    parent       TEXT,
    created_at   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX policy_snapshots_route ON policy_snapshots (route, created_at);
