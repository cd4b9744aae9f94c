-- `requests` becomes a table partitioned by month on `created_at`
-- (docs/operations.md, "Retention and partitions"), so that old months are
-- dropped whole by the retention setting and time-bounded queries read only
-- the months they cover.
--
-- The primary key must contain the partition column: it is now
-- (id, created_at). Lookups by id alone still use it (its leading column),
-- one index probe per month kept. `requests_default` catches rows outside
-- the months created (clock skew, imports of old history); the maintenance
-- function below moves them into their month when that month is created.
--
-- The conversion copies the table once, then re-creates on the new table
-- whatever was defined on the old one: its indexes, its statement triggers
-- (the dashboards' rollups, created after the copy so the copied rows are
-- not counted twice) and the views that read it, whichever migration
-- defined them.

ALTER TABLE requests RENAME TO requests_unpartitioned;
ALTER TABLE requests_unpartitioned RENAME CONSTRAINT requests_pkey TO requests_unpartitioned_pkey;

-- Views reading `requests`, directly or through other views, with their
-- definitions (taken while they still name it) and depth.
CREATE TEMP TABLE sb_saved_views ON COMMIT DROP AS
WITH RECURSIVE deps(oid, depth) AS (
    SELECT DISTINCT r.ev_class, 1
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.refobjid = 'requests_unpartitioned'::regclass
      AND r.ev_class <> 'requests_unpartitioned'::regclass
    UNION
    SELECT DISTINCT r.ev_class, deps.depth + 1
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN deps ON d.refobjid = deps.oid
    WHERE r.ev_class <> deps.oid
)
SELECT c.oid::regclass::text AS name,
    replace(pg_get_viewdef(c.oid), 'requests_unpartitioned', 'requests') AS def,
    max(deps.depth) AS depth
FROM deps JOIN pg_class c ON c.oid = deps.oid
WHERE c.relkind = 'v'
GROUP BY c.oid;

CREATE TEMP TABLE sb_saved_indexes ON COMMIT DROP AS
SELECT indexname AS name, indexdef AS def
FROM pg_indexes
WHERE schemaname = current_schema() AND tablename = 'requests_unpartitioned'
  AND indexname <> 'requests_unpartitioned_pkey';

CREATE TEMP TABLE sb_saved_triggers ON COMMIT DROP AS
SELECT tgname AS name, pg_get_triggerdef(oid) AS def
FROM pg_trigger
WHERE tgrelid = 'requests_unpartitioned'::regclass AND NOT tgisinternal;

DO $$
DECLARE v record;
BEGIN
    FOR v IN SELECT name FROM sb_saved_views ORDER BY depth DESC LOOP
        EXECUTE 'DROP VIEW ' || v.name;
    END LOOP;
END $$;

CREATE TABLE requests (
    LIKE requests_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE requests_default PARTITION OF requests DEFAULT;

-- Creates the monthly partitions covering [from_ts, to_ts) that are
-- missing, moving any rows the default partition holds for those months
-- into them (inserted into the new table before it is attached, so no
-- trigger counts them again). Idempotent; serialised by an advisory lock so
-- replicas may all call it.
CREATE FUNCTION sb_ensure_request_partitions(from_ts TIMESTAMPTZ, to_ts TIMESTAMPTZ)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    -- Month arithmetic on UTC wall time, whatever the session's time zone.
    m TIMESTAMP := date_trunc('month', from_ts AT TIME ZONE 'UTC');
    lo TIMESTAMPTZ;
    hi TIMESTAMPTZ;
    name TEXT;
    created INTEGER := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(7309737506893541938);
    WHILE m AT TIME ZONE 'UTC' < to_ts LOOP
        name := 'requests_p' || to_char(m, 'YYYY_MM');
        lo := m AT TIME ZONE 'UTC';
        hi := (m + interval '1 month') AT TIME ZONE 'UTC';
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE requests INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format('WITH moved AS (DELETE FROM requests_default WHERE created_at >= %L AND created_at < %L RETURNING *) '
                || 'INSERT INTO %I SELECT * FROM moved', lo, hi, name);
            EXECUTE format('ALTER TABLE requests ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                name, lo, hi);
            created := created + 1;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

-- Drops the monthly partitions that end at or before `cutoff`; returns
-- their names. (Rows of a later month older than the cutoff are deleted by
-- the caller, which prunes to that one month.)
CREATE FUNCTION sb_drop_request_partitions_before(cutoff TIMESTAMPTZ)
RETURNS SETOF TEXT LANGUAGE plpgsql AS $$
DECLARE p record;
BEGIN
    PERFORM pg_advisory_xact_lock(7309737506893541938);
    FOR p IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'requests'::regclass AND c.relname ~ '^requests_p[0-9]{4}_[0-9]{2}$'
        ORDER BY c.relname
    LOOP
        -- requests_pYYYY_MM ends at the first instant of the next month (UTC).
        IF (make_timestamp(substr(p.relname, 11, 4)::INT, substr(p.relname, 16, 2)::INT, 1, 0, 0, 0)
                + interval '1 month') AT TIME ZONE 'UTC' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', p.relname);
            RETURN NEXT p.relname;
        END IF;
    END LOOP;
END $$;

-- Months of the stored history, and two ahead of today.
SELECT sb_ensure_request_partitions(
    COALESCE((SELECT min(created_at) FROM requests_unpartitioned), now()),
    now() + interval '2 months');

INSERT INTO requests SELECT * FROM requests_unpartitioned;

DO $$
DECLARE v record;
BEGIN
    FOR v IN SELECT name, def FROM sb_saved_indexes LOOP
        EXECUTE format('DROP INDEX %I', v.name);
        EXECUTE replace(v.def, ' ON ' || current_schema() || '.requests_unpartitioned ',
            ' ON ' || current_schema() || '.requests ');
    END LOOP;
    FOR v IN SELECT name, def FROM sb_saved_triggers LOOP
        EXECUTE format('DROP TRIGGER %I ON requests_unpartitioned', v.name);
        EXECUTE replace(v.def, ' ON ' || current_schema() || '.requests_unpartitioned ',
            ' ON ' || current_schema() || '.requests ');
    END LOOP;
    FOR v IN SELECT name, def FROM sb_saved_views ORDER BY depth LOOP
        EXECUTE format('CREATE VIEW %s AS %s', v.name, v.def);
    END LOOP;
END $$;

DROP TABLE requests_unpartitioned;

-- Retention deletes feedback by age.
CREATE INDEX feedback_created_at ON feedback (created_at);
