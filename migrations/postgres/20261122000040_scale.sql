-- Scale-out (docs/scaling.md): replicas ship additive deltas of their learned
-- statistics through `policy_deltas`, announce themselves in `replicas`, keep
-- a compacted checkpoint in `policy_state`, and share key budgets through
-- `budget_leases`.

-- The global order of deltas. A position is drawn under a transaction-level
-- advisory lock that is held until commit, so positions become visible in
-- order: a reader that sees position p has seen every lower one.
CREATE SEQUENCE policy_delta_pos;

CREATE TABLE policy_deltas (
    pos          BIGINT NOT NULL UNIQUE,
    replica      TEXT NOT NULL,
    -- One per process start: with `seq` it makes a retried flush a no-op.
    incarnation  TEXT NOT NULL,
    seq          BIGINT NOT NULL CHECK (seq > 0),
    route        TEXT NOT NULL,
    -- The label of the policy the delta was learned on ('' = online).
    epoch        TEXT NOT NULL,
    updates      BIGINT NOT NULL CHECK (updates >= 0),
    -- CBOR of `bandit::PolicyDelta` (bit-exact floats).
    delta        BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (incarnation, seq, route)
);

CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    incarnation  TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    -- Written with the database's clock, so liveness needs no clock sync.
    heartbeat_at TIMESTAMPTZ NOT NULL,
    stopped_at   TIMESTAMPTZ,
    -- Every delta at or below this position is merged by the replica.
    watermark    BIGINT NOT NULL DEFAULT 0,
    last_seq     BIGINT NOT NULL DEFAULT 0,
    -- Learning updates applied locally and not yet shipped.
    unflushed    BIGINT NOT NULL DEFAULT 0,
    version      TEXT NOT NULL
);

-- With scale-out on, `policy_state` holds the merged state of every delta
-- up to `watermark` (learned on the policy labelled `epoch`).
ALTER TABLE policy_state ADD COLUMN watermark BIGINT NOT NULL DEFAULT 0;
ALTER TABLE policy_state ADD COLUMN epoch TEXT NOT NULL DEFAULT '';

-- A key's budget per period, handed out to replicas in leases: the sum of
-- what was granted never exceeds the budget.
CREATE TABLE budget_leases (
    key_id       TEXT NOT NULL,
    -- 'day:YYYY-MM-DD' or 'month:YYYY-MM' (UTC)
    period       TEXT NOT NULL,
    granted_usd  DOUBLE PRECISION NOT NULL CHECK (granted_usd >= 0),
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key_id, period)
);
