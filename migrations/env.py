"""Alembic environment for pgbridge.

Two ways in:

* :func:`pgbridge.migrate` hands over an open connection in
  ``config.attributes["connection"]`` and the schema in
  ``config.attributes["schema"]``;
* the ``alembic`` command line connects to ``PGBRIDGE_DSN`` (or
  ``DATABASE_URL``) itself, with ``-x schema=NAME`` for a schema other than
  ``public``.

Either way the revisions run in one transaction under an advisory lock, so
several processes migrating at once apply each revision exactly once.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection, text

from pgbridge.migration_support import (
    MIGRATION_LOCK_KEY,
    async_engine_for_dsn,
    include_object,
    schema_from_context,
)
from pgbridge.schema import metadata
from pgbridge.sql import quote_identifier


def _run(connection: Connection) -> None:
    schema = schema_from_context()
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}"))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_object=include_object,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_dsn(dsn: str) -> None:
    engine = async_engine_for_dsn(dsn)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("pgbridge migrations need a database connection (no --sql mode)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    dsn = os.environ.get("PGBRIDGE_DSN") or os.environ.get("DATABASE_URL")
    if not dsn:
        raise SystemExit("set PGBRIDGE_DSN (a postgresql:// URI) to run alembic against a database")
    asyncio.run(_run_from_dsn(dsn))


main()
