"""Schema and migrations (docs/behaviour.md §9) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Connection

from pgbridge import PostgresStreamBridge, SchemaNotMigratedError, migrate
from pgbridge.audit.chain import GENESIS, link_hash
from pgbridge.migrate import alembic_config, head_revision
from pgbridge.migration_support import async_engine_for_dsn, include_object
from pgbridge.schema import metadata
from pgbridge.sql import SCHEMA_REVISION, quote_identifier
from tests.support.catalog import (
    EVENTS_VIEW,
    EVENTS_VIEW_COLUMNS,
    RUNS_VIEW,
    RUNS_VIEW_COLUMNS,
    function_body,
    view_sql,
)
from tests.support.helpers import collect
from tests.support.postgres_server import DatabaseFactory

RUN_TABLES = {"run_streams", "run_events", "retention_last_pass"}
VIEWS = {RUNS_VIEW: RUNS_VIEW_COLUMNS, EVENTS_VIEW: EVENTS_VIEW_COLUMNS}


@pytest_asyncio.fixture
async def empty_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    """A database of its own that was never migrated."""
    url = await databases.create_empty()
    yield url
    await databases.drop(url)


async def tables_in(dsn: str, schema: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


async def versions_in(dsn: str, schema: str = "public") -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT version_num FROM "{schema}".alembic_version')
    finally:
        await conn.close()
    return [row["version_num"] for row in rows]


async def primary_key(dsn: str, table: str) -> list[str]:
    """The primary key's columns of *table* (in public), in key order."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetchval(
                """
                SELECT array_agg(a.attname ORDER BY k.ord)
                FROM pg_constraint AS c
                CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                WHERE c.conrelid = to_regclass($1) AND c.contype = 'p'
                """,
                f"public.{table}",
            )
            or []
        )
    finally:
        await conn.close()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection=connection,
        opts={
            "include_object": include_object,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, metadata))


async def schema_diff(dsn: str) -> list[Any]:
    engine = async_engine_for_dsn(dsn)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_diff)
    finally:
        await engine.dispose()


# -- migrate() ----------------------------------------------------------------


async def test_migrate_twice_is_a_no_op(empty_dsn: str) -> None:
    await migrate(empty_dsn)
    await migrate(empty_dsn)
    assert await versions_in(empty_dsn) == [head_revision()]
    assert await tables_in(empty_dsn, "public") >= RUN_TABLES


async def test_migrate_on_an_up_to_date_database_keeps_its_data(dsn: str) -> None:
    async with PostgresStreamBridge(dsn) as bridge:
        sent = await bridge.publish("run", "token", {"kept": True})
    await migrate(dsn)
    async with PostgresStreamBridge(dsn) as bridge:
        assert (await bridge.resolve("run", sent)).status == "resumed"


