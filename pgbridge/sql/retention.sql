-- The statements of a retention pass (docs/behaviour.md §8, docs/retention.md;
-- run by pgbridge/store/retention.py for pgbridge/retention/sweep.py).
--
-- A pass holds the advisory lock of its schema (try_lock .. unlock) on one
-- server session for its whole length, across many short transactions. Each
-- candidate scan matches one partial index of pgbridge/schema.py, so it reads
-- the rows it acts on and no others. Deleting a prefix of runs' events takes
-- one transaction of two statements: lock the run rows (lock_runs, or
-- lock_expired_runs), then trim_run_prefixes; the row locks make the second
-- statement's snapshot see every committed append, so first_ms is right.
-- Times are the server's clock, like every other time in pgbridge: "now in
-- Unix ms" is floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint.
-- A run's head (newest seq, its time and hash) is read with pgbridge_run_head
-- (revision 0012: appends leave an open run's row alone; an ended run's row is
-- exact), and its last activity is the later of its row's last write
-- (updated_at) and its newest event's time.


-- name: try_lock
-- Take the pass lock of a schema if it is free: true when taken. One lock per
-- schema, across every process (a session-level advisory lock, held until unlock
-- or the end of the session). The key text 'pgbridge.retention:' is fixed: every
-- pgbridge version must compute the same key.
-- $1 text: the schema name (unquoted).
-- Index: none. Locks: pg_try_advisory_lock on the key; never waits.
SELECT pg_try_advisory_lock(hashtextextended('pgbridge.retention:' || $1::text, 0));


-- name: unlock
-- Release the pass lock taken by try_lock: true when this session held it.
-- $1 text: the schema name (unquoted), as given to try_lock.
-- Index: none. Locks: releases the advisory lock of try_lock.
SELECT pg_advisory_unlock(hashtextextended('pgbridge.retention:' || $1::text, 0));


-- name: lock_stale_runs
-- The reaper's first statement (its transaction's): lock up to $3 bridge-born
-- open runs with no publish or mark_awaiting_input for longer than their
-- timeout, oldest activity first; dead_letter_runs then ends them. Returns their
-- run ids.
-- $1 float8: active timeout (s); $2 float8: awaiting-input timeout (s);
-- $3 int: most runs.
-- Index: run_streams_open_idx (run_id) WHERE terminal_seq IS NULL: every open
-- run, each with a backward step on the run_events primary key for its head,
-- sorted here by last activity (no index can cover it: it moves with every
-- append). Locks: the chosen run rows FOR UPDATE SKIP LOCKED, held until the
-- transaction ends: SKIP LOCKED leaves a run being written to alone, and a
-- publisher that comes later waits for the reaper's commit (then finds the run
-- ended).
SELECT r.run_id FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.terminal_seq IS NULL AND r.content_type IS NULL
  AND greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0))
      < now() - make_interval(secs => least($1::float8, $2::float8))
  AND greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)) < now() - make_interval(
      secs => CASE WHEN r.status = 'awaiting_input' THEN $2::float8 ELSE $1::float8 END)
ORDER BY greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0))
LIMIT $3::int
FOR UPDATE OF r SKIP LOCKED;


