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
from pgbridge.sql import DEFAULT_SCHEMA, load_into

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
