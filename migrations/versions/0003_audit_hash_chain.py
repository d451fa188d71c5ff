"""Audit: a per-run hash chain, and run_events made append-only by the database.

* ``run_events.hash``: each event's link in its run's chain (see
  ``pgbridge.chain``); existing events are chained here, in seq order.
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

The SQL: ``0003_audit_hash_chain.sql`` next to this file (frozen).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
