"""Deletion records: every run deleted leaves one (run_deletions), for verify and auditors.

* ``run_deletions``: one append-only row per run row deleted (the run, when,
  by which path, its status and start, ``last_seq``, ``last_hash`` and the
  events still stored that went with it), written in the deleting
  transaction; a statement trigger refuses UPDATE, DELETE and TRUNCATE.
* ``pgbridge_delete_stream(run_id, via)`` replaces revision 0008's
  ``pgbridge_delete_stream(run_id)``: the same deletion, writing each run
  row's record. ``pgbridge_append_batch`` calls it with ``'expiry'`` (its
  body is otherwise revision 0008's).
* ``run_streams_record_deletion``: a row trigger that records a run row
  deleted by any other statement (``via = 'sql'``), so no path skips it.

The SQL: ``0009_run_deletions.sql`` next to this file (frozen).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