async def test_concurrent_migrations_of_a_fresh_database_both_succeed(empty_dsn: str) -> None:
    # return_exceptions: let both finish before judging, so none outlives the test.
    results = await asyncio.gather(migrate(empty_dsn), migrate(empty_dsn), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert await versions_in(empty_dsn) == [head_revision()]
    async with PostgresStreamBridge(empty_dsn) as bridge:
        assert await bridge.publish("run", "token", 1)


async def test_concurrent_migrations_from_several_processes_all_succeed(empty_dsn: str) -> None:
    code = "import asyncio, sys, pgbridge; asyncio.run(pgbridge.migrate(sys.argv[1]))"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, empty_dsn, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    outcomes = [await p.communicate() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err.decode() for _, err in outcomes]
    assert await versions_in(empty_dsn) == [head_revision()]
    async with PostgresStreamBridge(empty_dsn) as bridge:
        assert await bridge.publish("run", "token", 1)


async def test_schema_revision_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_REVISION


# -- a configurable schema ------------------------------------------------------


async def test_migrate_into_a_custom_schema_leaves_public_without_run_tables(empty_dsn: str) -> None:
    await migrate(empty_dsn, schema="custom")
    assert {"alembic_version", *RUN_TABLES} <= await tables_in(empty_dsn, "custom")
    assert not RUN_TABLES & await tables_in(empty_dsn, "public")
    assert await versions_in(empty_dsn, "custom") == [head_revision()]


async def test_bridge_on_a_custom_schema_publishes_and_subscribes(empty_dsn: str) -> None:
    await migrate(empty_dsn, schema="custom")
    async with PostgresStreamBridge(empty_dsn, schema="custom") as bridge:
        sent = [await bridge.publish("run", "token", i) for i in range(3)]
        sent.append(await bridge.publish_end("run"))
        assert [e.id for e in await collect(bridge.subscribe("run"))] == sent
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM custom.run_events") == 4
    finally:
        await conn.close()
    assert not RUN_TABLES & await tables_in(empty_dsn, "public")


async def test_bridges_on_a_custom_schema_see_each_others_events(empty_dsn: str) -> None:
    await migrate(empty_dsn, schema="custom")
    async with (
        PostgresStreamBridge(empty_dsn, schema="custom", poll_interval=3600) as reader,
        PostgresStreamBridge(empty_dsn, schema="custom", poll_interval=3600) as writer,
    ):
        stream = reader.subscribe("run", heartbeat_interval=0.05)
        assert (await asyncio.wait_for(anext(stream), 5)).event == "__heartbeat__"
        sent = [await writer.publish("run", "token", 1), await writer.publish_end("run")]
        assert [e.id for e in await collect(stream)] == sent


async def test_default_schema_bridge_on_a_custom_only_database_is_not_migrated(empty_dsn: str) -> None:
    await migrate(empty_dsn, schema="custom")
    bridge = PostgresStreamBridge(empty_dsn)
    try:
        await bridge.start()
    except SchemaNotMigratedError as exc:
        assert "pgbridge migrate" in str(exc)
    else:  # pragma: no cover - the assertion below reports it
        await bridge.close()
        raise AssertionError("start() on an unmigrated public schema succeeded")


async def test_custom_schema_bridge_on_a_public_only_database_is_not_migrated(dsn: str) -> None:
    bridge = PostgresStreamBridge(dsn, schema="custom")
    try:
        await bridge.start()
    except SchemaNotMigratedError as exc:
        assert "pgbridge migrate" in str(exc)
        assert "custom" in str(exc)
    else:  # pragma: no cover - the assertion below reports it
        await bridge.close()
        raise AssertionError("start() on an unmigrated custom schema succeeded")


# -- the migrated database matches the metadata --------------------------------


async def test_migrated_database_matches_the_sqlalchemy_metadata(dsn: str) -> None:
    assert await schema_diff(dsn) == []


@pytest.mark.parametrize(
    "index", sorted(i.name for t in metadata.tables.values() for i in t.indexes if i.name)
)
async def test_metadata_comparison_notices_a_missing_index(dsn: str, index: str) -> None:
    # Guards the test above against comparing nothing: drift must show up,
    # expression and partial indexes included.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP INDEX {index}")
    finally:
        await conn.close()
    diff = await schema_diff(dsn)
    assert [(d[0], d[1].name) for d in diff] == [("add_index", index)]


async def test_check_constraints_match_the_metadata(dsn: str) -> None:
    # Autogenerate does not compare CHECK constraints, so compare them by name.
    expected = {
        (table.name, constraint.name)
        for table in metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT conrelid::regclass::text AS table_name, conname FROM pg_constraint "
            "WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
        )
    finally:
        await conn.close()
    assert {(row["table_name"], row["conname"]) for row in rows} == expected


async def test_run_events_primary_key_is_run_id_then_seq(dsn: str) -> None:
    assert await primary_key(dsn, "run_events") == ["run_id", "seq"]


async def test_run_streams_primary_key_is_run_id(dsn: str) -> None:
    assert await primary_key(dsn, "run_streams") == ["run_id"]


async def test_upgrading_from_0001_fills_first_ms_and_chains_existing_events(empty_dsn: str) -> None:
    await migrate(empty_dsn, revision="0001")
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute(
            """
            INSERT INTO run_streams (run_id, last_seq, last_ms, first_seq)
            VALUES ('run', 3, 300, 2), ('empty', 2, 9, 3);
            INSERT INTO run_events (run_id, seq, created_ms, event, data)
            VALUES ('run', 2, 200, 'token', '1'), ('run', 3, 300, 'token', '2');
            """
        )
        await migrate(empty_dsn)
        rows = await conn.fetch("SELECT run_id, first_ms, last_hash FROM run_streams ORDER BY run_id")
        hashes = [r["hash"] for r in await conn.fetch("SELECT hash FROM run_events ORDER BY seq")]
    finally:
        await conn.close()
    assert [(r["run_id"], r["first_ms"]) for r in rows] == [("empty", None), ("run", 200)]
    # A run trimmed before the chain existed chains from its first retained event.
    first = link_hash(GENESIS, "run", 2, 200, "token", "1")
    assert hashes == [first, link_hash(first, "run", 3, 300, "token", "2")]
    assert rows[1]["last_hash"] == hashes[-1] and rows[0]["last_hash"] is None


async def test_the_append_function_in_the_database_is_the_one_in_the_code(dsn: str) -> None:
    # Alembic does not track functions: the body at head is the one the newest
    # revision's frozen SQL creates (0008), byte for byte.
    conn = await asyncpg.connect(dsn)
    try:
        body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'pgbridge_append_batch'")
    finally:
        await conn.close()
    assert body == function_body("pgbridge_append_batch")


# -- the views (revision 0005) ----------------------------------------------------


async def view_drift(dsn: str, schema: str = "public") -> list[str]:
    """The views whose definition in the database is not the one in the revisions' frozen SQL.

    Alembic does not compare views, and PostgreSQL stores a view's query in
    its own normal form: so each view is re-created from the newest revision
    that creates it (migrations/versions/NNNN_*.sql) inside a
    transaction that is rolled back, and PostgreSQL's rendering of the two
    compared. A missing view, or one the code cannot replace (a column
    renamed, retyped or removed), is drift too.
    """
    drifted = []
    conn = await asyncpg.connect(dsn)
    try:
        for name, ddl in (
            (RUNS_VIEW, view_sql(RUNS_VIEW, schema)),
            (EVENTS_VIEW, view_sql(EVENTS_VIEW, schema)),
        ):
            qualified = f"{quote_identifier(schema)}.{name}"
            stored = await conn.fetchval("SELECT pg_get_viewdef(to_regclass($1))", qualified)
            recreated = None
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(ddl)
                recreated = await conn.fetchval("SELECT pg_get_viewdef(to_regclass($1))", qualified)
            except asyncpg.PostgresError:
                pass
            finally:
                await transaction.rollback()
            if stored is None or stored != recreated:
                drifted.append(name)
    finally:
        await conn.close()
    return drifted


async def view_columns(dsn: str, view: str, schema: str = "public") -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            schema,
            view,
        )
    finally:
        await conn.close()
    return [row["column_name"] for row in rows]


