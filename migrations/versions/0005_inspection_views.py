"""Inspection: the pgbridge_runs and pgbridge_events views, and the last retention pass.

* ``pgbridge_runs`` and ``pgbridge_events`` (every column documented in
  ``docs/sql.md``): runs and events as plain SQL, with
  event IDs in their public ``<ms>-<seq>`` form and times as ``timestamptz``.
* ``retention_last_pass``: one row, replaced by every retention pass, so
  ``pgbridge stats`` can say when retention last ran and what it did,
  whichever process ran it.

The SQL: ``0005_inspection_views.sql`` next to this file (frozen).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import context

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
