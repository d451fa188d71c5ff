"""Alembic environment for pgbridge.

Two ways in:

* :func:`pgbridge.migrate` hands over an open connection in
  ``config.attributes["connection"]`` and the schema in
  ``config.attributes["schema"]``;
* the ``alembic`` command line connects to ``PGBRIDGE_DSN`` (or
  ``DATABASE_URL``) itself, with ``-x schema=NAME`` for a schema other than
  ``public``.

Either way ``config.attributes["schema"]`` is set before any revision runs
(the revisions read the schema there and nowhere else), and the revisions run
in one transaction under an advisory lock, so several processes migrating at
once apply each revision exactly once.

Revisions are frozen text (see migrations/README.md): from 0003 on, each runs
the SQL of the ``.sql`` file next to it through :func:`run_frozen_sql`, which
this environment hands to them as ``config.attributes["run_frozen_sql"]``.
Only the mechanics live here (find the section, fill in the schema, split the
statements); the SQL is the revision's own.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from alembic import context, op
from sqlalchemy import Connection, text

from pgbridge.migration_support import (
    MIGRATION_LOCK_KEY,
    async_engine_for_dsn,
    include_object,
    schema_from_context,
)
from pgbridge.schema import metadata

#: What a revision's ``.sql`` file writes for the target schema (filled in as a quoted identifier).
SCHEMA_PLACEHOLDER = "__SCHEMA__"
#: The line that starts a section of a revision's ``.sql`` file.
_SECTION = re.compile(r"^-- migrate:(upgrade|downgrade)[ \t]*$", re.MULTILINE)
#: What a statement splitter must step over: dollar-quoted bodies, strings, quoted names, comments.
_LEXEME = re.compile(r"""\$\w*\$|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|;""", re.DOTALL)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def quote_identifier(name: str) -> str:
    """*name* as a PostgreSQL quoted identifier."""
    if not name or "\x00" in name:
        raise ValueError(f"not a valid PostgreSQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def split_statements(sql: str) -> list[str]:
    """The statements of *sql*, split at each ``;`` outside quotes, comments and ``$tag$`` bodies.

    A comment before a statement stays with it; text that is only comments is dropped.
    """
    statements, start, pos = [], 0, 0
    while match := _LEXEME.search(sql, pos):
        pos = match.end()
        if match.group().startswith("$"):  # a dollar-quoted body runs to the same tag
            pos = sql.index(match.group(), pos) + len(match.group())
        elif match.group() == ";":
            statements.append(sql[start : match.start()])
            start = pos
    statements.append(sql[start:])
    return [s.strip() for s in statements if _COMMENTS.sub("", s).strip()]


def frozen_statements(sql: str, section: str, schema: str) -> list[str]:
    """The statements of *section* (``upgrade``, ``downgrade``) of a revision's SQL, for *schema*."""
    parts = _SECTION.split(sql)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    if section not in sections:
        raise ValueError(f"no '-- migrate:{section}' section")
    return split_statements(sections[section].replace(SCHEMA_PLACEHOLDER, quote_identifier(schema)))


def run_frozen_sql(revision_file: str, section: str) -> None:
    """Run *section* of the ``.sql`` file next to *revision_file*, statement by statement."""
    sql = Path(revision_file).with_suffix(".sql").read_text(encoding="utf-8")
    for statement in frozen_statements(sql, section, context.config.attributes["schema"]):
        op.execute(statement)


def _run(connection: Connection) -> None:
    schema = context.config.attributes["schema"] = schema_from_context()
    context.config.attributes["run_frozen_sql"] = run_frozen_sql
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
