"""Retention: first_ms on run_streams, and an index for each retention scan.

``first_ms`` (the creation time of the first retained event) lets age-based
retention find old runs through an index and gives the earliest retained
event ID without a join. Each new index matches one retention query, so a
pass reads only the rows it acts on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_RETAINS_EVENTS = "first_seq <= last_seq"


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    s = '"' + schema.replace('"', '""') + '"'  # quoted
    op.add_column("run_streams", sa.Column("first_ms", sa.BigInteger()), schema=schema)
    op.execute(
        f"""
        UPDATE {s}.run_streams AS r SET first_ms = e.created_ms
        FROM {s}.run_events AS e
        WHERE e.run_id = r.run_id AND e.seq = r.first_seq
        """
    )
    op.create_index(
        "run_streams_ended_retained_idx",
        "run_streams",
        ["ended_at"],
        schema=schema,
        postgresql_where=sa.text(f"ended_at IS NOT NULL AND {_RETAINS_EVENTS}"),
    )
    op.create_index(
        "run_streams_retained_count_idx",
        "run_streams",
        [sa.text("(last_seq - first_seq)")],
        schema=schema,
        postgresql_where=sa.text(_RETAINS_EVENTS),
    )
    op.create_index(
        "run_streams_first_ms_idx",
        "run_streams",
        ["first_ms"],
        schema=schema,
        postgresql_where=sa.text(_RETAINS_EVENTS),
    )


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_index("run_streams_first_ms_idx", table_name="run_streams", schema=schema)
    op.drop_index("run_streams_retained_count_idx", table_name="run_streams", schema=schema)
    op.drop_index("run_streams_ended_retained_idx", table_name="run_streams", schema=schema)
    op.drop_column("run_streams", "first_ms", schema=schema)
