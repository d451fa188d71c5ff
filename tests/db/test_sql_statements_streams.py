"""Every statement of pgbridge/sql/streams.sql prepares on a migrated database.

Some of them run only on rare paths (a fork of an expired source, a batch the
server refuses); preparing each catches a typo, a wrong column or a wrong
parameter type at once, not on the day that path runs.
"""

from __future__ import annotations

import re

import pytest

from pgbridge.sql import DEFAULT_SCHEMA, Statement, load_statements, statements_of
from pgbridge.sql.queries import StreamQueries
from tests.support.sql_helpers import connected

STATEMENTS = statements_of("streams.sql")
NAMES = [statement.name for statement in STATEMENTS]


@pytest.mark.parametrize("name", NAMES)
async def test_the_statement_prepares_on_a_migrated_database(dsn: str, name: str) -> None:
    text = load_statements("streams.sql", DEFAULT_SCHEMA)[name]
    async with connected(dsn) as conn:
        prepared = await conn.prepare(text)
        assert len(prepared.get_parameters()) == len(set(re.findall(r"\$(\d+)", text)))


@pytest.mark.parametrize("statement", STATEMENTS, ids=NAMES)
def test_the_description_names_every_parameter(statement: Statement) -> None:
    used = set(re.findall(r"\$\d+", statement.text))
    described = set(re.findall(r"\$\d+", statement.description))
    assert used <= described, f"{statement.name}: {sorted(used - described)} not described"


def test_stream_queries_name_every_statement_of_the_file() -> None:
    queries = StreamQueries.for_schema("a schema")
    assert '"a schema".run_streams' in queries.stream_head
    assert all("{schema}" not in getattr(queries, name) for name in NAMES)
