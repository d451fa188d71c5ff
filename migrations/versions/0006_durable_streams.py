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

``pgbridge_stream_append(...)`` checks and
appends in one statement under the run row's lock.

The stale-run reaper leaves Durable Streams alone (they are open until
closed, however long they idle): its partial index now covers bridge-born
runs only.

The SQL: ``0006_durable_streams.sql`` next to this file (frozen).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