-- name: dead_letter_runs
-- The reaper's second statement, in the transaction of lock_stale_runs: append a
-- terminal dead_letter event (status errored) to each run it locked that is
-- still silent. This statement reads each run's head after the locks were
-- taken, so it sees every committed append: a publish that committed between
-- the two statements keeps its run open. The terminal is appended like any
-- other: the next seq, the hash chained (pgbridge_link_hash, from the genesis
-- hash pgbridge.audit.chain.GENESIS, 32 zero bytes, for a run with no event
-- yet), its time from the fragment event_ms, the event inserted and the run row
-- written (its head, status, terminal_seq). Returns (run_id, seq) of each
-- dead letter.
-- $1 text[]: run ids (locked by lock_stale_runs); $2 float8: active timeout
-- (s); $3 float8: awaiting-input timeout (s).
-- Index: the primary keys of run_streams and run_events.
-- Locks: the run rows, already held; the new event rows.
WITH stamp AS (SELECT {event_ms} AS ms),
letter AS (
    SELECT r.run_id, h.last_seq, h.last_hash, json_build_object(
        'reason', 'no publish or mark_awaiting_input within the timeout; '
                  'the worker is presumed gone',
        'status', r.status,
        'last_activity', greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)),
        'timeout_seconds',
        CASE WHEN r.status = 'awaiting_input' THEN $3::float8 ELSE $2::float8 END
    )::text AS data
    FROM {schema}.run_streams AS r
    CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
    WHERE r.run_id = ANY($1::text[]) AND r.terminal_seq IS NULL AND r.content_type IS NULL
      AND greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)) < now() - make_interval(
          secs => CASE WHEN r.status = 'awaiting_input' THEN $3::float8 ELSE $2::float8 END)
),
run AS (
    UPDATE {schema}.run_streams AS r SET
        last_seq = letter.last_seq + 1,
        last_ms = stamp.ms,
        first_ms = CASE WHEN r.first_seq > letter.last_seq THEN stamp.ms ELSE r.first_ms END,
        status = 'errored',
        terminal_seq = letter.last_seq + 1,
        ended_at = now(),
        awaiting_input_since = NULL,
        updated_at = now(),
        last_hash = {schema}.pgbridge_link_hash(
            coalesce(letter.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea),
            r.run_id, letter.last_seq + 1, stamp.ms, 'dead_letter', letter.data)
    FROM letter, stamp
    WHERE r.run_id = letter.run_id
    RETURNING r.run_id, r.last_seq, r.last_ms, r.last_hash, letter.data
)
INSERT INTO {schema}.run_events (run_id, seq, created_ms, event, data, terminal, hash)
SELECT run_id, last_seq, last_ms, 'dead_letter', data::json, true, last_hash
FROM run
RETURNING run_id, seq;


-- name: runs_over_max_events
-- Candidates of max_events_per_run: runs holding more than $2 events, with
-- (run_id, through): delete their seqs up to and including through. A run that
-- forks read (fork_refs > 0) keeps its events.
-- $1 int: most runs; $2 bigint: keep at most this many events per run.
-- Index: open runs along run_streams_open_idx (run_id) WHERE terminal_seq IS
-- NULL, their count from the row and their head (a backward step on the
-- run_events primary key); ended runs (whose last_seq is their terminal_seq)
-- along run_streams_retained_count_idx ((terminal_seq - first_seq)) WHERE
-- terminal_seq >= first_seq. Locks: none (lock_runs re-checks under the row
-- lock).
(SELECT r.run_id, h.last_seq - $2 AS through FROM {schema}.run_streams AS r
 CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
 WHERE r.terminal_seq IS NULL AND r.first_seq <= h.last_seq AND (h.last_seq - r.first_seq) >= $2
   AND r.fork_refs = 0
 LIMIT $1)
UNION ALL
(SELECT run_id, last_seq - $2 AS through FROM {schema}.run_streams
 WHERE terminal_seq >= first_seq AND (terminal_seq - first_seq) >= $2 AND fork_refs = 0
 LIMIT $1)
LIMIT $1;


-- name: runs_with_events_older_than
-- Candidates of max_event_age: runs whose oldest retained event is older than
-- $2 seconds, with (run_id, through). Walks each run forward from its first
-- retained event to the first one young enough (at most $3 events), so the cost
-- is what it deletes, plus one row.
-- $1 int: most runs; $2 float8: age (s); $3 bigint: most events to look at per run.
-- Index: run_streams_first_ms_idx (first_ms) WHERE first_ms IS NOT NULL, oldest
-- first (a run that holds events has a first_ms); each walk along the primary
-- key (run_id, seq) of run_events, and a backward step on it for the head.
-- Locks: none (lock_runs re-checks under the row lock).
WITH cutoff AS (
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - ($2::float8 * 1000)::bigint AS ms
)
SELECT r.run_id, coalesce(
    (SELECT e.seq - 1 FROM {schema}.run_events AS e
     WHERE e.run_id = r.run_id AND e.seq >= r.first_seq
       AND e.seq < r.first_seq + $3 AND e.created_ms >= cutoff.ms
     ORDER BY e.seq LIMIT 1),
    least(h.last_seq, r.first_seq + $3 - 1)) AS through
