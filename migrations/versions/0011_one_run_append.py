"""``pgbridge_append_batch`` takes a short way for one run.

A call whose events all belong to one existing run that has no Durable
Streams check to make locks and reads the run row in one statement and
numbers and chains its events in place order, with no query and no sort;
everything else goes the way of revision 0010, unchanged.

The SQL: ``0011_one_run_append.sql`` next to this file (frozen).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import context

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
