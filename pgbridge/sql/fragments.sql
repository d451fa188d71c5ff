-- Pieces of SQL that several statements share, written once. A statement names one as
-- {fragment_name}; the loader (pgbridge/sql/__init__.py) puts the text in before it fills in
-- {schema}. `python -m pgbridge.sql FILE NAME` prints a statement whole, ready for psql.
-- They exist because the schema has no SQL function for these reads; a later revision may
-- turn the fork chain into one.

-- name: fork_chain
-- The CTEs `chain` and `oldest` of a Durable Streams fork ($1: its run id): `chain` walks the
-- run and its sources, each with the seq range (lo, hi] it contributes to the stitched view
-- (hi NULL for the run itself); `oldest` is the last seq of that view that retention deleted
-- (0 when none), so the view's retained range starts at oldest_seq + 1.
-- Index: run_streams primary key, one lookup per run of the chain. No locks.
chain (run_id, source, lo, hi, first_seq) AS (
    SELECT c.run_id, c.fork_source_run_id, coalesce(c.fork_seq, 0), NULL::bigint, c.first_seq
    FROM {schema}.run_streams AS c WHERE c.run_id = $1
    UNION ALL
    SELECT p.run_id, p.fork_source_run_id, coalesce(p.fork_seq, 0), least(chain.lo, chain.hi),
        p.first_seq
    FROM chain JOIN {schema}.run_streams AS p ON p.run_id = chain.source
),
oldest AS (
    SELECT coalesce(
        max(least(ch.first_seq - 1, ch.hi)) FILTER (WHERE ch.first_seq - 1 > ch.lo), 0
    ) AS oldest_seq
    FROM chain AS ch
);

-- name: stitched_events
-- The CTE `stitched` (after fork_chain): at most $3 events of the stitched view after seq $2,
-- in seq order, each read from the run of the chain that stores it. Seqs are gapless from
-- oldest_seq on, so bounding each run's scan by the seq range (not only by LIMIT) keeps the
-- plan a range scan of the run_events primary key whatever the row estimates say.
stitched AS (
    SELECT x.seq, x.created_ms, x.event, x.data
    FROM chain CROSS JOIN LATERAL (
        SELECT ev.seq, ev.created_ms, ev.event, ev.data
        FROM {schema}.run_events AS ev
        WHERE ev.run_id = chain.run_id AND ev.seq > greatest($2, chain.lo)
          AND (chain.hi IS NULL OR ev.seq <= chain.hi)
          AND ev.seq <= (SELECT greatest($2, oldest.oldest_seq) FROM oldest) + $3
        ORDER BY ev.seq
        LIMIT $3
    ) AS x
    ORDER BY x.seq
    LIMIT $3
);

-- name: stream_head_columns
-- The columns of a Durable Stream's head (alias r: its run_streams row; h: its head, from
-- pgbridge_run_head), with whether it expired (past Expires-At, or idle for longer than its TTL).
-- last_ms is the creation time of the event at last_seq (its tail offset names it): 0 for an
-- empty stream; for a fork with no event of its own yet (whose row keeps no time), that of the
-- event at its fork point, in the nearest run up its chain of sources that holds the seq (a
-- run's own events all lie past its fork point). COALESCE evaluates that look-up only then.
r.run_id, r.content_type, r.first_seq, h.last_seq,
    coalesce(
        h.last_ms,
        CASE WHEN h.last_seq = 0 THEN 0::bigint END,
        (
            WITH RECURSIVE up (run_id, source, depth) AS (
                SELECT r.run_id, r.fork_source_run_id, 0
                UNION ALL
                SELECT p.run_id, p.fork_source_run_id, up.depth + 1
                FROM up JOIN {schema}.run_streams AS p ON p.run_id = up.source
            )
            SELECT ev.created_ms
            FROM up JOIN {schema}.run_events AS ev ON ev.run_id = up.run_id AND ev.seq = h.last_seq
            ORDER BY up.depth
            LIMIT 1
        )
    ) AS last_ms,
    r.terminal_seq,
    r.stream_ttl_seconds, r.stream_expires_at,
    (extract(epoch FROM r.created_at) * 1000000)::bigint AS created_us,
    r.fork_source_run_id, r.fork_offset_seq, r.fork_sub_offset, r.fork_seq, r.fork_refs,
    r.stream_deleted_at IS NOT NULL AS soft_deleted,
    (
        (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
        OR (r.stream_ttl_seconds IS NOT NULL
            AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
    ) AS expired;

-- name: event_ms
-- An event's creation time, in ms since the epoch, as a scalar subquery: the schema's
-- pgbridge_event_ms() (revision 0012) written out. It is odd on an odd timeline and even on an
-- even one, so a cursor naming an event that a failover lost resolves unknown even when the new
-- history's event at that seq was stamped in the same millisecond. The timeline is the first 8
-- hex digits of the WAL file being written (in memory: no file is read). On a standby, where
-- nothing is appended, it is the clock alone.
-- Written out because before PostgreSQL 18 a call costs a statement ~0.25 ms: pgbridge_event_ms
-- is a VOLATILE SQL function whose body has a FROM clause, which PostgreSQL cannot inline, and
-- up to version 17 every execution of a statement that calls it parses and plans that body
-- again (the statement's cached plan does not cover it; 18 keeps SQL functions' plans for the
-- session). append_one_event paced as workload (a), on PostgreSQL 15: 1.64 ms p50 with the call,
-- 1.38 with this subquery, 0.98 for a plain INSERT; on 18, 1.48 and 1.46
-- (benchmarks/lone_statements.py; docs/performance.md, session 11). The function stays in the
-- schema for plain SQL; pgbridge_append_batch writes the same rule out too.
-- tests/db/test_event_ms.py checks that both give the same parity.
(SELECT CASE WHEN pg_is_in_recovery() THEN c.ms
        ELSE c.ms + (c.ms + ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::bigint) % 2
        END
    FROM (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) AS c)
