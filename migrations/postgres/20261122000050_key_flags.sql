-- Feature flags per client key: a JSON list of names that `[[rules]]`
-- (`match.flags`) and experiments (`key_flag`) can select on.
ALTER TABLE api_keys ADD COLUMN flags TEXT NOT NULL DEFAULT '[]';
