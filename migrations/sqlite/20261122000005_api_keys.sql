-- Virtual client keys. The key itself is never stored: only the SHA-256 of
-- the (high-entropy, random) key, and a short prefix for people to recognise it.
CREATE TABLE api_keys (
    id                    TEXT PRIMARY KEY,
    key_hash              TEXT NOT NULL UNIQUE,
    prefix                TEXT NOT NULL,
    name                  TEXT,
    tenant                TEXT,
    tier                  TEXT,
    allowed_routes        TEXT NOT NULL DEFAULT '[]',
    allowed_models        TEXT NOT NULL DEFAULT '[]',
    requests_per_minute   INTEGER CHECK (requests_per_minute IS NULL OR requests_per_minute > 0),
    tokens_per_minute     INTEGER CHECK (tokens_per_minute IS NULL OR tokens_per_minute > 0),
    budget_usd_per_day    REAL CHECK (budget_usd_per_day IS NULL OR budget_usd_per_day >= 0),
    budget_usd_per_month  REAL CHECK (budget_usd_per_month IS NULL OR budget_usd_per_month >= 0),
    created_at            TEXT NOT NULL,
    revoked_at            TEXT
);

-- Budgets sum a key's recorded costs over the current day and month.
CREATE INDEX requests_api_key_created_at ON requests (api_key_id, created_at);
