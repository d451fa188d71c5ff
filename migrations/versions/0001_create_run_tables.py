"""Create run_streams (one row per run) and run_events (the log itself).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    timestamptz = postgresql.TIMESTAMP(timezone=True)
    op.create_table(
        "run_streams",
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'active'")),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_ms", sa.BigInteger()),
        sa.Column("first_seq", sa.BigInteger(), nullable=False, server_default=sa.text("1")),
        sa.Column("terminal_seq", sa.BigInteger()),
        sa.Column("awaiting_input_since", timestamptz),
        sa.Column("created_at", timestamptz, nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", timestamptz, nullable=False, server_default=sa.text("now()")),
        sa.Column("ended_at", timestamptz),
        sa.CheckConstraint(
            "status IN ('active', 'awaiting_input', 'ended', 'cancelled', 'errored')",
            name="run_streams_status_check",
        ),
        sa.CheckConstraint("char_length(run_id) BETWEEN 1 AND 255", name="run_streams_run_id_length_check"),
        sa.CheckConstraint(
            "first_seq >= 1 AND first_seq <= last_seq + 1",
            name="run_streams_retained_range_check",
        ),
        sa.CheckConstraint(
            "(terminal_seq IS NULL) = (status IN ('active', 'awaiting_input'))",
            name="run_streams_terminal_status_check",
        ),
        schema=schema,
    )
    op.create_index(
        "run_streams_open_updated_idx",
        "run_streams",
        ["updated_at"],
        schema=schema,
        postgresql_where=sa.text("terminal_seq IS NULL"),
    )
    op.create_index(
        "run_streams_ended_idx",
        "run_streams",
        ["ended_at"],
        schema=schema,
        postgresql_where=sa.text("ended_at IS NOT NULL"),
    )
    op.create_table(
        "run_events",
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSON(), nullable=False),
        sa.Column("terminal", sa.Boolean(), nullable=False, server_default=sa.false()),
        schema=schema,
    )


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_table("run_events", schema=schema)
    op.drop_table("run_streams", schema=schema)
