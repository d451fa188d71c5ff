"""Audit: a per-run hash chain, and run_events made append-only by the database.

* ``run_events.hash``: each event's link in its run's chain (see
  ``pgbridge/chain.py``); existing events are chained here, in seq order.
* ``run_streams.last_hash`` (the newest event's hash) and ``trimmed_hash``
  (the last deleted event's, once retention deleted some: the chain of the
  retained events starts from it).
* ``pgbridge_link_hash(...)``: the link hash in SQL, used by every append.
* A guard trigger: UPDATE and TRUNCATE of run_events always fail; DELETE
  fails unless the transaction runs with ``pgbridge.retention = on``, which
  only ``pgbridge_trim_run_prefixes(...)`` (SECURITY DEFINER, owned by the
  migrating role) sets. A runtime role given INSERT and SELECT on run_events
  and EXECUTE on that function can append and run retention, and can neither
  rewrite history nor switch the guard off (that takes the table's owner).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from pgbridge.audit_ddl import (
    create_guard_sql,
    create_link_hash_function_sql,
    create_trim_function_sql,
    drop_audit_objects_sql,
)
from pgbridge.migration_support import schema_from_context
from pgbridge.sql.queries import GENESIS_SQL, quote_identifier

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = schema_from_context()
    s = quote_identifier(schema)
    op.add_column("run_events", sa.Column("hash", postgresql.BYTEA()), schema=schema)
    op.add_column("run_streams", sa.Column("last_hash", postgresql.BYTEA()), schema=schema)
    op.add_column("run_streams", sa.Column("trimmed_hash", postgresql.BYTEA()), schema=schema)
    for statement in create_link_hash_function_sql(schema):
        op.execute(statement)
    # Chain what is already stored. Events deleted before this revision are
    # unknown: such a run's chain starts from its first retained event.
    op.execute(
        f"""
        DO $$
        DECLARE
            run record;
            ev record;
            prev bytea;
        BEGIN
            FOR run IN SELECT run_id FROM {s}.run_streams LOOP
                prev := {GENESIS_SQL};
                FOR ev IN
                    SELECT seq, created_ms, event, data::text AS data
                    FROM {s}.run_events WHERE run_id = run.run_id ORDER BY seq
                LOOP
                    prev := {s}.pgbridge_link_hash(
                        prev, run.run_id, ev.seq, ev.created_ms, ev.event, ev.data);
                    UPDATE {s}.run_events SET hash = prev WHERE run_id = run.run_id AND seq = ev.seq;
                END LOOP;
                UPDATE {s}.run_streams SET last_hash = prev
                WHERE run_id = run.run_id AND last_seq > 0 AND first_seq <= last_seq;
            END LOOP;
        END $$
        """
    )
    op.alter_column("run_events", "hash", nullable=False, schema=schema)
    for statement in [*create_trim_function_sql(schema), *create_guard_sql(schema)]:
        op.execute(statement)


def downgrade() -> None:
    schema = schema_from_context()
    for statement in drop_audit_objects_sql(schema):
        op.execute(statement)
    op.drop_column("run_streams", "trimmed_hash", schema=schema)
    op.drop_column("run_streams", "last_hash", schema=schema)
    op.drop_column("run_events", "hash", schema=schema)
