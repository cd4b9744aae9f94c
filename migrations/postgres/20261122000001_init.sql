-- One row per request the router served (or refused after routing).
CREATE TABLE requests (
    id                      TEXT PRIMARY KEY,
    created_at              TIMESTAMPTZ NOT NULL,
    api_key_id              TEXT,
    tenant                  TEXT,
    route                   TEXT,
    tier                    TEXT,
    user_id                 TEXT,
    requested_model         TEXT NOT NULL,
    model                   TEXT,
    provider                TEXT,
    eligible_models         JSONB NOT NULL DEFAULT '[]',
    policy_version          TEXT,
    propensity              DOUBLE PRECISION CHECK (propensity IS NULL OR (propensity > 0 AND propensity <= 1)),
    features                JSONB,
    decision                JSONB,
    stream                  BOOLEAN NOT NULL,
    prompt_tokens           INTEGER CHECK (prompt_tokens IS NULL OR prompt_tokens >= 0),
    completion_tokens       INTEGER CHECK (completion_tokens IS NULL OR completion_tokens >= 0),
    tokens_counted_locally  BOOLEAN NOT NULL DEFAULT FALSE,
    cost_usd                DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    latency_ms              DOUBLE PRECISION NOT NULL CHECK (latency_ms >= 0),
    ttft_ms                 DOUBLE PRECISION CHECK (ttft_ms IS NULL OR ttft_ms >= 0),
    status                  TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    status_code             INTEGER NOT NULL,
    error_kind              TEXT,
    fallback_chain          JSONB NOT NULL DEFAULT '[]',
    attempts                INTEGER NOT NULL DEFAULT 0,
    cache_hit               BOOLEAN NOT NULL DEFAULT FALSE,
    tags                    JSONB
);
CREATE INDEX requests_created_at ON requests (created_at);
CREATE INDEX requests_route_created_at ON requests (route, created_at);
CREATE INDEX requests_model_created_at ON requests (model, created_at);

-- Quality feedback; several rows per request are allowed (latest per metric wins).
CREATE TABLE feedback (
    id           BIGSERIAL PRIMARY KEY,
    request_id   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    metric       TEXT NOT NULL,
    value        DOUBLE PRECISION NOT NULL CHECK (value >= 0 AND value <= 1),
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
    parameters   JSONB NOT NULL,
    metrics      JSONB,
    status       TEXT NOT NULL CHECK (status IN ('candidate', 'active', 'retired')),
    parent       TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX policy_snapshots_route ON policy_snapshots (route, created_at);