FROM {schema}.run_streams AS r
CROSS JOIN cutoff
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.first_seq <= h.last_seq AND r.first_ms < cutoff.ms AND r.fork_refs = 0
ORDER BY r.first_ms
LIMIT $1;


-- name: ended_runs_with_events
-- Candidates of ended_run_ttl: runs that ended more than $2 seconds ago and still
-- hold events, with (run_id, through = last_seq): all of their events go.
-- $1 int: most runs; $2 float8: seconds since the run ended.
-- Index: run_streams_ended_retained_idx (ended_at) WHERE terminal_seq >=
-- first_seq (an ended run's last_seq is its terminal_seq), oldest end first.
-- Locks: none (lock_runs re-checks).
SELECT run_id, last_seq AS through FROM {schema}.run_streams
WHERE ended_at IS NOT NULL AND terminal_seq >= first_seq AND first_seq <= last_seq AND fork_refs = 0
  AND ended_at < now() - make_interval(secs => $2::float8)
ORDER BY ended_at
LIMIT $1;


-- name: lock_runs
-- The first statement of a trim's transaction: lock the candidate runs and read
-- their retained range. A run that forks read (fork_refs > 0, re-checked under
-- the lock: a fork's creation updates it) keeps its events and is not returned.
-- The head is as of this statement's snapshot (an append that committed while
-- it waited for a lock is not in it): a trim may take less than it could, never
-- more (trim_run_prefixes reads the head again).
-- $1 text[]: run ids.
-- Index: the primary key of run_streams, a backward step on run_events' for the
-- head. Locks: the run rows FOR UPDATE, in run_id order, so two lockers never
-- deadlock; held until the transaction ends.
SELECT r.run_id, r.first_seq, h.last_seq FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = ANY($1::text[]) AND r.fork_refs = 0
ORDER BY r.run_id
FOR UPDATE OF r;


-- name: trim_run_prefixes
-- The second statement of a trim's transaction: delete each run's events from
-- its first_seq through a seq, with the trim function of revision 0003 (the one
-- way events leave the append-only table), which moves first_seq, first_ms and
-- trimmed_hash in the same statement as the deletes. Returns how many events it
-- deleted.
-- $1 text[]: run ids (locked by lock_runs or lock_expired_runs in this
-- transaction); $2 bigint[]: their first_seq as locked; $3 bigint[]: delete
-- through these seqs.
-- Index: the primary keys of run_streams and run_events (run_id, seq).
-- Locks: the run rows, already held; the deleted event rows.
SELECT {schema}.pgbridge_trim_run_prefixes($1::text[], $2::bigint[], $3::bigint[]);


-- name: delete_tombstones
-- Delete up to $2 tombstones (ended runs whose events are all gone) more than
-- $1 seconds after their end, each through pgbridge_delete_stream (revision
-- 0009), as a DELETE would: a fork's tombstone releases its source, and a
-- soft-deleted source whose last fork it was goes too. Each run row deleted is
-- recorded in run_deletions with via 'retention'. One row per run row
-- deleted: (run_id, events_deleted, tombstone), tombstone marking the rows this
-- scan chose (the batch count), events_deleted those of a source that went too.
-- $1 float8: seconds after the end; $2 int: most tombstones.
-- Index: run_streams_ended_idx (ended_at) WHERE ended_at IS NOT NULL, oldest end
-- first. Locks: the tombstones FOR UPDATE SKIP LOCKED (rows another pass or a
-- request holds are left alone); pgbridge_delete_stream locks a released source.
SELECT d.run_id, d.events_deleted, d.run_id = t.run_id AS tombstone
FROM (
    SELECT run_id, ended_at FROM {schema}.run_streams
    WHERE ended_at IS NOT NULL AND first_seq > last_seq AND fork_refs = 0
      AND ended_at < now() - make_interval(secs => $1::float8)
    ORDER BY ended_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) AS t
CROSS JOIN LATERAL {schema}.pgbridge_delete_stream(t.run_id, 'retention') AS d
ORDER BY t.ended_at;


-- name: expired_streams_with_events
-- The sweep of expired Durable Streams starts here: a stream past its Expires-At,
-- or idle for longer than its TTL, is gone for every request, and the pass removes
-- it as a DELETE would. Each of its scans reads the streams with a TTL or an
-- Expires-At, not every run. This one: candidates of the sweep's trims, expired
-- streams no fork reads that still hold
-- events, with (run_id, through = last_seq); deleted through the trims, a bounded
-- batch at a time.
-- $1 int: most runs.
-- Index: run_streams_expiring_idx (run_id) WHERE stream_expires_at IS NOT NULL OR
-- stream_ttl_seconds IS NOT NULL (revision 0008), in run_id order, a backward
-- step on the run_events primary key for each one's head.
-- Locks: none (lock_expired_runs re-checks under the row lock).
SELECT r.run_id, h.last_seq AS through FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE (r.stream_expires_at IS NOT NULL OR r.stream_ttl_seconds IS NOT NULL)
  AND r.stream_deleted_at IS NULL AND r.fork_refs = 0
  AND r.first_seq <= h.last_seq
  AND (
      (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
      OR (r.stream_ttl_seconds IS NOT NULL
          AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
  )
ORDER BY r.run_id
LIMIT $1;


-- name: lock_expired_runs
-- lock_runs for the sweep's trims: the first statement of their transaction,
-- re-checking the expiry under the lock (a stream touched meanwhile keeps its
-- events) and that no fork reads it.
-- $1 text[]: run ids.
-- Index: the primary key of run_streams, a backward step on run_events' for the
-- head (as of this statement's snapshot, as in lock_runs). Locks: the run rows
-- FOR UPDATE, in run_id order (no deadlock between lockers); held until the
-- transaction ends.
SELECT r.run_id, r.first_seq, h.last_seq FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = ANY($1::text[]) AND r.fork_refs = 0 AND r.stream_deleted_at IS NULL
  AND (
      (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
      OR (r.stream_ttl_seconds IS NOT NULL
          AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
  )
ORDER BY r.run_id
FOR UPDATE OF r;


-- name: lock_expired_streams
-- The first statement of a removal's transaction: lock up to $1 expired streams
-- (not yet soft-deleted), with (run_id, first_seq, fork_refs); those forks read are
-- then soft-deleted (soft_delete_streams), the others deleted (delete_streams).
-- $1 int: most streams.
-- Index: run_streams_expiring_idx (run_id) WHERE stream_expires_at IS NOT NULL OR
-- stream_ttl_seconds IS NOT NULL (revision 0008), in run_id order.
-- Locks: the stream rows FOR UPDATE SKIP LOCKED (a stream a request holds is left
-- alone: the request itself treats it as gone); held until the transaction ends.
SELECT r.run_id, r.first_seq, r.fork_refs FROM {schema}.run_streams AS r
WHERE (r.stream_expires_at IS NOT NULL OR r.stream_ttl_seconds IS NOT NULL)
  AND r.stream_deleted_at IS NULL
  AND (
      (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
      OR (r.stream_ttl_seconds IS NOT NULL
          AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
  )
ORDER BY r.run_id
LIMIT $1
FOR UPDATE SKIP LOCKED;


-- name: soft_delete_streams
-- Soft-delete expired streams that forks still read, as a DELETE does: their
-- events stay for the forks, their URL answers 410.
-- $1 text[]: run ids, locked by lock_expired_streams in this transaction.
-- Index: the primary key of run_streams. Locks: the rows, already held.
UPDATE {schema}.run_streams SET stream_deleted_at = now()
WHERE run_id = ANY($1::text[]) AND stream_deleted_at IS NULL;


-- name: delete_streams
-- Delete expired streams no fork reads, as a DELETE does, through revision 0009's
-- pgbridge_delete_stream: events (the trim function), the deletion's record in
-- run_deletions (via 'expiry'), row, then the source's fork_refs, up the chain. One
-- row per run row deleted: (run_id, last_seq, events_deleted), in the order of $1.
-- $1 text[]: run ids, locked by lock_expired_streams in this transaction.
-- Index: the primary keys of run_streams and run_events.
-- Locks: the rows, already held; pgbridge_delete_stream locks a released source.
SELECT d.run_id, d.last_seq, d.events_deleted
FROM unnest($1::text[]) WITH ORDINALITY AS x(id, ord)
CROSS JOIN LATERAL {schema}.pgbridge_delete_stream(x.id, 'expiry') AS d
ORDER BY x.ord;


-- name: tables_due_for_vacuum
-- The tables (run_events, run_streams) autovacuum will not clean (switched off for
-- the server or the table) whose dead rows passed autovacuum's own threshold.
-- $1 text: the schema name (unquoted).
-- Index: the catalogs' own. Locks: none.
SELECT c.relname::text AS table_name
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE n.nspname = $1 AND c.relname IN ('run_events', 'run_streams')
  AND NOT (
      current_setting('autovacuum')::boolean
      AND coalesce((SELECT o.option_value::boolean
                    FROM pg_options_to_table(c.reloptions) AS o
                    WHERE o.option_name = 'autovacuum_enabled'), true)
  )
  AND s.n_dead_tup > current_setting('autovacuum_vacuum_threshold')::float8
      + current_setting('autovacuum_vacuum_scale_factor')::float8 * greatest(c.reltuples, 0);


-- name: vacuum_run_events
-- VACUUM run_events when autovacuum will not (tables_due_for_vacuum named it).
-- No parameters; outside any transaction.
-- Locks: SHARE UPDATE EXCLUSIVE on the table, which stalls no publisher.
VACUUM {schema}.run_events;


-- name: vacuum_run_streams
-- VACUUM run_streams when autovacuum will not (tables_due_for_vacuum named it).
-- No parameters; outside any transaction.
-- Locks: SHARE UPDATE EXCLUSIVE on the table, which stalls no publisher.
VACUUM {schema}.run_streams;


-- name: record_pass
-- The pass's report replaces the last one (retention_last_pass has one row per
-- schema) and counts the pass; started_at is the end minus the pass's length.
-- $1 float8: seconds the pass took; $2 bigint: events deleted; $3 bigint: runs
-- deleted; $4 bigint: runs dead-lettered; $5 int: tables vacuumed; $6 text: the
-- policy (JSON).
-- Index: the primary key of retention_last_pass (id = 1).
-- Locks: the one row; written under the pass's advisory lock, so passes never race.
INSERT INTO {schema}.retention_last_pass AS p (
    id, started_at, finished_at, events_deleted, runs_deleted,
    runs_dead_lettered, tables_vacuumed, policy, passes)
SELECT 1, c.t - make_interval(secs => $1::float8), c.t, $2, $3, $4, $5, $6::json, 1
FROM (SELECT clock_timestamp() AS t) AS c
ON CONFLICT (id) DO UPDATE SET
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    events_deleted = excluded.events_deleted, runs_deleted = excluded.runs_deleted,
    runs_dead_lettered = excluded.runs_dead_lettered,
    tables_vacuumed = excluded.tables_vacuumed, policy = excluded.policy,
    passes = p.passes + 1;


-- name: preview_pass
-- `pgbridge retention --dry-run`: what a pass with this policy would do now, per rule,
-- counted in one read-only statement (nothing is locked, written or deleted). It follows
-- the pass step by step on each run row: the reaper first (a dead-lettered run gets one
-- more event and ends now), then the trims in the pass's order, each rule counting the
-- events the ones before it left (max_events_per_run, max_event_age, ended_run_ttl, the
-- expired streams'), then the removal of expired streams and of tombstones. Runs that forks
-- read (fork_refs > 0) are never trimmed, as in the pass. `released` lists the deleted forks
-- ([run_id, source]) and `releasable` the sources that go when their last fork does
-- (soft-deleted, or expired and soft-deleted by this pass: [run_id, source, fork_refs,
-- events]), for the caller to follow up the chain.
-- $1 bigint: max_events_per_run (NULL: off); $2 float8: max_event_age (s, NULL: off);
-- $3 float8: ended_run_ttl (s, NULL: off); $4 float8: tombstone_ttl (s, NULL: off);
-- $5 float8: active_timeout (s); $6 float8: awaiting_input_timeout (s).
-- Index: none: one pass over run_streams (a preview reads every run row), each with a
-- backward step on the run_events primary key for its head, and for max_event_age a walk
-- along that key from each run's first event kept to its first one young enough (what the
-- pass would read too).
-- Locks: none (ACCESS SHARE).
WITH cutoff AS (
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - ($2::float8 * 1000)::bigint AS ms
),
base AS (
    SELECT r.run_id, r.first_seq, h.last_seq, r.fork_refs, r.fork_source_run_id, r.ended_at,
        r.stream_deleted_at IS NOT NULL AS soft_deleted,
        (r.terminal_seq IS NULL AND r.content_type IS NULL
         AND greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)) < now() - make_interval(
             secs => CASE WHEN r.status = 'awaiting_input' THEN $6::float8 ELSE $5::float8 END)
        ) AS dead_letter,
        (r.stream_deleted_at IS NULL AND (
            (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
            OR (r.stream_ttl_seconds IS NOT NULL
                AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
        )) AS expired
    FROM {schema}.run_streams AS r
    CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
),
reaped AS (
    SELECT b.*, b.last_seq + b.dead_letter::int AS last_after,
        CASE WHEN b.dead_letter THEN now() ELSE b.ended_at END AS ended_after
    FROM base AS b
),
max_events AS (
    SELECT x.*, CASE WHEN $1::bigint IS NOT NULL AND x.fork_refs = 0
        THEN greatest(x.first_seq - 1, x.last_after - $1::bigint)
        ELSE x.first_seq - 1 END AS t1
    FROM reaped AS x
),
max_age AS (
    SELECT x.*, CASE WHEN $2::float8 IS NOT NULL AND x.fork_refs = 0 AND x.t1 < x.last_seq
        THEN greatest(x.t1, coalesce(
            (SELECT e.seq - 1 FROM {schema}.run_events AS e, cutoff
             WHERE e.run_id = x.run_id AND e.seq > x.t1 AND e.created_ms >= cutoff.ms
             ORDER BY e.seq LIMIT 1),
            x.last_seq))
        ELSE x.t1 END AS t2
    FROM max_events AS x
),
ended AS (
    SELECT x.*, CASE WHEN $3::float8 IS NOT NULL AND x.fork_refs = 0
            AND x.ended_after IS NOT NULL
            AND (x.ended_after < now() - make_interval(secs => $3::float8)
                 OR (x.dead_letter AND $3::float8 = 0))
        THEN greatest(x.t2, x.last_after) ELSE x.t2 END AS t3
    FROM max_age AS x
),
swept AS (
    SELECT x.*, CASE WHEN x.expired AND x.fork_refs = 0
        THEN greatest(x.t3, x.last_after) ELSE x.t3 END AS t4,
        x.ended_after IS NOT NULL AND NOT x.expired AND x.fork_refs = 0
            AND $3::float8 IS NOT NULL AND $4::float8 IS NOT NULL
            AND (x.ended_after < now() - make_interval(secs => $3::float8 + $4::float8)
                 OR (x.dead_letter AND $3::float8 + $4::float8 = 0)) AS old_tombstone
    FROM ended AS x
),
fate AS (
    SELECT x.*,
        (x.expired AND x.fork_refs = 0)
            OR (x.old_tombstone AND x.t4 >= x.last_after) AS deleted
    FROM swept AS x
)
SELECT
    count(*) FILTER (WHERE f.dead_letter) AS runs_dead_lettered,
    coalesce(sum(f.t1 - (f.first_seq - 1)), 0)::bigint AS events_max_events_per_run,
    coalesce(sum(f.t2 - f.t1), 0)::bigint AS events_max_event_age,
    coalesce(sum(f.t3 - f.t2), 0)::bigint AS events_ended_run_ttl,
    coalesce(sum(f.t4 - f.t3), 0)::bigint AS events_expired_streams,
    count(*) FILTER (WHERE f.expired) AS streams_expired,
    count(*) FILTER (WHERE f.expired AND f.fork_refs = 0) AS streams_deleted,
    count(*) FILTER (WHERE f.deleted AND NOT f.expired) AS tombstones_deleted,
    coalesce(json_agg(json_build_array(f.run_id, f.fork_source_run_id))
        FILTER (WHERE f.deleted AND f.fork_source_run_id IS NOT NULL), '[]')::text AS released,
    coalesce(json_agg(json_build_array(f.run_id, f.fork_source_run_id, f.fork_refs,
                                       f.last_seq - f.first_seq + 1))
        FILTER (WHERE f.fork_refs > 0 AND (f.soft_deleted OR f.expired)), '[]')::text AS releasable
FROM fate AS f;
