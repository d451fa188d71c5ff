"""pgbridge_append_batch stores several runs, each once, set-based.

Revision 0012's function with one more way: a batch of several runs, each
once, none of them ended or a Durable Stream with a check to make, in a read
committed transaction, is numbered, chained and stored by one statement
instead of the loop over its events (the loop cost ~2.7 us an event more for
100 runs x 1 event). Every other batch goes revision 0012's ways.

The SQL: ``0013_set_based_batches.sql`` next to this file (frozen).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10
"""

from __future__ import annotations

from alembic import context

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "upgrade")


def downgrade() -> None:
    context.config.attributes["run_frozen_sql"](__file__, "downgrade")
