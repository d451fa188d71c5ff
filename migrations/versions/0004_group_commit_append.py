"""Group commit: ``pgbridge_append_batch``, many appends in one statement.

The function runs the one-event append for each element of its arrays, in
order, and returns each element's seq and creation time (NULL where the run
already had its terminal event); the comment above it in the ``.sql`` file
says how.

The SQL: ``0004_group_commit_append.sql`` next to this file (frozen).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
