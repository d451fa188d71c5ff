"""Durable Streams forks (PROTOCOL.md 4.2): a fork is a run that reads its source's events up to a point.

A fork is a row of run_streams like any stream; it copies none of its
source's events. These columns say where it branches:

* ``fork_source_run_id``: the run it was forked from (itself maybe a fork);
* ``fork_offset_seq`` / ``fork_sub_offset``: what the creating PUT asked
  for (``Stream-Fork-Offset`` as a seq, ``Stream-Fork-Sub-Offset``), kept
  so a repeated PUT is compared with them;
* ``fork_seq``: the source's events with seq <= fork_seq are the fork's
  too. The fork's own events continue from there (``last_seq`` starts at
  ``fork_seq``, ``first_seq`` at ``fork_seq + 1``), so offsets read across
  the fork point without translation, and the fork's hash chain starts
  from the genesis hash at ``fork_seq + 1`` (audit checks it from
  ``first_seq`` like any run).

``fork_refs`` counts the live forks reading a run (its reference count).
A run with forks is never trimmed by retention (its events are theirs
too), and deleting it only soft-deletes it (``stream_deleted_at``): its
URL answers 410 and cannot be created again, while its forks still read
its events. Deleting the last fork of a soft-deleted run deletes it, up
the chain.

``pgbridge_stream_append`` is replaced by a version that answers ``gone``
for a soft-deleted stream.

The SQL: ``0007_stream_forks.sql`` next to this file (frozen).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
