-- Scale-out (docs/scaling.md). SQLite is one process, so these tables stay
-- empty there; they exist to keep both schemas in step.

CREATE TABLE policy_deltas (
    pos          INTEGER NOT NULL UNIQUE,
    replica      TEXT NOT NULL,
    incarnation  TEXT NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq > 0),
    route        TEXT NOT NULL,
    epoch        TEXT NOT NULL,
    updates      INTEGER NOT NULL CHECK (updates >= 0),
    delta        BLOB NOT NULL,
    created_at   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (incarnation, seq, route)
);

CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    incarnation  TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at   TEXT,
    watermark    INTEGER NOT NULL DEFAULT 0,
    last_seq     INTEGER NOT NULL DEFAULT 0,
    unflushed    INTEGER NOT NULL DEFAULT 0,
    version      TEXT NOT NULL
);

ALTER TABLE policy_state ADD COLUMN watermark INTEGER NOT NULL DEFAULT 0;
ALTER TABLE policy_state ADD COLUMN epoch TEXT NOT NULL DEFAULT '';

CREATE TABLE budget_leases (
    key_id       TEXT NOT NULL,
    period       TEXT NOT NULL,
    granted_usd  REAL NOT NULL CHECK (granted_usd >= 0),
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (key_id, period)
);
