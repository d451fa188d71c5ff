"""Frozen migrations (issue 20): the revisions are text, schema.sql is head, both build the same catalog."""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from alembic import command
from sqlalchemy import Connection

from pgbridge import migrate
from pgbridge.migrate import alembic_config
from pgbridge.migration_support import async_engine_for_dsn
from tests.support.catalog import MIGRATIONS, SCHEMA_PLACEHOLDER, SCHEMA_SQL, snapshot_of
from tests.support.postgres_server import DatabaseFactory

VERSIONS = MIGRATIONS / "versions"
REVISIONS = sorted(VERSIONS.glob("[0-9]*_*.py"))
#: What a revision may import: the standard library, alembic and SQLAlchemy. Never pgbridge,
#: whose code changes, while what a revision did to a database must not.
ALLOWED_IMPORTS = {"alembic", "sqlalchemy", *sys.stdlib_module_names}

EmptyDatabase = Callable[[], Coroutine[Any, Any, str]]


@pytest_asyncio.fixture
async def empty_database(databases: DatabaseFactory) -> AsyncIterator[EmptyDatabase]:
    """Make databases of this test's own that were never migrated; all dropped at the end."""
    made: list[str] = []

    async def make() -> str:
        made.append(await databases.create_empty())
        return made[-1]

    yield make
    for url in made:
        await databases.drop(url)


async def run_schema_sql(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
    finally:
        await conn.close()


def _command(connection: Connection, name: str, revision: str, schema: str) -> None:
    config = alembic_config(schema)
    config.attributes["connection"] = connection
    getattr(command, name)(config, revision)


async def alembic_command(dsn: str, name: str, revision: str, schema: str = "public") -> None:
    engine = async_engine_for_dsn(dsn)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_command, name, revision, schema)
    finally:
        await engine.dispose()


# -- schema.sql is head ---------------------------------------------------------------------


async def test_schema_sql_builds_the_catalog_a_migration_to_head_builds(
    empty_database: EmptyDatabase,
) -> None:
    migrated, built = await empty_database(), await empty_database()
    await migrate(migrated)
    await run_schema_sql(built)
    # Tables, columns, constraints, indexes, functions (bodies byte for byte), grants,
    # triggers, views, comments and the alembic_version row: see tests/support/catalog.py.
    assert (await snapshot_of(built)).splitlines() == (await snapshot_of(migrated)).splitlines()


async def test_a_database_built_from_schema_sql_is_up_to_date_for_migrate(
    empty_database: EmptyDatabase,
) -> None:
    built = await empty_database()
    await run_schema_sql(built)
    before = await snapshot_of(built)
    await migrate(built)
    assert await snapshot_of(built) == before


# -- downgrades undo upgrades --------------------------------------------------------------


@pytest.mark.parametrize("schema", ["public", 'Tenant "A"'])
async def test_downgrading_to_base_and_upgrading_again_gives_a_fresh_head(
    empty_database: EmptyDatabase, schema: str
) -> None:
    fresh, cycled = await empty_database(), await empty_database()
    await migrate(fresh, schema=schema)
    await migrate(cycled, schema=schema)
    await alembic_command(cycled, "downgrade", "base", schema)
    conn = await asyncpg.connect(cycled)
    try:
        left = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = quote_ident($1)::regnamespace "
            "AND relname NOT IN ('alembic_version', 'alembic_version_pkc')",
            schema,
        )
    finally:
        await conn.close()
    assert left == []
    await migrate(cycled, schema=schema)
    assert await snapshot_of(cycled, schema) == await snapshot_of(fresh, schema)


async def test_the_alembic_command_line_migrates_the_schema_given_by_x_schema(
    empty_database: EmptyDatabase,
) -> None:
    by_cli, by_api = await empty_database(), await empty_database()
    await migrate(by_api, schema="tenant_cli")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "alembic", "-c", str(MIGRATIONS.parent / "alembic.ini"),
        "-x", "schema=tenant_cli", "upgrade", "head",
        env={**os.environ, "PGBRIDGE_DSN": by_cli},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    assert await snapshot_of(by_cli, "tenant_cli") == await snapshot_of(by_api, "tenant_cli")
    assert "run_streams" not in await snapshot_of(by_cli, "public")


