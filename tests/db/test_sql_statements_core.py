"""Every statement of pgbridge/sql/events.sql is valid SQL on a migrated database.

Each one is PREPAREd (parsed, analysed, planned: a typo, a missing column or
a wrong type fails here, even in a statement tests rarely run), its
parameters are the types its header describes, and its header says what it
relies on.
"""

from __future__ import annotations

import re

import asyncpg
import pytest

from pgbridge.sql import Statement, load_statements, statements_of

STATEMENTS = statements_of("events.sql")

#: How a header names a parameter's type, and asyncpg's name for that type.
TYPE_NAMES = {
    "text": "text",
    "text[]": "text[]",
    "bigint": "int8",
    "bigint[]": "int8[]",
    "boolean[]": "bool[]",
    "boolean": "bool",
}
PARAMETER = re.compile(r"\$(\d+) (text\[\]|bigint\[\]|boolean\[\]|text|bigint|boolean)(?![\w\[])")


def test_the_file_names_the_statements_of_the_core() -> None:
    assert len(STATEMENTS) == 29
    assert {"append_events", "notify_runs", "read_events_after", "chain_rows"} <= {s.name for s in STATEMENTS}


@pytest.mark.parametrize("statement", STATEMENTS, ids=[s.name for s in STATEMENTS])
async def test_each_statement_prepares_with_the_parameters_its_header_describes(
    statement: Statement, dsn: str
) -> None:
    text = load_statements("events.sql", "public")[statement.name]
    conn = await asyncpg.connect(dsn)
    try:
        prepared = await conn.prepare(text)
        parameters = [t.name for t in prepared.get_parameters()]
    finally:
        await conn.close()
    described = {int(n): TYPE_NAMES[t] for n, t in PARAMETER.findall(statement.description)}
    assert described == dict(enumerate(parameters, start=1)), statement.description


@pytest.mark.parametrize("statement", STATEMENTS, ids=[s.name for s in STATEMENTS])
def test_each_header_says_what_the_statement_does_and_what_it_locks(statement: Statement) -> None:
    assert len(statement.description) > 40
    assert "lock" in statement.description.lower()
    assert "{schema}." in statement.text or "table" in statement.description.lower()


async def test_the_statements_prepare_in_a_schema_other_than_public(dsn: str) -> None:
    from pgbridge.migrate import migrate

    await migrate(dsn, schema="tenant two")
    conn = await asyncpg.connect(dsn)
    try:
        texts = load_statements("events.sql", "tenant two")
        for statement in STATEMENTS:
            text = texts[statement.name]
            assert ("{schema}." in statement.text) == ('"tenant two".' in text), statement.name
            await conn.prepare(text)
    finally:
        await conn.close()


async def test_read_events_after_gives_the_runs_state_in_its_first_row_only(dsn: str) -> None:
    """The later rows leave the state columns NULL: five columns fewer to decode per event."""
    queries = load_statements("events.sql", "public")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.fetch(
            load_statements("events.sql", "public")["append_events"],
            ["run"] * 3,
            ["token"] * 3,
            ["{}"] * 3,
            [False] * 3,
            ["active"] * 3,
        )
        rows = await conn.fetch(queries["read_events_after"], "run", 0, 10)
    finally:
        await conn.close()
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert (rows[0]["first_seq"], rows[0]["last_seq"]) == (1, 3)
    assert all(r["first_seq"] is None and r["last_seq"] is None for r in rows[1:])
