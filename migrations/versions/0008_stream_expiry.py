"""Expired Durable Streams: swept by retention, and gone for a bridge publish.

* ``pgbridge_delete_stream(run_id)``: what a DELETE of a stream no fork
  reads does (its events through the trim function, its run row, then its
  source's ``fork_refs``, and a soft-deleted source's own deletion, up the
  chain), in one place for DELETE, a publish to an expired stream and the
  retention sweep of expired streams.
* ``pgbridge_append_batch`` gets a sixth argument, ``publish`` (default
  false: ``pgbridge_stream_append`` made its own checks), and a fourth
  result column, ``refused``. A bridge publish passes true: a non-JSON
  stream's run refuses the events (``content_type``); an expired stream is
  deleted and the run created anew, or, while forks read it, soft-deleted
  and refused (``gone``). The checks are made on the run row the batch
  locks anyway. A new signature and result type cannot be replaced in
  place, so the old function is dropped and the new one created (a
  downgrade does the reverse).
* ``run_streams_expiring_idx``: the streams with a TTL or an Expires-At, so
  the retention sweep's scan reads those and not every run. Its key,
  ``run_id``, is never updated and its predicate's columns are set at
  creation, so it keeps a TTL touch (which writes ``stream_touched_at``) a
  HOT update.

The SQL: ``0008_stream_expiry.sql`` next to this file (frozen).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
