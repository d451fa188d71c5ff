"""The statement classes: typed names for the SQL a bridge runs, loaded once per schema.

Each class names the statements of one ``.sql`` file of this package
(``events.sql``, ``retention.sql``, ``inspection.sql``, ``streams.sql``), and
:func:`pgbridge.sql.load_into` fills it from that file, failing at once if the
two disagree. No SQL text is written in Python. Statements are plain strings
for asyncpg (the hot path pays no ORM cost); asyncpg prepares and caches each
one per connection. Which statements span runs: docs/scaling.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgbridge.sql import DEFAULT_SCHEMA, load_into


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the bridges that share *schema*."""
    return "pgbridge" if schema == DEFAULT_SCHEMA else f"pgbridge.{schema}"[:63]


@dataclass(frozen=True, slots=True)
class Queries:
    """The core statements of one bridge (``pgbridge/sql/events.sql``), qualified with its schema,
    with the statement groups of retention and Durable Streams beside them."""

    schema: str
    append_events: str
    append_events_lock_bounded: str
    append_events_notifying: str
    append_runs_once: str
    append_one_event: str
    begin_caller_transaction: str
    terminal_event_of_run: str
    resolve_cursor: str
    read_events_after: str
    read_runs_events_after: str
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
    fork_run_summary: str
    run_heads: str
    chain_head: str
    chain_rows: str
    run_ids: str
    last_deletion: str
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
    The reaper does the same: ``lock_stale_runs``, then ``dead_letter_runs``.
    """

    try_lock: str
    unlock: str
    lock_stale_runs: str
    dead_letter_runs: str
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
    preview_pass: str

    @classmethod
    def for_schema(cls, schema: str) -> RetentionQueries:

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
    fork_view: str
    fork_events_after: str
    events_after: str
    table_sizes: str
    runs_by_status: str
    oldest_retained_event: str
    last_retention_pass: str
    server_now: str

    @classmethod
    def for_schema(cls, schema: str = DEFAULT_SCHEMA) -> InspectQueries:

        return load_into(cls, "inspection.sql", schema)


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
    stream_append_simple: str

    @classmethod
    def for_schema(cls, schema: str) -> StreamQueries:
        # Imported here, not at the top, so this class's change stays within
        # its own lines of this shared, temporary module.

        return load_into(cls, "streams.sql", schema)
