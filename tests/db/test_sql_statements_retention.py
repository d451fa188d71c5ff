"""Every statement of pgbridge/sql/retention.sql and inspection.sql is prepared by PostgreSQL.

Some of them run only when a pass finds work (the tombstones, the expired
streams' removal, VACUUM with autovacuum off), so a typo there would hide
from the behaviour tests: PREPARE parses, resolves every table, column and
function and infers every parameter's type, on a migrated schema.
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from pgbridge.migrate import migrate
from pgbridge.sql import statements_of
from pgbridge.sql.queries import InspectQueries, RetentionQueries
from tests.support.sql_helpers import connected

#: A schema name that needs quoting, so a statement that forgot {schema} or its quoting fails.
ODD_SCHEMA = 'tenant "a"'

STATEMENTS = [
    pytest.param(cls, f.name, id=f"{filename}:{f.name}")
    for cls, filename in ((RetentionQueries, "retention.sql"), (InspectQueries, "inspection.sql"))
    for f in fields(cls)
]


def test_each_file_names_exactly_the_statements_of_its_class() -> None:
    for cls, filename in ((RetentionQueries, "retention.sql"), (InspectQueries, "inspection.sql")):
        assert [s.name for s in statements_of(filename)] == [f.name for f in fields(cls)]


@pytest.mark.parametrize(("cls", "name"), STATEMENTS)
async def test_the_statement_is_prepared_on_a_migrated_schema(dsn: str, cls: type, name: str) -> None:
    async with connected(dsn) as conn:
        await conn.prepare(getattr(cls.for_schema("public"), name))


async def test_every_statement_is_prepared_in_a_schema_whose_name_needs_quoting(dsn: str) -> None:
    await migrate(dsn, schema=ODD_SCHEMA)
    async with connected(dsn) as conn:
        for cls in (RetentionQueries, InspectQueries):
            queries = cls.for_schema(ODD_SCHEMA)
            for f in fields(queries):
                await conn.prepare(getattr(queries, f.name))
