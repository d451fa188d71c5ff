"""Every SQL statement the bridge runs, in one place, named by what it does.

Statements are plain strings for asyncpg (the hot path pays no ORM cost);
asyncpg prepares and caches each one per connection. They are built once per
bridge for its PostgreSQL schema. Every statement on the publish, subscribe
and replay paths filters on a single ``run_id``, so each would route to one
shard if the tables were distributed by ``run_id``; the exceptions, named in
docs/scaling.md, include the reads of a Durable Streams fork, which follow its
chain of sources (for a subscription too: ``resolve_fork_cursor`` and
``read_inherited_events_after``, run only for a fork).
"""

from __future__ import annotations

from dataclasses import dataclass

from pgbridge.audit.chain import GENESIS
from pgbridge.sql import DEFAULT_SCHEMA, quote_identifier

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

_RUN_SUMMARY_COLUMNS = """
    run_id, status, first_seq, first_ms, last_seq, last_ms, terminal_seq,
    created_at, updated_at, ended_at, awaiting_input_since
"""


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the bridges that share *schema*."""
    return "pgbridge" if schema == DEFAULT_SCHEMA else f"pgbridge.{schema}"[:63]


@dataclass(frozen=True, slots=True)
class Queries:
    """The SQL of one bridge, qualified with its schema."""

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
        s = quote_identifier(schema)
        return cls(
            schema=schema,
            # Every publish (one event, or a group-commit batch): the function
            # of pgbridge/batch_ddl.py assigns seqs under each run row's lock,
            # chains the hashes, updates each run row once and inserts the
            # events in one statement; with publish => true (revision 0008)
            # it also refuses a non-JSON stream's run and recreates an expired
            # stream's, on the row it locks anyway. $1 run ids, $2 event names,
            # $3 data texts, $4 terminal flags, $5 statuses; seq comes back
            # NULL where the run refused the event, ``refused`` says why
            # ('terminal', 'content_type' or 'gone').
            append_events=f"""
                SELECT ord, seq, created_ms, refused
                FROM {s}.pgbridge_append_batch(
                    $1::text[], $2::text[], $3::text[], $4::boolean[], $5::text[], publish => true)
            """,
            # The terminal event is always a run's last: its ID is last_ms-last_seq.
            # (A Durable Stream closed before any event has terminal_seq 0, no ms.)
            terminal_event_of_run=f"""
                SELECT terminal_seq, coalesce(last_ms, 0) AS last_ms FROM {s}.run_streams
                WHERE run_id = $1 AND terminal_seq IS NOT NULL
            """,
            # $1 run_id, $2 the cursor's seq: the retained range and the
            # creation time of the event the cursor names. fork_seq (NULL but
            # for a Durable Streams fork) comes with the row read anyway: a
            # fork's cursor resolves against its stitched view instead
            # (resolve_fork_cursor), with no extra statement for other runs.
            resolve_cursor=f"""
                SELECT r.first_seq, r.last_seq, r.fork_seq, e.created_ms AS stored_ms
                FROM {s}.run_streams AS r
                LEFT JOIN {s}.run_events AS e ON e.run_id = r.run_id AND e.seq = $2
                WHERE r.run_id = $1
            """,
            # $1 run_id, $2 cursor seq, $3 page size. One snapshot gives the
            # run's state and the next page of events, so a reader sees the
            # retained range and the rows consistently. No row: no such run.
            read_events_after=f"""
                SELECT r.first_seq, r.first_ms, r.last_seq, r.last_ms, r.terminal_seq,
                       e.seq, e.created_ms, e.event, e.data::text AS data, e.terminal
                FROM {s}.run_streams AS r
                LEFT JOIN LATERAL (
                    SELECT seq, created_ms, event, data, terminal
                    FROM {s}.run_events
                    WHERE run_id = $1 AND seq > $2
                    ORDER BY seq
                    LIMIT $3
                ) AS e ON true
                WHERE r.run_id = $1
                ORDER BY e.seq
            """,
            # $1 a fork's run_id, $2 the cursor's seq: the fork's view along its
            # chain of sources (what a stream read gives) as a retained range:
            # from oldest_seq + 1 to the fork's last_seq, and the creation time
            # of event $2 in whichever run of the chain holds it.
            resolve_fork_cursor=f"""
                WITH RECURSIVE {_fork_chain(s)}
                SELECT oldest.oldest_seq, r.last_seq, r.fork_seq,
                       {_chain_event_ms(s, "$2::bigint")} AS stored_ms
                FROM {s}.run_streams AS r CROSS JOIN oldest
                WHERE r.run_id = $1
            """,
            # $1 a fork's run_id, $2 cursor seq, $3 page size: the inherited
            # events (seq <= fork_seq, from its chain of sources) after the
            # cursor, with the stitched view's state in one snapshot: its
            # retained range starts after oldest_seq, and first_ms / last_ms
            # are the creation times of its first and last events, wherever
            # they are stored. The fork's own events come from the run's feed
            # (read_events_after). No row: no such run.
            read_inherited_events_after=f"""
                WITH RECURSIVE {_stitched_events(s, limit="$3")}
                SELECT r.fork_seq, oldest.oldest_seq, r.last_seq, r.terminal_seq,
                       {_chain_event_ms(s, "oldest.oldest_seq + 1")} AS first_ms,
                       {_chain_event_ms(s, "r.last_seq")} AS last_ms,
                       e.seq, e.created_ms, e.event, e.data::text AS data
                FROM {s}.run_streams AS r
                CROSS JOIN oldest
                LEFT JOIN stitched AS e ON e.seq <= r.fork_seq
                WHERE r.run_id = $1
                ORDER BY e.seq
            """,
            mark_awaiting_input=f"""
                UPDATE {s}.run_streams
                SET status = 'awaiting_input', awaiting_input_since = now(), updated_at = now()
                WHERE run_id = $1 AND status IN ('active', 'awaiting_input')
            """,
            # $1 channel, $2 newest seqs (or '*'), $3 run ids: one statement
            # (one transaction) for every wake-up that piled up; distinct
            # payloads are never merged. Each payload is listener.encode_wake's
            # "<seq>@<lsn> <run_id>": the WAL insert position, read after the
            # commits being reported, tells a replica reader how far the
            # standby must have replayed to hold them.
            notify_runs="""
                SELECT pg_notify($1, w.head || '@' || l.lsn || ' ' || w.run_id)
                FROM (SELECT pg_current_wal_insert_lsn()::text AS lsn) AS l,
                     unnest($2::text[], $3::text[]) AS w(head, run_id)
            """,
            # $1 a fresh channel only the starting listener follows (listener.py).
            notify_listener_check="SELECT pg_notify($1, 'pgbridge listener check')",
            # Where a hot standby's replay stands (NULL on a server not in recovery).
            replica_replay_position="SELECT pg_last_wal_replay_lsn()::text",
            # start(): is replica_dsn a hot standby, and of the same cluster as dsn?
            server_in_recovery="SELECT pg_is_in_recovery()",
            server_system_identifier="SELECT system_identifier::text FROM pg_control_system()",
            schema_revision=f"SELECT version_num FROM {s}.alembic_version",
            # What dashboards and health checks show of a run: its row alone
            # (counts and IDs derive from the seqs and their times).
            run_summary=f"""
                SELECT {_RUN_SUMMARY_COLUMNS} FROM {s}.run_streams WHERE run_id = $1
            """,
            # The poll: where many followed runs stand, in one statement
            # (a feed is re-read only if its run moved). $1 run ids.
            run_heads=f"""
                SELECT run_id, first_seq, last_seq, terminal_seq
                FROM {s}.run_streams WHERE run_id = ANY($1::text[])
            """,
            # The hash chain of one run, for verify and export: where it
            # starts (the last deleted event's hash, if retention deleted
            # any) and how it ends, then every stored event in seq order.
            chain_head=f"""
                SELECT status, first_seq, last_seq, trimmed_hash, last_hash
                FROM {s}.run_streams WHERE run_id = $1
            """,
            chain_rows=f"""
                SELECT seq, created_ms, event, data::text AS data, hash
                FROM {s}.run_events WHERE run_id = $1 ORDER BY seq
            """,
            run_ids=f"SELECT run_id FROM {s}.run_streams ORDER BY run_id",
            # $1 status or NULL for any, $2 limit. Open runs by last activity
            # and ended runs by end time, each read backwards along its
            # partial index, so listing costs the same on any table size.
            recent_open_runs=f"""
                SELECT {_RUN_SUMMARY_COLUMNS} FROM {s}.run_streams
                WHERE terminal_seq IS NULL AND ($1::text IS NULL OR status = $1)
                ORDER BY updated_at DESC
                LIMIT $2
            """,
            recent_ended_runs=f"""
                SELECT {_RUN_SUMMARY_COLUMNS} FROM {s}.run_streams
                WHERE ended_at IS NOT NULL AND ($1::text IS NULL OR status = $1)
                ORDER BY ended_at DESC
                LIMIT $2
            """,
            retention=RetentionQueries.for_schema(schema),
            streams=StreamQueries.for_schema(schema),
        )


@dataclass(frozen=True, slots=True)
class RetentionQueries:
    """The SQL of a retention pass (docs/behaviour.md §8), in ``pgbridge/sql/retention.sql``.

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
        from pgbridge.sql import load_into

        return load_into(cls, "retention.sql", schema)


