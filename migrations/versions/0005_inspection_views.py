"""Inspection: the pgbridge_runs and pgbridge_events views, and the last retention pass.

* ``pgbridge_runs`` and ``pgbridge_events`` (``pgbridge/views_ddl.py``, every
  column documented in ``docs/sql.md``): runs and events as plain SQL, with
  event IDs in their public ``<ms>-<seq>`` form and times as ``timestamptz``.
* ``retention_last_pass``: one row, replaced by every retention pass, so
  ``pgbridge stats`` can say when retention last ran and what it did,
  whichever process ran it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from pgbridge.migration_support import schema_from_context
from pgbridge.views_ddl import create_views_sql, drop_views_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = schema_from_context()
    timestamptz = postgresql.TIMESTAMP(timezone=True)
    op.create_table(
        "retention_last_pass",
        sa.Column("id", sa.SmallInteger(), primary_key=True, server_default=sa.text("1")),
        sa.Column("started_at", timestamptz, nullable=False),
        sa.Column("finished_at", timestamptz, nullable=False),
        sa.Column("events_deleted", sa.BigInteger(), nullable=False),
        sa.Column("runs_deleted", sa.BigInteger(), nullable=False),
        sa.Column("runs_dead_lettered", sa.BigInteger(), nullable=False),
        sa.Column("tables_vacuumed", sa.Integer(), nullable=False),
        sa.Column("policy", postgresql.JSON(), nullable=False),
        sa.Column("passes", sa.BigInteger(), nullable=False, server_default=sa.text("1")),
        sa.CheckConstraint("id = 1", name="retention_last_pass_one_row_check"),
        schema=schema,
    )
    for statement in create_views_sql(schema):
        op.execute(statement)


def downgrade() -> None:
    schema = schema_from_context()
    for statement in drop_views_sql(schema):
        op.execute(statement)
    op.drop_table("retention_last_pass", schema=schema)
