-- The online learner's live state per route, saved periodically and on
-- shutdown so that a restart resumes where it stopped.
CREATE TABLE policy_state (
    route       TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    snapshot    TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
