"""Durable Streams: a run is also a Durable Stream (content type, TTL, closure, producers).

A stream created over the Durable Streams protocol is a row of run_streams
like any run; these columns hold what the protocol adds:

* ``content_type``: the stream's media type (NULL for a run born from
  ``publish``: a JSON stream whose messages are the events' envelopes);
* ``stream_ttl_seconds`` / ``stream_touched_at`` (sliding TTL) and
  ``stream_expires_at`` (absolute expiry);
* ``stream_writer_seq``: the last ``Stream-Seq`` accepted;
* ``closed_by_*``: the producer request that closed the stream, so its
  retry is answered as a duplicate.

Closing a stream reuses the run's terminal state: status ``ended`` and
``terminal_seq = last_seq`` (no event is written), so a closed stream is a
finished run to every reader and to retention.

``run_stream_producers`` keeps idempotent producers' state (epoch, last seq,
and the event their last request stored) per run; rows go with their run.

``pgbridge_stream_append(...)`` (``pgbridge/stream_ddl.py``) checks and
appends in one statement under the run row's lock.

The stale-run reaper leaves Durable Streams alone (they are open until
closed, however long they idle): its partial index now covers bridge-born
runs only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from pgbridge.migration_support import schema_from_context
from pgbridge.sql import quote_identifier
from pgbridge.stream_ddl import create_stream_append_function_sql, drop_stream_append_function_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TIMESTAMP = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    schema = schema_from_context()
    s = quote_identifier(schema)
    columns = [
        sa.Column("content_type", sa.Text()),
        sa.Column("stream_ttl_seconds", sa.BigInteger()),
        sa.Column("stream_expires_at", _TIMESTAMP),
        sa.Column("stream_touched_at", _TIMESTAMP),
        sa.Column("stream_writer_seq", sa.Text()),
        sa.Column("closed_by_producer_id", sa.Text()),
        sa.Column("closed_by_epoch", sa.BigInteger()),
        sa.Column("closed_by_seq", sa.BigInteger()),
    ]
    for column in columns:
        op.add_column("run_streams", column, schema=schema)
    op.create_table(
        "run_stream_producers",
        sa.Column(
            "run_id",
            sa.Text(),
            sa.ForeignKey(f"{schema}.run_streams.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("producer_id", sa.Text(), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("event_seq", sa.BigInteger()),
        sa.Column("event_ms", sa.BigInteger()),
        sa.Column("updated_at", _TIMESTAMP, nullable=False, server_default=sa.text("now()")),
        schema=schema,
    )
    op.drop_index("run_streams_open_updated_idx", table_name="run_streams", schema=schema)
    op.execute(
        f"CREATE INDEX run_streams_open_updated_idx ON {s}.run_streams (updated_at) "
        "WHERE terminal_seq IS NULL AND content_type IS NULL"
    )
    for statement in create_stream_append_function_sql(schema, soft_delete=False):
        op.execute(statement)


def downgrade() -> None:
    schema = schema_from_context()
    s = quote_identifier(schema)
    for statement in drop_stream_append_function_sql(schema):
        op.execute(statement)
    op.drop_index("run_streams_open_updated_idx", table_name="run_streams", schema=schema)
    op.execute(
        f"CREATE INDEX run_streams_open_updated_idx ON {s}.run_streams (updated_at) "
        "WHERE terminal_seq IS NULL"
    )
    op.drop_table("run_stream_producers", schema=schema)
    for name in (
        "closed_by_seq",
        "closed_by_epoch",
        "closed_by_producer_id",
        "stream_writer_seq",
        "stream_touched_at",
        "stream_expires_at",
        "stream_ttl_seconds",
        "content_type",
    ):
        op.drop_column("run_streams", name, schema=schema)
