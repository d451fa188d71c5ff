"""Expired Durable Streams: swept by retention, and gone for a bridge publish.

* ``pgbridge_delete_stream(run_id)``: what a DELETE of a stream no fork
  reads does (its events through the trim function, its run row, then its
  source's ``fork_refs``, and a soft-deleted source's own deletion, up the
  chain), in one place for DELETE, a publish to an expired stream and the
  retention sweep of expired streams.
* ``pgbridge_append_batch`` gets a sixth argument, ``publish`` (default
  false: ``pgbridge_stream_append`` made its own checks), and a fourth
  result column, ``refused``. A bridge publish passes true: a non-JSON
  stream's run refuses the events (``content_type``); an expired stream is
  deleted and the run created anew, or, while forks read it, soft-deleted
  and refused (``gone``). The checks are made on the run row the batch
  locks anyway. A new signature and result type cannot be replaced in
  place, so the old function is dropped and the new one created (a
  downgrade does the reverse).
* ``run_streams_expiring_idx``: the streams with a TTL or an Expires-At, so
  the retention sweep's scan reads those and not every run. Its key,
  ``run_id``, is never updated and its predicate's columns are set at
  creation, so it keeps a TTL touch (which writes ``stream_touched_at``) a
  HOT update.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pgbridge.batch_ddl import create_append_batch_function_sql, drop_append_batch_function_sql
from pgbridge.migration_support import schema_from_context
from pgbridge.stream_ddl import create_delete_stream_function_sql, drop_delete_stream_function_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_INDEX = "run_streams_expiring_idx"
_EXPIRING = "stream_expires_at IS NOT NULL OR stream_ttl_seconds IS NOT NULL"


def upgrade() -> None:
    schema = schema_from_context()
    for statement in create_delete_stream_function_sql(schema):
        op.execute(statement)
    for statement in drop_append_batch_function_sql(schema, publish_checks=False):
        op.execute(statement)
    for statement in create_append_batch_function_sql(schema, publish_checks=True):
        op.execute(statement)
    op.create_index(_INDEX, "run_streams", ["run_id"], schema=schema, postgresql_where=sa.text(_EXPIRING))


def downgrade() -> None:
    schema = schema_from_context()
    op.drop_index(_INDEX, table_name="run_streams", schema=schema)
    for statement in drop_append_batch_function_sql(schema, publish_checks=True):
        op.execute(statement)
    for statement in create_append_batch_function_sql(schema, publish_checks=False):
        op.execute(statement)
    for statement in drop_delete_stream_function_sql(schema):
        op.execute(statement)
