"""Run rows updated in place (HOT), and a set-based ``pgbridge_append_batch``.

* The four retention indexes of ``run_streams`` that covered a column every
  append changes (``updated_at``, or ``last_seq`` in a predicate or an
  expression) are replaced by indexes that find the same rows from columns an
  append leaves alone, so an append's update of its run row can be HOT.
* ``pgbridge_append_batch`` locks (or creates) every run of a batch in one
  statement in run_id order, numbers and chains the events in one pass, and
  stores the events and moves the runs with one statement each, instead of a
  ``SELECT ... FOR UPDATE`` and an ``UPDATE`` per run.

The SQL: ``0010_hot_run_rows.sql`` next to this file (frozen).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import context

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
