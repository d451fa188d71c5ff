"""Fixtures of the database tests beyond the suite's own (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pgbridge.connector import Database
from pgbridge.sql.queries import Queries


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[Database]:
    database = Database(
        dsn,
        Queries.for_schema(),
        min_size=0,
        max_size=4,
        connect_timeout=5.0,
        command_timeout=None,
        statement_cache_size=100,
    )
    await database.open()
    yield database
    await database.close()
