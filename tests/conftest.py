"""Fixtures: a real PostgreSQL, a fresh migrated database per test, started bridges."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge
from tests.postgres_server import DatabaseFactory, postgres_server


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    with postgres_server() as (dsn, description):
        print(f"\npgbridge tests use: {description}")
        yield dsn


@pytest_asyncio.fixture(scope="session")
async def databases(admin_dsn: str) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(admin_dsn)
    await factory.prepare()
    yield factory
    await factory.drop_template()


@pytest_asyncio.fixture
async def dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    """A freshly migrated database of its own for this test."""
    url = await databases.create()
    yield url
    await databases.drop(url)


BridgeFactory = Callable[..., Awaitable[PostgresStreamBridge]]


@pytest_asyncio.fixture
async def make_bridge(dsn: str) -> AsyncIterator[BridgeFactory]:
    """Start bridges on this test's database; all are closed at the end."""
    bridges: list[PostgresStreamBridge] = []

    async def make(**options: Any) -> PostgresStreamBridge:
        bridge = PostgresStreamBridge(dsn, **options)
        await bridge.start()
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        await bridge.close()


@pytest_asyncio.fixture
async def bridge(make_bridge: BridgeFactory) -> PostgresStreamBridge:
    return await make_bridge()
