"""Every statement of pgbridge/sql/demo.sql is valid SQL on a migrated database, and the
demo shows the user the statement it runs."""

from __future__ import annotations

import asyncpg
import pytest

from pgbridge.cli.demo import DemoQueries
from pgbridge.sql import Statement, load_statements, statements_of

STATEMENTS = statements_of("demo.sql")


def test_the_queries_class_names_the_files_statements() -> None:
    assert [s.name for s in STATEMENTS] == ["last_events"]
    assert (
        DemoQueries.for_schema("public").last_events == load_statements("demo.sql", "public")["last_events"]
    )


@pytest.mark.parametrize("statement", STATEMENTS, ids=[s.name for s in STATEMENTS])
async def test_each_statement_prepares_with_the_parameters_its_header_describes(
    statement: Statement, dsn: str
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        prepared = await conn.prepare(load_statements("demo.sql", "public")[statement.name])
        parameters = [t.name for t in prepared.get_parameters()]
    finally:
        await conn.close()
    assert parameters == ["text"]
    assert "$1 text" in statement.description and "Locks:" in statement.description


async def test_the_last_events_read_oldest_first_in_a_schema_other_than_public(dsn: str) -> None:
    from pgbridge import PostgresStreamBridge
    from pgbridge.migrate import migrate

    await migrate(dsn, schema="tenant two")
    async with PostgresStreamBridge(dsn, schema="tenant two") as bridge:
        ids = [await bridge.publish("run", "token", {"i": i}) for i in range(5)]
    query = DemoQueries.for_schema("tenant two").last_events
    assert 'FROM "tenant two".run_events' in query
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(query, "run")
    finally:
        await conn.close()
    assert [(r["event_id"], r["event"], r["data"]) for r in rows] == [
        (ids[i], "token", f'{{"i":{i}}}') for i in (2, 3, 4)
    ]