async def test_the_views_in_the_database_are_the_ones_in_the_code(dsn: str) -> None:
    # A view is changed only by a new revision that re-creates it.
    assert await view_drift(dsn) == []


#: A compatible change to each view (same columns, another expression).
TAMPERED = {
    RUNS_VIEW: lambda: view_sql(RUNS_VIEW).replace("r.run_id,", "lower(r.run_id) AS run_id,", 1),
    EVENTS_VIEW: lambda: view_sql(EVENTS_VIEW).replace("e.seq,", "e.seq + 0 AS seq,", 1),
}


@pytest.mark.parametrize("view", sorted(VIEWS))
async def test_view_comparison_notices_a_changed_view(dsn: str, view: str) -> None:
    # Guards the test above against comparing nothing.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TAMPERED[view]())
    finally:
        await conn.close()
    assert await view_drift(dsn) == [view]


async def test_view_comparison_notices_a_missing_view(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP VIEW {EVENTS_VIEW}")
    finally:
        await conn.close()
    assert await view_drift(dsn) == [EVENTS_VIEW]


@pytest.mark.parametrize("view", sorted(VIEWS))
async def test_view_columns_are_the_documented_ones_in_order(dsn: str, view: str) -> None:
    assert await view_columns(dsn, view) == list(VIEWS[view])


async def test_migrate_into_a_custom_schema_puts_the_views_over_that_schemas_tables(empty_dsn: str) -> None:
    await migrate(empty_dsn, schema="custom")
    async with PostgresStreamBridge(empty_dsn, schema="custom") as bridge:
        sent = await bridge.publish("run", "token", 1)
    assert await view_drift(empty_dsn, "custom") == []
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT event_id FROM custom.pgbridge_events") == sent
        assert await conn.fetchval("SELECT last_event_id FROM custom.pgbridge_runs") == sent
    finally:
        await conn.close()
    assert not set(VIEWS) & await tables_in(empty_dsn, "public")


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config("public")
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def downgrade(dsn: str, revision: str) -> None:
    engine = async_engine_for_dsn(dsn)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, revision)
    finally:
        await engine.dispose()


async def test_downgrading_0005_drops_the_views_and_the_retention_record(dsn: str) -> None:
    await downgrade(dsn, "0004")
    relations = await tables_in(dsn, "public")
    assert not (set(VIEWS) | {"retention_last_pass"}) & relations
    assert {"run_streams", "run_events"} <= relations
    await migrate(dsn)
    assert await view_drift(dsn) == [] and await schema_diff(dsn) == []


# -- forks (revision 0007) -----------------------------------------------------------


