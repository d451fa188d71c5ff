"""The one description of pgbridge's tables, as SQLAlchemy Core metadata.

Alembic revisions in ``migrations/`` create and change these tables; a test
compares a migrated database with this metadata so the two never drift. The
hot path does not use SQLAlchemy: ``pgbridge/sql/*.sql`` hold the SQL the
bridge runs through asyncpg. The views and functions over these tables are in
the revisions' frozen ``.sql`` files; ``migrations/schema.sql`` shows the head
schema whole. Nothing at runtime imports this module (only migrating and apps
that want the tables as SQLAlchemy objects do).

Every table is keyed by ``run_id`` first and there is no global sequence, so
the tables can be distributed by ``run_id`` (Citus, or several clusters).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSON, TIMESTAMP

metadata = MetaData()

run_streams = Table(
    "run_streams",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    # The run's head as of the row's last write (its first event, a status change,
    # its terminal event, a trim; revision 0012): appends leave the row alone, so
    # an open run's newest event is its highest seq in run_events when that is
    # higher (pgbridge_run_head reads both). An ended run's row is exact.
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
    # Creation time (ms) of the event last_seq, as of the same write.
    Column("last_ms", BigInteger),
    # First retained seq: retained events are always first_seq..last_seq
    # (first_seq = last_seq + 1 when none is retained). Retention moves it.
    Column("first_seq", BigInteger, nullable=False, server_default=text("1")),
    # Creation time (ms) of the event first_seq, while one is retained: the
    # earliest event ID without a join, and what age-based retention scans.
    Column("first_ms", BigInteger),
    # Seq of the terminal event, once there is one; NULL while the run is open.
    Column("terminal_seq", BigInteger),
    # The hash chain (pgbridge/audit/chain.py): the hash of event last_seq, and the
    # last deleted event's (the retained events' chain starts from it).
    Column("last_hash", BYTEA),
    Column("trimmed_hash", BYTEA),
    Column("awaiting_input_since", TIMESTAMP(timezone=True)),
    Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")),
    # The row's last write. A run's last activity (what the stale-run reaper looks
    # at) is the later of this and its newest event's time.
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")),
    Column("ended_at", TIMESTAMP(timezone=True)),
    # Durable Streams (revision 0006, pgbridge/durable_streams/streams.py). A run born
    # from publish has no content type: it is a JSON stream of event envelopes.
    Column("content_type", Text),
    # Sliding TTL (reset by reads and writes) and absolute expiry.
    Column("stream_ttl_seconds", BigInteger),
    Column("stream_expires_at", TIMESTAMP(timezone=True)),
    Column("stream_touched_at", TIMESTAMP(timezone=True)),
    # The last Stream-Seq accepted (compared byte-wise).
    Column("stream_writer_seq", Text),
    # The producer request that closed the stream: its retry is a duplicate.
    Column("closed_by_producer_id", Text),
    Column("closed_by_epoch", BigInteger),
    Column("closed_by_seq", BigInteger),
    # Forks (revision 0007, PROTOCOL.md 4.2): the source's events with
    # seq <= fork_seq are this run's too (none is copied); its own events
    # continue from fork_seq + 1. fork_offset_seq and fork_sub_offset are
    # what the creating PUT asked for, compared when it is repeated.
    Column("fork_source_run_id", Text),
    Column("fork_offset_seq", BigInteger),
    Column("fork_sub_offset", BigInteger),
    Column("fork_seq", BigInteger),
    # Live forks reading this run's events: while above 0, retention leaves
    # the run alone and a delete only soft-deletes it.
    Column("fork_refs", BigInteger, nullable=False, server_default=text("0")),
    # Set by a delete while forks remain: the URL answers 410, the events stay.
    Column("stream_deleted_at", TIMESTAMP(timezone=True)),
    # Creation time (ms) of the last event retention deleted (seq first_seq - 1),
    # kept like trimmed_hash: a cursor naming it resolves against it (revision 0012).
    Column("trimmed_ms", BigInteger),
    CheckConstraint(
        "(fork_source_run_id IS NULL) = (fork_seq IS NULL) AND fork_refs >= 0",
        name="run_streams_fork_check",
    ),
    CheckConstraint(
        "status IN ('active', 'awaiting_input', 'ended', 'cancelled', 'errored')",
        name="run_streams_status_check",
    ),
    CheckConstraint("char_length(run_id) BETWEEN 1 AND 255", name="run_streams_run_id_length_check"),
    CheckConstraint("first_seq >= 1 AND first_seq <= last_seq + 1", name="run_streams_retained_range_check"),
    CheckConstraint(
        "(terminal_seq IS NULL) = (status IN ('active', 'awaiting_input'))",
        name="run_streams_terminal_status_check",
    ),
    # A run row's updates (a run's first event, status changes, terminal events,
    # trims) keep 30% of each page free for the new version: a HOT update
    # (revision 0010).
    postgresql_with={"fillfactor": 70},
)

run_events = Table(
    "run_events",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    # Unix ms from the database server's clock: the first half of the event ID.
    Column("created_ms", BigInteger, nullable=False),
    Column("event", Text, nullable=False),
    # json, not jsonb: keeps the exact text, so key order survives replay.
    Column("data", JSON(none_as_null=False), nullable=False),
    # A stored fact, not a guess from the name: an ordinary event may be
    # called "error".
    Column("terminal", Boolean, nullable=False, server_default=false()),
    # This event's link in its run's hash chain. The table is append-only:
    # a trigger refuses UPDATE and TRUNCATE, and DELETE outside retention.
    Column("hash", BYTEA, nullable=False),
)

# The last retention pass of this schema, whichever process ran it: one row,
# replaced by every pass (``pgbridge stats`` shows it). Written under the
# pass's advisory lock, so passes never race for it.
retention_last_pass = Table(
    "retention_last_pass",
    metadata,
    Column("id", SmallInteger, primary_key=True, server_default=text("1")),
    Column("started_at", TIMESTAMP(timezone=True), nullable=False),
    Column("finished_at", TIMESTAMP(timezone=True), nullable=False),
    Column("events_deleted", BigInteger, nullable=False),
    Column("runs_deleted", BigInteger, nullable=False),
    Column("runs_dead_lettered", BigInteger, nullable=False),
    Column("tables_vacuumed", Integer, nullable=False),
    # The RetentionPolicy the pass applied, field by field.
    Column("policy", JSON(none_as_null=False), nullable=False),
    # Passes recorded since the table was created.
    Column("passes", BigInteger, nullable=False, server_default=text("1")),
    CheckConstraint("id = 1", name="retention_last_pass_one_row_check"),
)

# Idempotent producers' state per run (Producer-Id, Producer-Epoch,
# Producer-Seq, and the event their last accepted request stored). Checked
# and written under the run row's lock by pgbridge_stream_append.
run_stream_producers = Table(
    "run_stream_producers",
    metadata,
    Column("run_id", Text, ForeignKey("run_streams.run_id", ondelete="CASCADE"), primary_key=True),
    Column("producer_id", Text, primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("event_seq", BigInteger),
    Column("event_ms", BigInteger),
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=text("now()")),
)

# One row per run deleted (revision 0009), written in the deleting transaction
# by pgbridge_delete_stream (or, for any other DELETE of a run row, a trigger
# on run_streams: via 'sql'): when, by which path, and the run's hash chain as
# it stood. Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE.
# ``pgbridge verify`` reports a deleted run from it.
run_deletions = Table(
    "run_deletions",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column(
        "deleted_at",
        TIMESTAMP(timezone=True),
        primary_key=True,
        server_default=text("clock_timestamp()"),
    ),
    # http, api, retention, expiry, or sql (a DELETE outside pgbridge's functions).
    Column("via", Text, nullable=False),
    Column("status", Text, nullable=False),
    # The run's created_at: tells this life of the run id from later ones.
    Column("started_at", TIMESTAMP(timezone=True), nullable=False),
    # Seqs 1..last_seq were published; last_hash ends the chain (NULL: no event).
    Column("last_seq", BigInteger, nullable=False),
    # The events still stored that went with the run (retention deleted the others).
    Column("events_deleted", BigInteger, nullable=False),
    Column("last_hash", BYTEA),
    CheckConstraint("char_length(via) BETWEEN 1 AND 64", name="run_deletions_via_check"),
    CheckConstraint(
        "last_seq >= 0 AND events_deleted BETWEEN 0 AND last_seq", name="run_deletions_counts_check"
    ),
)

# Every retention scan has an index that finds exactly the rows it acts on,
# so a pass costs in proportion to what it deletes, not to the table's size:
# the reaper looks for open runs by last activity; tombstone removal for ended
# runs by end time; ended-run deletion for ended runs that still hold events;
# max_events_per_run for runs holding too many; max_event_age for runs whose
# oldest retained event is too old.
Index(
    "run_streams_open_idx",
    run_streams.c.run_id,
    # Every open run (the reaper's scan, the open part of max_events_per_run, the
    # run lists), keyed by run_id: no index of run_streams covers a column that
    # every append changes (updated_at, last_seq, ...), so an append's update of
    # its run row can be HOT (revision 0010).
    postgresql_where=text("terminal_seq IS NULL"),
)
Index(
    "run_streams_ended_idx",
    run_streams.c.ended_at,
    postgresql_where=run_streams.c.ended_at.isnot(None),
)
# An ended run's last_seq is its terminal_seq: "ended and still holds events"
# and its retained count read terminal_seq, which an append changes only with
# its terminal event.
Index(
    "run_streams_ended_retained_idx",
    run_streams.c.ended_at,
    postgresql_where=text("terminal_seq >= first_seq"),
)
Index(
    "run_streams_retained_count_idx",
    run_streams.c.terminal_seq - run_streams.c.first_seq,
    postgresql_where=text("terminal_seq >= first_seq"),
)
# A run that holds events has a first_ms (set by its first retained event).
Index(
    "run_streams_first_ms_idx",
    run_streams.c.first_ms,
    postgresql_where=text("first_ms IS NOT NULL"),
)
# The sweep of expired Durable Streams (revision 0008): streams with a TTL or
# an Expires-At only. Keyed by run_id, which never changes, so a TTL touch
# (an update of stream_touched_at) stays a HOT update.
Index(
    "run_streams_expiring_idx",
    run_streams.c.run_id,
    postgresql_where=text("stream_expires_at IS NOT NULL OR stream_ttl_seconds IS NOT NULL"),
)