@dataclass(frozen=True, slots=True)
class InspectQueries:
    """The read-only SQL of ``pgbridge runs``, ``events`` and ``stats`` (:mod:`pgbridge.inspection`),
    in ``pgbridge/sql/inspection.sql``.

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
        from pgbridge.sql import load_into

        return load_into(cls, "inspection.sql", schema)


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


def _chain_event_ms(s: str, seq: str) -> str:
    """A scalar subquery: the creation time of event *seq* (an SQL expression) of the
    view along ``chain`` (:func:`_fork_chain`), taken from the one run that holds that
    seq; NULL when it is not retained. One primary-key lookup."""
    return f"""(
        SELECT ev.created_ms
        FROM chain AS owner JOIN {s}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = {seq}
        WHERE {seq} > owner.lo AND (owner.hi IS NULL OR {seq} <= owner.hi)
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
    """The SQL of Durable Streams (:mod:`pgbridge.store.streams`): a stream is a run.

    The statements are in ``pgbridge/sql/streams.sql``; this class names them.
    Every statement filters on one ``run_id``. ``expired`` is computed by
    the server's clock, like every other time in pgbridge.
    """

    stream_head: str
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
        # Imported here, not at the top, so this class's change stays within
        # its own lines of this shared, temporary module.
        from pgbridge.sql import load_into

        return load_into(cls, "streams.sql", schema)