async def stream_append_source(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        body: str = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'pgbridge_stream_append'")
    finally:
        await conn.close()
    return body


async def test_the_stream_append_function_in_the_database_is_the_one_in_the_code(dsn: str) -> None:
    assert await stream_append_source(dsn) == function_body("pgbridge_stream_append")


async def test_downgrading_0007_drops_the_fork_columns_and_restores_the_0006_append(dsn: str) -> None:
    await downgrade(dsn, "0006")
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'run_streams' AND column_name LIKE '%fork%'"
        )
    finally:
        await conn.close()
    assert columns == []
    assert await stream_append_source(dsn) == function_body("pgbridge_stream_append", "0006")
    assert function_body("pgbridge_stream_append", "0007", "downgrade") == function_body(
        "pgbridge_stream_append", "0006"
    )
    await migrate(dsn)
    assert await schema_diff(dsn) == []
    assert await stream_append_source(dsn) == function_body("pgbridge_stream_append")


# -- expired streams (revision 0008) ---------------------------------------------------


async def function_names(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT proname || '/' || pronargs AS name FROM pg_proc WHERE proname LIKE 'pgbridge_%'"
        )
    finally:
        await conn.close()
    return {row["name"] for row in rows}


async def test_the_delete_stream_function_in_the_database_is_the_one_in_the_code(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'pgbridge_delete_stream'")
    finally:
        await conn.close()
    assert body == function_body("pgbridge_delete_stream")


async def test_downgrading_0008_restores_the_0004_append_and_drops_the_delete_function(dsn: str) -> None:
    await downgrade(dsn, "0007")
    names = await function_names(dsn)
    assert "pgbridge_append_batch/5" in names and "pgbridge_append_batch/6" not in names
    assert "pgbridge_delete_stream/1" not in names
    conn = await asyncpg.connect(dsn)
    try:
        body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'pgbridge_append_batch'")
        index = await conn.fetchval("SELECT to_regclass('public.run_streams_expiring_idx')")
    finally:
        await conn.close()
    assert body == function_body("pgbridge_append_batch", "0004")
    assert function_body("pgbridge_append_batch", "0008", "downgrade") == body
    assert index is None
    await migrate(dsn)
    assert await schema_diff(dsn) == []
    assert {"pgbridge_append_batch/6", "pgbridge_delete_stream/2"} <= await function_names(dsn)
    assert "pgbridge_append_batch/5" not in await function_names(dsn)


# -- deletion records (revision 0009) ---------------------------------------------------


async def test_downgrading_0009_restores_the_0008_functions_and_drops_the_deletion_records(dsn: str) -> None:
    await downgrade(dsn, "0008")
    names = await function_names(dsn)
    assert "pgbridge_delete_stream/1" in names and "pgbridge_delete_stream/2" not in names
    assert not {"pgbridge_guard_run_deletions/0", "pgbridge_record_run_deletion/0"} & names
    body_of = "SELECT prosrc FROM pg_proc WHERE proname = $1"
    conn = await asyncpg.connect(dsn)
    try:
        table = await conn.fetchval("SELECT to_regclass('public.run_deletions')")
        trigger = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'run_streams_record_deletion'"
        )
        delete_body = await conn.fetchval(body_of, "pgbridge_delete_stream")
        append_body = await conn.fetchval(body_of, "pgbridge_append_batch")
    finally:
        await conn.close()
    assert table is None and trigger == 0
    assert delete_body == function_body("pgbridge_delete_stream", "0008")
    assert append_body == function_body("pgbridge_append_batch", "0008")
    await migrate(dsn)
    assert await schema_diff(dsn) == []
    names = await function_names(dsn)
    assert "pgbridge_delete_stream/2" in names and "pgbridge_delete_stream/1" not in names


async def test_a_run_row_deleted_in_sql_is_recorded_too(dsn: str) -> None:
    async with PostgresStreamBridge(dsn) as bridge:
        await bridge.publish("run", "token", 1)
        conn = await asyncpg.connect(dsn)
        try:
            last_hash = await conn.fetchval("SELECT last_hash FROM run_streams WHERE run_id = 'run'")
            await conn.execute("DELETE FROM run_streams WHERE run_id = 'run'")
            records = await conn.fetch("SELECT via, last_seq, events_deleted, last_hash FROM run_deletions")
        finally:
            await conn.close()
        assert [tuple(r) for r in records] == [("sql", 1, 0, last_hash)]
        report = await bridge.verify("run")
    assert report.verdict == "deleted" and report.deletion is not None and report.deletion.via == "sql"
