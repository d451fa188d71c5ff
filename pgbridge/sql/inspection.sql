-- The read-only statements of `pgbridge runs`, `events` and `stats`
-- (pgbridge/inspection.py, through pgbridge/store/inspection.py).
--
-- Runs and events are read through the views of revision 0005
-- (pgbridge/views_ddl.py, documented in docs/sql.md), so the commands show
-- exactly what the documented views show; each filter reaches a table index
-- through them. Nothing here takes a lock beyond the ACCESS SHARE of a read;
-- `events` and `stats` run in one read-only REPEATABLE READ transaction.


-- name: runs
-- The most recently active runs, newest first: open runs by their last activity
-- (pgbridge_runs.last_activity_at: the later of run_streams.updated_at and the
-- run's newest event), ended runs by their
-- end, each side read backwards and cut at $3 before the two are merged. With
-- each, what the view does not say of a Durable Stream (the columns of `run`):
-- the source it forks (fork_of, fork_seq), whether it was deleted while forks read
-- it (deleted: its URL answers 410) or expired (gone for every request).
-- $1 text: a status, or NULL for any; $2 float8: only runs active within this
-- many seconds, or NULL for all; $3 int: most runs.
-- Index: ended runs along run_streams_ended_idx (ended_at) WHERE ended_at IS NOT
-- NULL; open runs along run_streams_open_idx (run_id) WHERE terminal_seq IS NULL
-- (each with a backward step on the run_events primary key for its head, sorted
-- here by last activity: no index can cover it, it moves with every append);
-- then the primary key of run_streams for each run listed.
-- Locks: none.
SELECT recent.*, r.fork_source_run_id AS fork_of, r.fork_seq,
       r.stream_deleted_at IS NOT NULL AS deleted,
       (r.stream_deleted_at IS NULL AND (
           (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
           OR (r.stream_ttl_seconds IS NOT NULL
               AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
       )) AS expired
FROM (
    (SELECT *, last_activity_at AS active_at FROM {schema}.pgbridge_runs
     WHERE terminal_seq IS NULL AND ($1::text IS NULL OR status = $1)
       AND ($2::float8 IS NULL OR last_activity_at >= now() - make_interval(secs => $2::float8))
     ORDER BY last_activity_at DESC LIMIT $3)
    UNION ALL
    (SELECT *, ended_at AS active_at FROM {schema}.pgbridge_runs
     WHERE ended_at IS NOT NULL AND ($1::text IS NULL OR status = $1)
       AND ($2::float8 IS NULL OR ended_at >= now() - make_interval(secs => $2::float8))
     ORDER BY ended_at DESC LIMIT $3)
) AS recent
JOIN {schema}.run_streams AS r ON r.run_id = recent.run_id
ORDER BY recent.active_at DESC, recent.run_id
LIMIT $3;


-- name: run
-- One run as the pgbridge_runs view shows it, with what the view does not say of a
-- Durable Stream: fork_of and fork_seq (NULL but for a fork), deleted (soft-deleted
-- while forks read it: its URL answers 410), expired (past its Expires-At or idle
-- longer than its TTL: gone for every request); no row: no such run.
-- $1 text: run id.
-- Index: the primary keys of run_streams and (for the terminal event) run_events.
-- Locks: none.
SELECT v.*, r.fork_source_run_id AS fork_of, r.fork_seq,
       r.stream_deleted_at IS NOT NULL AS deleted,
       (r.stream_deleted_at IS NULL AND (
           (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
           OR (r.stream_ttl_seconds IS NOT NULL
               AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
       )) AS expired
FROM {schema}.pgbridge_runs AS v
JOIN {schema}.run_streams AS r ON r.run_id = v.run_id
WHERE v.run_id = $1;


-- name: fork_view
-- A fork's stitched view, as a read of its stream gives it (docs/durable-streams.md):
-- where it starts after what retention took from its chain (oldest_seq: the view
-- holds seqs oldest_seq + 1 .. the fork's last_seq), and the creation time of that
-- first event, in whichever run of the chain stores it (NULL: the view is empty).
-- $1 text: the fork's run id. No row: no such run.
-- Index: run_streams primary key (one lookup per run of the chain), run_events
-- primary key. Locks: none.
WITH RECURSIVE {fork_chain}
SELECT oldest.oldest_seq,
       (
           SELECT ev.created_ms
           FROM chain AS owner
           JOIN {schema}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = oldest.oldest_seq + 1
           WHERE oldest.oldest_seq + 1 > owner.lo
             AND (owner.hi IS NULL OR oldest.oldest_seq + 1 <= owner.hi)
       ) AS first_ms
FROM oldest;


-- name: fork_events_after
-- A fork's events after a seq, in seq order, as a read of its stream gives them:
-- its sources' events up to its fork point, then its own (the stitched view of
-- fragments.sql), with the columns of the pgbridge_events view; run_id is the
-- fork's, and an inherited event is never terminal (it ends nothing in the fork).
-- Read through a cursor, inside the snapshot that read the run.
-- $1 text: the fork's run id; $2 bigint: after this seq; $3 bigint: most events.
-- Index: run_streams primary key for each run of the chain, a range scan of the
-- run_events primary key per run. Locks: none.
WITH RECURSIVE {fork_chain},
{stitched_events}
SELECT $1::text AS run_id, st.seq, st.created_ms || '-' || st.seq AS event_id, st.event,
       st.data::text AS data, coalesce(st.seq = r.terminal_seq AND st.seq > r.fork_seq, false) AS terminal,
       st.created_ms, to_timestamp(st.created_ms / 1000.0) AS created_at
FROM stitched AS st
CROSS JOIN {schema}.run_streams AS r
WHERE r.run_id = $1
ORDER BY st.seq;


-- name: events_after
-- A run's events after a seq, in seq order, as the pgbridge_events view shows
-- them (read through a cursor, inside the snapshot that read the run).
-- $1 text: run id; $2 bigint: after this seq; $3 bigint: most events, or NULL for all.
-- Index: the primary key of run_events (run_id, seq), a range scan.
-- Locks: none.
SELECT run_id, seq, event_id, event, data::text AS data, terminal, created_ms, created_at
FROM {schema}.pgbridge_events
WHERE run_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3;


-- name: table_sizes
-- The on-disk size of tables of a schema, largest first. Row counts are the
-- statistics collector's live-row estimates (exact counts would scan).
-- $1 text: the schema name (unquoted); $2 text[]: table names.
-- Index: the catalogs' own. Locks: none.
SELECT c.relname::text AS name,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_relation_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       s.n_live_tup AS rows_estimate
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind = 'r'
ORDER BY total_bytes DESC, name;


-- name: runs_by_status
-- Runs and their events per status: exact event counts from each run's seqs,
-- with no scan of run_events. Only the statuses some run has, and `deleted` for
-- Durable Streams deleted while forks read them (their URL answers 410; their
-- events stay for the forks). Events are counted where they are stored: a fork's
-- inherited events count once, in its source.
-- No parameters.
-- Index: none (one pass over run_streams, one row per run), and a backward step on the run_events
-- primary key per run for its head (pgbridge_run_head). Locks: none.
SELECT CASE WHEN r.stream_deleted_at IS NOT NULL THEN 'deleted' ELSE r.status END AS status,
       count(*) AS runs,
       sum(h.last_seq - r.first_seq + 1)::bigint AS events_retained,
       sum(h.last_seq)::bigint AS events_published
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
GROUP BY 1;


-- name: oldest_retained_event
-- The oldest event any run retains: its run, ID and creation time; no row: none.
-- No parameters.
-- Index: run_streams_first_ms_idx (first_ms) WHERE first_ms IS NOT NULL (a run
-- that holds events has a first_ms), read from the oldest. Locks: none.
SELECT run_id, first_ms || '-' || first_seq AS event_id,
       to_timestamp(first_ms / 1000.0) AS created_at
FROM {schema}.run_streams
WHERE first_ms IS NOT NULL AND first_seq <= last_seq
ORDER BY first_ms
LIMIT 1;


-- name: last_retention_pass
-- The report of the schema's last retention pass (written by record_pass of
-- retention.sql), the policy as JSON text; no row: no pass recorded yet.
-- No parameters.
-- Index: none (a table of one row). Locks: none.
SELECT started_at, finished_at, events_deleted, runs_deleted, runs_dead_lettered,
       tables_vacuumed, policy::text AS policy, passes
FROM {schema}.retention_last_pass;


-- name: server_now
-- The database server's clock (the start of the transaction): when stats were read.
-- No parameters. Index: none. Locks: none.
SELECT now();
