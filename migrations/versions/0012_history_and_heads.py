"""Run heads read from run_events, event times that tell timelines apart, and trimmed_ms.

* ``pgbridge_append_batch`` no longer updates its run row on every append:
  it reads each run's newest event from ``run_events``
  (``pgbridge_run_head``, new) and writes the row only for a run's first
  retained event, a status change, its terminal event, or every 256th
  event; both of revision 0011's ways (one existing run, the general
  way) follow this. Under a pinned
  xmin horizon every append used to leave its run row one more version that
  PostgreSQL could not prune, which each later append and read of the run
  walked through. ``pgbridge_stream_append``, ``pgbridge_delete_stream``,
  ``pgbridge_record_run_deletion``, ``pgbridge_trim_run_prefixes`` and the
  ``pgbridge_runs`` view read the head the same way.
* ``pgbridge_event_ms()`` (new): event times in ms, odd on odd PostgreSQL
  timelines and even on even ones, so an event that reuses the seq of one a
  failover lost never carries its ID.
* ``run_streams.trimmed_ms`` (new): the creation time of the last event
  retention deleted, written by the trim function beside ``trimmed_hash``.

The SQL: ``0012_history_and_heads.sql`` next to this file (frozen).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09
"""

from __future__ import annotations

from alembic import context

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
