-- Errors per hour, model and kind (see the Postgres migration of the same
-- name); '' stands for NULL in the key.
CREATE TABLE rollup_errors_hourly (
    hour        INTEGER NOT NULL,
    model       TEXT NOT NULL,
    error_kind  TEXT NOT NULL,
    requests    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, model, error_kind)
);

INSERT INTO rollup_errors_hourly (hour, model, error_kind, requests)
SELECT CAST(strftime('%s', created_at) AS INTEGER) / 3600 * 3600, COALESCE(model, ''),
    COALESCE(error_kind, ''), count(*)
FROM requests WHERE status = 'error' GROUP BY 1, 2, 3;

CREATE TRIGGER requests_rollup_errors AFTER INSERT ON requests WHEN NEW.status = 'error' BEGIN
    INSERT INTO rollup_errors_hourly (hour, model, error_kind, requests)
    VALUES (CAST(strftime('%s', NEW.created_at) AS INTEGER) / 3600 * 3600,
        COALESCE(NEW.model, ''), COALESCE(NEW.error_kind, ''), 1)
    ON CONFLICT (hour, model, error_kind) DO UPDATE SET requests = requests + 1;
END;
