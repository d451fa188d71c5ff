"""The statement classes: typed names for the SQL a bridge runs, built once per schema.

Statements are plain strings for asyncpg (the hot path pays no ORM cost);
asyncpg prepares and caches each one per connection. :class:`Queries` names
the core statements, whose text is in ``pgbridge/sql/events.sql`` (which
also says which of them span runs: docs/scaling.md); the retention, Durable
Streams and inspection groups below still build theirs here until they move
to ``.sql`` files of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgbridge.audit.chain import GENESIS
from pgbridge.sql import DEFAULT_SCHEMA, load_into, quote_identifier

#: Server-clock Unix milliseconds: one clock for every process.
NOW_MS_SQL = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


#: The hash a run's first event chains from (pgbridge.audit.chain.GENESIS).
GENESIS_SQL = f"'\\x{GENESIS.hex()}'::bytea"

#: A stream past its Expires-At, or idle for longer than its TTL, is gone.
EXPIRED_SQL = """(
    (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
    OR (r.stream_ttl_seconds IS NOT NULL
        AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
)"""

#: The streams that can expire: the predicate of run_streams_expiring_idx (revision 0008).
_EXPIRING = "(r.stream_expires_at IS NOT NULL OR r.stream_ttl_seconds IS NOT NULL)"


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the bridges that share *schema*."""
    return "pgbridge" if schema == DEFAULT_SCHEMA else f"pgbridge.{schema}"[:63]


@dataclass(frozen=True, slots=True)
class Queries:
    """The core statements of one bridge (``pgbridge/sql/events.sql``), qualified with its schema,
    with the statement groups of retention and Durable Streams beside them."""

    schema: str
    append_events: str
    terminal_event_of_run: str
    resolve_cursor: str
    read_events_after: str
    resolve_fork_cursor: str
    read_inherited_events_after: str
    mark_awaiting_input: str
    notify_runs: str
    notify_listener_check: str
    listener_ping: str
    replica_replay_position: str
    server_in_recovery: str
    server_system_identifier: str
    schema_revision: str
    run_summary: str
    run_heads: str
    chain_head: str
    chain_rows: str
    run_ids: str
    recent_open_runs: str
    recent_ended_runs: str
    retention: RetentionQueries
    streams: StreamQueries

    @classmethod
    def for_schema(cls, schema: str = DEFAULT_SCHEMA) -> Queries:
        return load_into(
            cls,
            "events.sql",
            schema,
            schema=schema,
            retention=RetentionQueries.for_schema(schema),
            streams=StreamQueries.for_schema(schema),
        )


@dataclass(frozen=True, slots=True)
class RetentionQueries:
    """The SQL of a retention pass (docs/behaviour.md §8).

    Each scan matches one partial index of :mod:`pgbridge.schema`, so it reads
    the rows it acts on and no others. Deleting a prefix of a run's events
    happens in two steps inside one transaction: lock the run rows
    (``lock_runs``), then ``trim_run_prefixes``; the lock makes the second
    statement's snapshot see every committed append, so ``first_ms`` is right.
    """

    try_lock: str
    unlock: str
    dead_letter_stale_runs: str
    runs_over_max_events: str
    runs_with_events_older_than: str
    ended_runs_with_events: str
    lock_runs: str
    trim_run_prefixes: str
    delete_tombstones: str
    expired_streams_with_events: str
    lock_expired_runs: str
    lock_expired_streams: str
    soft_delete_streams: str
    delete_streams: str
    tables_due_for_vacuum: str
    vacuum_run_events: str
    vacuum_run_streams: str
    record_pass: str

    @classmethod
    def for_schema(cls, schema: str) -> RetentionQueries:
        s = quote_identifier(schema)
        lock_key = "hashtextextended('pgbridge.retention:' || $1::text, 0)"
        return cls(
            # $1 schema name: one lock per schema, across every process.
            try_lock=f"SELECT pg_try_advisory_lock({lock_key})",
            unlock=f"SELECT pg_advisory_unlock({lock_key})",
            # $1 active timeout (s), $2 awaiting-input timeout (s), $3 batch.
            # FOR UPDATE re-checks a row a publisher just touched against its
            # new updated_at, and SKIP LOCKED leaves a run being written to
            # alone: a late publish or the producer's terminal and this
            # dead-letter never both win. The terminal is appended like any
            # other: last_seq bumped under the lock, the event inserted.
            dead_letter_stale_runs=f"""
                WITH stamp AS (SELECT {NOW_MS_SQL} AS ms),
                stale AS (
                    SELECT run_id, status, updated_at FROM {s}.run_streams
                    WHERE terminal_seq IS NULL AND content_type IS NULL
                      AND updated_at < now() - make_interval(secs => least($1::float8, $2::float8))
                      AND updated_at < now() - make_interval(
                          secs => CASE WHEN status = 'awaiting_input' THEN $2::float8 ELSE $1::float8 END)
                    ORDER BY updated_at
                    LIMIT $3::int
                    FOR UPDATE SKIP LOCKED
                ),
                letter AS (
                    SELECT run_id, status AS was, json_build_object(
                        'reason', 'no publish or mark_awaiting_input within the timeout; '
                                  'the worker is presumed gone',
                        'status', status,
                        'last_activity', updated_at,
                        'timeout_seconds',
                        CASE WHEN status = 'awaiting_input' THEN $2::float8 ELSE $1::float8 END
                    )::text AS data
                    FROM stale
                ),
                run AS (
                    UPDATE {s}.run_streams AS r SET
                        last_seq = r.last_seq + 1,
                        last_ms = stamp.ms,
                        first_ms = CASE WHEN r.first_seq > r.last_seq THEN stamp.ms ELSE r.first_ms END,
                        status = 'errored',
                        terminal_seq = r.last_seq + 1,
                        ended_at = now(),
                        awaiting_input_since = NULL,
                        updated_at = now(),
                        last_hash = {s}.pgbridge_link_hash(
                            coalesce(r.last_hash, {GENESIS_SQL}), r.run_id, r.last_seq + 1, stamp.ms,
                            'dead_letter', letter.data)
                    FROM letter, stamp
                    WHERE r.run_id = letter.run_id
                    RETURNING r.run_id, r.last_seq, r.last_ms, r.last_hash, letter.data
                )
                INSERT INTO {s}.run_events (run_id, seq, created_ms, event, data, terminal, hash)
                SELECT run_id, last_seq, last_ms, 'dead_letter', data::json, true, last_hash
                FROM run
                RETURNING run_id, seq
            """,
            # The candidate scans return (run_id, through): delete seqs up to
            # and including ``through``. $1 limit on runs, then the rule.
            # $2 keep at most this many events per run.
            runs_over_max_events=f"""
                SELECT run_id, last_seq - $2 AS through FROM {s}.run_streams
                WHERE first_seq <= last_seq AND (last_seq - first_seq) >= $2 AND fork_refs = 0
                LIMIT $1
            """,
            # $2 age (s), $3 most events to look at per run. Walks each run
            # forward from its first retained event to the first one that is
            # young enough, so the cost is what it deletes, plus one row.
            runs_with_events_older_than=f"""
                WITH cutoff AS (SELECT {NOW_MS_SQL} - ($2::float8 * 1000)::bigint AS ms)
                SELECT r.run_id, coalesce(
                    (SELECT e.seq - 1 FROM {s}.run_events AS e
                     WHERE e.run_id = r.run_id AND e.seq >= r.first_seq
                       AND e.seq < r.first_seq + $3 AND e.created_ms >= cutoff.ms
                     ORDER BY e.seq LIMIT 1),
                    least(r.last_seq, r.first_seq + $3 - 1)) AS through
                FROM {s}.run_streams AS r, cutoff
                WHERE r.first_seq <= r.last_seq AND r.first_ms < cutoff.ms AND r.fork_refs = 0
                ORDER BY r.first_ms
                LIMIT $1
            """,
            # $2 seconds since the run ended.
            ended_runs_with_events=f"""
                SELECT run_id, last_seq AS through FROM {s}.run_streams
                WHERE ended_at IS NOT NULL AND first_seq <= last_seq AND fork_refs = 0
                  AND ended_at < now() - make_interval(secs => $2::float8)
                ORDER BY ended_at
                LIMIT $1
            """,
            # $1 run ids. In run_id order, so two lockers never deadlock.
            # A run that forks read (fork_refs > 0, re-checked under the
            # lock: a fork's creation updates it) keeps its events.
            lock_runs=f"""
                SELECT run_id, first_seq, last_seq FROM {s}.run_streams
                WHERE run_id = ANY($1::text[]) AND fork_refs = 0
                ORDER BY run_id
                FOR UPDATE
            """,
            # $1 run ids, $2 their first_seq now (locked), $3 delete through
            # these seqs: the trim function of revision 0003 (the one way
            # events leave the append-only table) moves first_seq, first_ms
            # and trimmed_hash in the same statement as the deletes, and
            # returns how many events it deleted.
            trim_run_prefixes=(
                f"SELECT {s}.pgbridge_trim_run_prefixes($1::text[], $2::bigint[], $3::bigint[])"
            ),
            # $1 seconds after the end, $2 batch. Only runs whose events are
            # all gone; SKIP LOCKED leaves rows another pass holds.
            # Each through pgbridge_delete_stream (revision 0008), so a fork's
            # tombstone releases its source (and a soft-deleted source whose last
            # fork it was goes too): one row per run row deleted, ``tombstone``
            # marking the ones this scan chose (the loop's batch count).
            delete_tombstones=f"""
                SELECT d.run_id, d.events_deleted, d.run_id = t.run_id AS tombstone
                FROM (
                    SELECT run_id, ended_at FROM {s}.run_streams
                    WHERE ended_at IS NOT NULL AND first_seq > last_seq AND fork_refs = 0
                      AND ended_at < now() - make_interval(secs => $1::float8)
                    ORDER BY ended_at
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED
                ) AS t
                CROSS JOIN LATERAL {s}.pgbridge_delete_stream(t.run_id) AS d
                ORDER BY t.ended_at
            """,
            # -- the sweep of expired Durable Streams (gone for every request:
            # it removes them as a DELETE would). Each scan reads the streams
            # with a TTL or an Expires-At (run_streams_expiring_idx), not every run.
            # $1 limit on runs: expired streams no fork reads that still hold
            # events (deleted through the trims, a bounded batch at a time).
            expired_streams_with_events=f"""
                SELECT r.run_id, r.last_seq AS through FROM {s}.run_streams AS r
                WHERE {_EXPIRING} AND r.stream_deleted_at IS NULL AND r.fork_refs = 0
                  AND r.first_seq <= r.last_seq AND {EXPIRED_SQL}
                ORDER BY r.run_id
                LIMIT $1
            """,
            # $1 run ids: lock_runs for those trims, re-checking the expiry
            # under the lock (a stream touched meanwhile keeps its events).
            lock_expired_runs=f"""
                SELECT r.run_id, r.first_seq, r.last_seq FROM {s}.run_streams AS r
                WHERE r.run_id = ANY($1::text[]) AND r.fork_refs = 0 AND r.stream_deleted_at IS NULL
                  AND {EXPIRED_SQL}
                ORDER BY r.run_id
                FOR UPDATE
            """,
            # $1 batch: expired streams, locked (SKIP LOCKED leaves a stream a
            # request holds: the request itself treats it as gone).
            lock_expired_streams=f"""
                SELECT r.run_id, r.first_seq, r.fork_refs FROM {s}.run_streams AS r
                WHERE {_EXPIRING} AND r.stream_deleted_at IS NULL AND {EXPIRED_SQL}
                ORDER BY r.run_id
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            """,
            # $1 run ids (locked) that forks still read: soft-deleted, as a DELETE does.
            soft_delete_streams=f"""
                UPDATE {s}.run_streams SET stream_deleted_at = now()
                WHERE run_id = ANY($1::text[]) AND stream_deleted_at IS NULL
            """,
            # $1 run ids (locked) no fork reads: deleted as a DELETE does
            # (revision 0008's function: events, row, then the source's
            # fork_refs, up the chain). One row per run row deleted.
            delete_streams=f"""
                SELECT d.run_id, d.last_seq, d.events_deleted
                FROM unnest($1::text[]) WITH ORDINALITY AS x(id, ord)
                CROSS JOIN LATERAL {s}.pgbridge_delete_stream(x.id) AS d
                ORDER BY x.ord
            """,
            # Tables autovacuum will not clean (switched off for the server
            # or the table) whose dead rows passed autovacuum's own threshold.
            # $1 schema name.
            tables_due_for_vacuum="""
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
                      + current_setting('autovacuum_vacuum_scale_factor')::float8 * greatest(c.reltuples, 0)
            """,
            vacuum_run_events=f"VACUUM {s}.run_events",
            vacuum_run_streams=f"VACUUM {s}.run_streams",
            # The pass's report replaces the last one (one row per schema).
            # $1 seconds the pass took, $2 events deleted, $3 runs deleted,
            # $4 runs dead-lettered, $5 tables vacuumed, $6 the policy (JSON).
            record_pass=f"""
                INSERT INTO {s}.retention_last_pass AS p (
                    id, started_at, finished_at, events_deleted, runs_deleted,
                    runs_dead_lettered, tables_vacuumed, policy, passes)
                SELECT 1, c.t - make_interval(secs => $1::float8), c.t, $2, $3, $4, $5, $6::json, 1
                FROM (SELECT clock_timestamp() AS t) AS c
                ON CONFLICT (id) DO UPDATE SET
                    started_at = excluded.started_at, finished_at = excluded.finished_at,
                    events_deleted = excluded.events_deleted, runs_deleted = excluded.runs_deleted,
                    runs_dead_lettered = excluded.runs_dead_lettered,
                    tables_vacuumed = excluded.tables_vacuumed, policy = excluded.policy,
                    passes = p.passes + 1
            """,
        )


@dataclass(frozen=True, slots=True)
class InspectQueries:
    """The read-only SQL of ``pgbridge runs``, ``events`` and ``stats`` (:mod:`pgbridge.inspection`).

    Runs and events are read through the views of revision 0005
    (:mod:`pgbridge.views_ddl`), so the commands show exactly what the
    documented views show; each filter reaches a table index through them.
    """

    runs: str
    run: str
    events_after: str
    table_sizes: str
    runs_by_status: str
    oldest_retained_event: str
    last_retention_pass: str
    server_now: str

    @classmethod
    def for_schema(cls, schema: str = DEFAULT_SCHEMA) -> InspectQueries:
        s = quote_identifier(schema)
        runs_view, events_view = f"{s}.pgbridge_runs", f"{s}.pgbridge_events"
        # $1 status or NULL, $2 seconds or NULL. Open runs by last activity,
        # ended runs by end time, each read backwards along its partial index.
        open_runs = """
            terminal_seq IS NULL AND ($1::text IS NULL OR status = $1)
            AND ($2::float8 IS NULL OR last_activity_at >= now() - make_interval(secs => $2::float8))
        """
        ended_runs = """
            ended_at IS NOT NULL AND ($1::text IS NULL OR status = $1)
            AND ($2::float8 IS NULL OR ended_at >= now() - make_interval(secs => $2::float8))
        """
        return cls(
            # $1 status or NULL, $2 active within this many seconds or NULL,
            # $3 limit: the most recently active runs first (open runs by
            # their last activity, ended runs by their end).
            runs=f"""
                SELECT * FROM (
                    (SELECT *, last_activity_at AS active_at FROM {runs_view}
                     WHERE {open_runs} ORDER BY last_activity_at DESC LIMIT $3)
                    UNION ALL
                    (SELECT *, ended_at AS active_at FROM {runs_view}
                     WHERE {ended_runs} ORDER BY ended_at DESC LIMIT $3)
                ) AS recent
                ORDER BY active_at DESC, run_id
                LIMIT $3
            """,
            run=f"SELECT * FROM {runs_view} WHERE run_id = $1",
            # $1 run_id, $2 after this seq, $3 limit or NULL for all.
            events_after=f"""
                SELECT run_id, seq, event_id, event, data::text AS data, terminal, created_ms, created_at
                FROM {events_view}
                WHERE run_id = $1 AND seq > $2
                ORDER BY seq
                LIMIT $3
            """,
            # $1 schema name, $2 table names. Row counts are the statistics
            # collector's live-row estimates (exact counts would scan).
            table_sizes="""
                SELECT c.relname::text AS name,
                       pg_total_relation_size(c.oid) AS total_bytes,
                       pg_relation_size(c.oid) AS table_bytes,
                       pg_indexes_size(c.oid) AS index_bytes,
                       s.n_live_tup AS rows_estimate
                FROM pg_class AS c
                JOIN pg_namespace AS n ON n.oid = c.relnamespace
                LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
                WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind = 'r'
                ORDER BY total_bytes DESC, name
            """,
            # Exact event counts from each run's seqs, with no scan of run_events.
            runs_by_status=f"""
                SELECT status, count(*) AS runs,
                       sum(last_seq - first_seq + 1)::bigint AS events_retained,
                       sum(last_seq)::bigint AS events_published
                FROM {s}.run_streams
                GROUP BY status
            """,
            # Along run_streams_first_ms_idx: one index entry read.
            oldest_retained_event=f"""
                SELECT run_id, first_ms || '-' || first_seq AS event_id,
                       to_timestamp(first_ms / 1000.0) AS created_at
                FROM {s}.run_streams
                WHERE first_seq <= last_seq
                ORDER BY first_ms
                LIMIT 1
            """,
            last_retention_pass=f"""
                SELECT started_at, finished_at, events_deleted, runs_deleted, runs_dead_lettered,
                       tables_vacuumed, policy::text AS policy, passes
                FROM {s}.retention_last_pass
            """,
            server_now="SELECT now()",
        )


def _fork_chain(s: str) -> str:
    """The CTEs ``chain`` and ``oldest`` of a read of run $1 along its chain of fork sources.

    Each run of the chain gives its events in (lo, hi], lo its own fork point
    (0 for a run that is no fork), hi the lowest fork point below it (none for
    the run read), so every seq comes from exactly one run. oldest_seq is
    the oldest offset a read may start from: the highest point up to which
    retention deleted a run's part of the chain (0: none did). A run that
    forks read is never trimmed, so only what went before a fork counts.
    """
    return f"""
        chain (run_id, source, lo, hi, first_seq) AS (
            SELECT c.run_id, c.fork_source_run_id, coalesce(c.fork_seq, 0), NULL::bigint, c.first_seq
            FROM {s}.run_streams AS c WHERE c.run_id = $1
            UNION ALL
            SELECT p.run_id, p.fork_source_run_id, coalesce(p.fork_seq, 0), least(chain.lo, chain.hi),
                p.first_seq
            FROM chain JOIN {s}.run_streams AS p ON p.run_id = chain.source
        ),
        oldest AS (
            SELECT coalesce(
                max(least(ch.first_seq - 1, ch.hi)) FILTER (WHERE ch.first_seq - 1 > ch.lo), 0
            ) AS oldest_seq
            FROM chain AS ch
        )"""


def _stitched_events(s: str, *, limit: str) -> str:
    """The CTEs ``chain``, ``oldest`` (:func:`_fork_chain`) and ``stitched`` of a stream
    read: stream $1's events after seq $2, at most *limit*, in order, along its chain
    of fork sources.

    Seqs are gapless from oldest_seq on, so the wanted events are the seq
    range (after, after + limit]: bounding the scan by it (not only by
    LIMIT) keeps the plan an index range scan of those rows whatever the
    planner's row estimates say. With a LIMIT alone, a stale estimate of a
    long run's rows made PostgreSQL fetch and sort all of them.
    """
    return f"""{_fork_chain(s)},
        stitched AS (
            SELECT x.seq, x.created_ms, x.event, x.data
            FROM chain CROSS JOIN LATERAL (
                SELECT ev.seq, ev.created_ms, ev.event, ev.data
                FROM {s}.run_events AS ev
                WHERE ev.run_id = chain.run_id AND ev.seq > greatest($2, chain.lo)
                  AND (chain.hi IS NULL OR ev.seq <= chain.hi)
                  AND ev.seq <= (SELECT greatest($2, oldest.oldest_seq) FROM oldest) + {limit}
                ORDER BY ev.seq
                LIMIT {limit}
            ) AS x
            ORDER BY x.seq
            LIMIT {limit}
        )"""


@dataclass(frozen=True, slots=True)
class StreamQueries:
    """The SQL of Durable Streams (:mod:`pgbridge.durable_streams.streams`): a stream is a run.

    Every statement filters on one ``run_id``. ``expired`` is computed by
    the server's clock, like every other time in pgbridge.
    """

    stream_head: str
    read_stream: str
    read_stream_page: str
    touch_stream: str
    create_stream: str
    lock_stream: str
    delete_stream: str
    ensure_run: str
    stream_append: str
    create_fork: str
    add_fork_ref: str
    soft_delete_stream: str
    stream_append_many: str

    @classmethod
    def for_schema(cls, schema: str) -> StreamQueries:
        s = quote_identifier(schema)
        head_columns = f"""
            r.run_id, r.content_type, r.first_seq, r.last_seq, r.terminal_seq,
            r.stream_ttl_seconds, r.stream_expires_at,
            (extract(epoch FROM r.created_at) * 1000000)::bigint AS created_us,
            r.fork_source_run_id, r.fork_offset_seq, r.fork_sub_offset, r.fork_seq, r.fork_refs,
            r.stream_deleted_at IS NOT NULL AS soft_deleted,
            {EXPIRED_SQL} AS expired
        """
        return cls(
            # $1 run_id: where the stream stands (HEAD, PUT's comparison).
            stream_head=f"SELECT {head_columns} FROM {s}.run_streams AS r WHERE r.run_id = $1",
            # $1 run_id, $2 read after this seq, $3 most events. One snapshot:
            # the stream's state and the events after the offset. No row: no stream.
            read_stream=f"""
                WITH RECURSIVE {_stitched_events(s, limit="$3")}
                SELECT {head_columns}, oldest.oldest_seq, e.seq, e.created_ms, e.event, e.data::text AS data
                FROM {s}.run_streams AS r
                CROSS JOIN oldest
                LEFT JOIN stitched AS e ON true
                WHERE r.run_id = $1
                ORDER BY e.seq
            """,
            # A catch-up read rendered by PostgreSQL: one row, whatever the number
            # of messages, so no per-message work is left to Python (the hot
            # path of a catch-up). $1 run_id, $2 read after this seq, $3 most
            # messages, $4 most bytes of message data (the first message is
            # always taken), $5 the JSON content type. A JSON stream's messages
            # come as one comma-joined text (a run born from publish: each
            # event's envelope {"id", "event", "data"}), any other stream's as
            # an array of their stored texts. Seqs are gapless, so the page is
            # the whole rest of the stream exactly when page_last_seq reaches
            # the head's last_seq. No row: no stream.
            read_stream_page=f"""
                WITH RECURSIVE {_stitched_events(s, limit="$3")},
                mode AS (
                    SELECT m.content_type IS NULL AS envelopes, coalesce(m.content_type, $5) = $5 AS json_mode
                    FROM {s}.run_streams AS m WHERE m.run_id = $1
                ),
                sized AS (
                    SELECT st.seq, st.created_ms, st.event, st.data::text AS data,
                        sum(octet_length(st.data::text)) OVER (ORDER BY st.seq) AS bytes_through,
                        row_number() OVER (ORDER BY st.seq) AS n
                    FROM stitched AS st
                ),
                page AS (
                    SELECT count(*) AS taken, max(z.seq) AS page_last_seq,
                        string_agg(
                            CASE WHEN mode.envelopes
                                THEN '{{"id":"' || z.created_ms || '-' || z.seq || '","event":'
                                    || to_json(z.event)::text || ',"data":' || z.data || '}}'
                                ELSE z.data END,
                            ',' ORDER BY z.seq
                        ) FILTER (WHERE mode.json_mode) AS json_messages,
                        array_agg(z.data ORDER BY z.seq) FILTER (WHERE NOT mode.json_mode) AS byte_messages
                    FROM sized AS z CROSS JOIN mode
                    WHERE z.n = 1 OR z.bytes_through <= $4::bigint
                )
                SELECT {head_columns}, oldest.oldest_seq, page.taken, page.page_last_seq,
                    page.json_messages, page.byte_messages
                FROM {s}.run_streams AS r
                CROSS JOIN oldest
                CROSS JOIN page
                WHERE r.run_id = $1
            """,
            # $1 run_id: a read resets a sliding TTL (streams without one are not
            # written; an expired stream stays expired: a touch cannot revive it).
            touch_stream=f"""
                UPDATE {s}.run_streams AS r SET stream_touched_at = now()
                WHERE r.run_id = $1 AND r.stream_ttl_seconds IS NOT NULL AND NOT {EXPIRED_SQL}
            """,
            # $1 run_id, $2 content type, $3 TTL seconds, $4 expires at.
            create_stream=f"""
                INSERT INTO {s}.run_streams AS r (
                    run_id, status, content_type, stream_ttl_seconds, stream_expires_at, stream_touched_at)
                VALUES ($1, 'active', $2, $3, $4, now())
                ON CONFLICT (run_id) DO NOTHING
                RETURNING r.run_id
            """,
            # $1 run_id: the row, locked for a create-or-compare or a delete.
            lock_stream=f"SELECT {head_columns} FROM {s}.run_streams AS r WHERE r.run_id = $1 FOR UPDATE",
            # $1 run_id (locked, no fork reads it): revision 0008's function deletes
            # its events (the trim function), its row, and releases its source,
            # which goes too when soft-deleted and this was its last fork.
            delete_stream=f"SELECT run_id, last_seq, events_deleted FROM {s}.pgbridge_delete_stream($1)",
            # $1 run_id: a run born from publish (no content type), if it is new.
            ensure_run=f"""
                INSERT INTO {s}.run_streams (run_id, status) VALUES ($1, 'active')
                ON CONFLICT (run_id) DO NOTHING
            """,
            # Revision 0006's function (pgbridge/stream_ddl.py): checks and
            # appends under the run row's lock; one row says what happened.
            # $1 run_id, $2 request content type (NULL: no check), $3 event
            # names, $4 data texts, $5 close, $6 Stream-Seq, $7 producer id,
            # $8 epoch, $9 producer seq.
            stream_append=f"""
                SELECT outcome, last_seq, last_ms, closed, producer_epoch, producer_seq, event_seq, event_ms
                FROM {s}.pgbridge_stream_append(
                    $1::text, $2::text, $3::text[], $4::text[], $5::boolean, $6::text, $7::text,
                    $8::bigint, $9::bigint)
            """,
            # $1 run_id, $2 content type, $3 TTL seconds, $4 expires at,
            # $5 source run_id, $6 requested offset seq, $7 sub-offset,
            # $8 fork_seq. Its own events start after fork_seq (none yet).
            create_fork=f"""
                INSERT INTO {s}.run_streams AS r (
                    run_id, status, content_type, stream_ttl_seconds, stream_expires_at, stream_touched_at,
                    fork_source_run_id, fork_offset_seq, fork_sub_offset, fork_seq, last_seq, first_seq)
                VALUES ($1, 'active', $2, $3, $4, now(), $5, $6, $7, $8::bigint, $8::bigint, $8::bigint + 1)
                ON CONFLICT (run_id) DO NOTHING
                RETURNING r.run_id
            """,
            # $1 source run_id (locked): one more fork reads its events.
            add_fork_ref=f"UPDATE {s}.run_streams SET fork_refs = fork_refs + 1 WHERE run_id = $1",
            # $1 run_id (locked): deleted while forks read it; its events stay.
            soft_delete_stream=f"""
                UPDATE {s}.run_streams SET stream_deleted_at = now()
                WHERE run_id = $1 AND stream_deleted_at IS NULL
            """,
            # Group commit of protocol appends: many requests, one statement (one
            # transaction, one WAL flush), each checked and appended by the same
            # function in array order, so every request keeps its own outcome.
            # Per request ($1..$9, one element each): run_id, content type, the
            # first and last index of its events in $10/$11 (empty when last <
            # first), close, Stream-Seq, producer id, epoch, producer seq.
            stream_append_many=f"""
                SELECT b.ord, a.outcome, a.last_seq, a.last_ms, a.closed, a.producer_epoch,
                    a.producer_seq, a.event_seq, a.event_ms
                FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::boolean[], $6::text[],
                    $7::text[], $8::bigint[], $9::bigint[])
                    WITH ORDINALITY AS b(run_id, content_type, first_event, last_event, close, stream_seq,
                        producer_id, epoch, producer_seq, ord)
                CROSS JOIN LATERAL {s}.pgbridge_stream_append(
                    b.run_id, b.content_type, ($10::text[])[b.first_event:b.last_event],
                    ($11::text[])[b.first_event:b.last_event], b.close, b.stream_seq, b.producer_id,
                    b.epoch, b.producer_seq) AS a
                ORDER BY b.ord
            """,
        )