async def test_downgrading_0012_gives_the_catalog_of_0011_and_run_rows_0011_can_append_to(
    empty_database: EmptyDatabase,
) -> None:
    """0012's appends leave a run's row behind its newest event (both ways: one existing run,
    the short way, and the general way); 0011's functions read the row: the downgrade brings
    every row up to its newest event, then restores 0011's objects."""
    fresh, cycled = await empty_database(), await empty_database()
    await migrate(fresh, revision="0011")
    await migrate(cycled)
    conn = await asyncpg.connect(cycled)
    try:
        appended = await conn.fetch(
            "SELECT seq, created_ms FROM pgbridge_append_batch($1, $2, $3, $4, $5)",
            ["run"] * 10,
            ["token"] * 10,
            [str(i) for i in range(10)],
            [False] * 10,
            ["active"] * 10,
        )
        await conn.execute(  # nine more, one at a time (the short way): the row stays at seq 10
            "SELECT pgbridge_append_batch(ARRAY['run'], ARRAY['token'], ARRAY[i::text], ARRAY[false], "
            "ARRAY['active']) FROM generate_series(11, 19) AS i"
        )
        assert await conn.fetchval("SELECT last_seq FROM run_streams") == 10
        await conn.close()
        await alembic_command(cycled, "downgrade", "0011")
        assert await snapshot_of(cycled) == await snapshot_of(fresh)
        conn = await asyncpg.connect(cycled)
        row = await conn.fetchrow("SELECT last_seq, last_hash FROM run_streams")
        newest = await conn.fetchval("SELECT hash FROM run_events WHERE seq = 19")
        assert (row["last_seq"], row["last_hash"]) == (19, newest)
        added = await conn.fetchval(
            "SELECT seq FROM pgbridge_append_batch(ARRAY['run'], ARRAY['token'], ARRAY['20'], "
            "ARRAY[false], ARRAY['active'])"
        )
        assert added == 20 and appended[0]["seq"] == 1
    finally:
        await conn.close()
    await migrate(cycled)
    assert await snapshot_of(cycled) == await snapshot_of(await _migrated(empty_database))


async def test_downgrading_0013_gives_the_catalog_of_0012(empty_database: EmptyDatabase) -> None:
    """0013 only re-creates pgbridge_append_batch: its downgrade puts 0012's text back."""
    fresh, cycled = await empty_database(), await empty_database()
    await migrate(fresh, revision="0012")
    await migrate(cycled, revision="0013")
    await alembic_command(cycled, "downgrade", "0012")
    assert await snapshot_of(cycled) == await snapshot_of(fresh)


async def _migrated(empty_database: EmptyDatabase) -> str:
    dsn = await empty_database()
    await migrate(dsn)
    return dsn


# -- revisions are frozen text ------------------------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or ""))
    return modules


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda p: p.stem)
def test_a_revision_imports_nothing_from_pgbridge(revision: Path) -> None:
    modules = imported_modules(revision)
    assert not {m for m in modules if m.split(".")[0] == "pgbridge"}
    assert {m for m in modules if m.split(".")[0] not in ALLOWED_IMPORTS} <= {"__future__"}


def test_the_import_check_sees_an_import_of_pgbridge(tmp_path: Path) -> None:
    revision = tmp_path / "0099_x.py"
    revision.write_text("import os\nfrom pgbridge.queries import quote_identifier\n")
    assert imported_modules(revision) == {"os", "pgbridge.queries"}


def test_every_revision_file_lives_with_its_frozen_sql() -> None:
    sql = sorted(VERSIONS.glob("[0-9]*_*.sql"))
    runs_sql = [p for p in REVISIONS if '"run_frozen_sql"' in p.read_text(encoding="utf-8")]
    assert [p.with_suffix(".sql") for p in runs_sql] == sql
    for path in sql:
        text = path.read_text(encoding="utf-8")
        assert text.count("\n-- migrate:upgrade\n") == 1 and text.count("\n-- migrate:downgrade\n") == 1
        assert text.index("-- migrate:upgrade") < text.index("-- migrate:downgrade")
        # The schema is the placeholder's, never written out.
        body = text.split("\n-- migrate:upgrade\n", 1)[1]
        assert SCHEMA_PLACEHOLDER in body
        assert "public." not in body and '"public"' not in body


def test_schema_sql_is_the_head_revisions() -> None:
    head = max(p.name[:4] for p in REVISIONS)
    assert f"VALUES ('{head}');" in SCHEMA_SQL.read_text(encoding="utf-8")
