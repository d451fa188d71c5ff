"""Group commit: ``pgbridge_append_batch``, many appends in one statement.

See ``pgbridge/batch_ddl.py``: the function runs the one-event append for
each element of its arrays, in order, and returns each element's seq and
creation time (NULL where the run already had its terminal event).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from pgbridge.batch_ddl import create_append_batch_function_sql, drop_append_batch_function_sql
from pgbridge.migration_support import schema_from_context

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in create_append_batch_function_sql(schema_from_context(), publish_checks=False):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_append_batch_function_sql(schema_from_context()):
        op.execute(statement)
