-- Revision 0005: inspection, the pgbridge_runs and pgbridge_events views, and retention_last_pass.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0005_inspection_views.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0005_inspection_views.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

CREATE TABLE __SCHEMA__.retention_last_pass (
    id SMALLINT DEFAULT 1 NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE NOT NULL,
    events_deleted BIGINT NOT NULL,
    runs_deleted BIGINT NOT NULL,
    runs_dead_lettered BIGINT NOT NULL,
    tables_vacuumed INTEGER NOT NULL,
    policy JSON NOT NULL,
    passes BIGINT DEFAULT 1 NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT retention_last_pass_one_row_check CHECK (id = 1)
);

-- The views over the log: history as plain SQL (every column documented in
-- docs/sql.md). pgbridge_runs: one row per run, its status, counts,
-- first/last/terminal event IDs in their public <ms>-<seq> form, times and
-- duration. pgbridge_events: one row per retained event, with its public ID
-- and its creation time as a timestamptz. Both are plain projections of the
-- tables (one primary-key lookup per run for the terminal event's name), so
-- a filter on run_id, seq, terminal_seq, last_activity_at or ended_at
-- reaches the tables' indexes through them. to_timestamp(ms / 1000.0) is
-- exact to the microsecond for any ms a bigint holds in this century.
CREATE OR REPLACE VIEW __SCHEMA__.pgbridge_runs AS
SELECT
    r.run_id,
    r.status,
    t.event AS terminal_event,
    r.status = 'awaiting_input' AS awaiting_input,
    r.last_seq AS events_published,
    r.last_seq - r.first_seq + 1 AS events_retained,
    r.first_seq - 1 AS events_deleted,
    r.first_seq,
    r.last_seq,
    r.terminal_seq,
    CASE WHEN r.first_seq <= r.last_seq THEN r.first_ms || '-' || r.first_seq END AS first_event_id,
    CASE WHEN r.first_seq <= r.last_seq THEN r.last_ms || '-' || r.last_seq END AS last_event_id,
    CASE WHEN r.terminal_seq IS NOT NULL THEN r.last_ms || '-' || r.terminal_seq END
        AS terminal_event_id,
    r.created_at AS started_at,
    to_timestamp(r.last_ms / 1000.0) AS last_event_at,
    r.updated_at AS last_activity_at,
    r.awaiting_input_since,
    r.ended_at,
    coalesce(r.ended_at, now()) - r.created_at AS duration
FROM __SCHEMA__.run_streams AS r
LEFT JOIN __SCHEMA__.run_events AS t ON t.run_id = r.run_id AND t.seq = r.terminal_seq;

CREATE OR REPLACE VIEW __SCHEMA__.pgbridge_events AS
SELECT
    e.run_id,
    e.seq,
    e.created_ms || '-' || e.seq AS event_id,
    e.event,
    e.data,
    e.terminal,
    e.created_ms,
    to_timestamp(e.created_ms / 1000.0) AS created_at
FROM __SCHEMA__.run_events AS e;

-- migrate:downgrade

DROP VIEW IF EXISTS __SCHEMA__.pgbridge_events;

DROP VIEW IF EXISTS __SCHEMA__.pgbridge_runs;

DROP TABLE __SCHEMA__.retention_last_pass;
