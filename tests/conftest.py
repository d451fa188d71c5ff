"""Fixtures: a real PostgreSQL, a fresh migrated database per test, started bridges."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge
from tests.support.postgres_server import DatabaseFactory, postgres_server, with_database
from tests.support.topology import ScaleDatabase, Topology, missing_reason, running_topology, wait_for_standby


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
    databases.drop_soon(url)


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


# -- the scale-out topology (tests/support/topology.py): primary, hot standby, PgBouncer --


@pytest.fixture(scope="session")
def topology() -> Iterator[Topology]:
    """Built once for the session; skipped without the binaries, except in CI, where that fails."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the topology tests, but: {reason}")
        pytest.skip(f"no primary/standby/PgBouncer topology on this machine: {reason}")
    with running_topology() as built:
        yield built


@pytest_asyncio.fixture(scope="session")
async def topology_databases(topology: Topology) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(topology.primary())
    await factory.prepare()
    yield factory
    await factory.drop_template()


@pytest_asyncio.fixture
async def scale_db(topology: Topology, topology_databases: DatabaseFactory) -> AsyncIterator[ScaleDatabase]:
    """A migrated database of this test's own on the topology, already on the standby too."""
    url = await topology_databases.create()
    name = urlsplit(url).path.lstrip("/")
    await wait_for_standby(topology)
    yield ScaleDatabase(
        name=name,
        primary=url,
        standby=with_database(topology.standby(), name),
        bouncer=with_database(topology.bouncer(), name),
    )
    await topology_databases.drop(url)
