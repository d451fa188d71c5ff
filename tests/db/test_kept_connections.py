"""``KeptConnections``: the publisher keeps the pool connections its batches ran on.

Keeping them saves asyncpg's borrow and give-back (two tasks and several
loop turns a batch); what must not change is that a connection in doubt
goes back to the pool, and that none stays borrowed after close.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgbridge.bridge import PostgresStreamBridge
from pgbridge.connector import Database
from tests.support.sql_helpers import connected


async def backend_pid(conn: asyncpg.Connection) -> int:
    pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    return pid


async def test_a_connection_that_ended_well_is_kept_and_used_again(db: Database) -> None:
    kept = db.kept(1)
    async with kept.connection() as conn:
        first = await backend_pid(conn)
    assert kept.idle == 1
    async with kept.connection() as conn:
        assert await backend_pid(conn) == first
    await kept.close()


async def test_no_more_than_keep_are_kept(db: Database) -> None:
    kept = db.kept(1)
    async with kept.connection(), kept.connection():
        pass
    assert kept.idle == 1
    assert db.pool.get_idle_size() >= 1  # the other one went back to the pool
    await kept.close()


async def test_a_connection_whose_use_failed_goes_back_to_the_pool(db: Database) -> None:
    kept = db.kept(1)
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with kept.connection() as conn:
            await conn.fetchval("SELECT 1 / 0")
    assert kept.idle == 0


async def test_a_connection_left_in_a_transaction_goes_back_to_the_pool(db: Database) -> None:
    kept = db.kept(1)
    async with kept.connection() as conn:
        await conn.execute("BEGIN")
    assert kept.idle == 0
    async with db.connection() as conn:
        assert not conn.is_in_transaction()  # the pool rolled it back


async def test_a_kept_connection_the_server_closed_is_replaced_without_an_error(
    db: Database, dsn: str
) -> None:
    kept = db.kept(1)
    async with kept.connection() as conn:
        dead = await backend_pid(conn)
    async with connected(dsn) as admin:
        await admin.execute("SELECT pg_terminate_backend($1)", dead)
    await asyncio.sleep(0.3)  # the client learns of it when the socket closes (or at the next use)
    assert kept.idle == 1
    async with kept.connection() as conn:
        assert await backend_pid(conn) != dead
    await kept.close()


async def test_close_gives_every_kept_connection_back_and_keeps_none_after(db: Database) -> None:
    kept = db.kept(2)
    async with kept.connection(), kept.connection():
        pass
    assert kept.idle == 2
    await kept.close()
    assert kept.idle == 0
    assert db.pool.get_idle_size() == 2
    async with kept.connection():
        pass
    assert kept.idle == 0


async def test_a_bridge_keeps_one_connection_across_lone_publishes_and_gives_it_back_on_close(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish("run", "token", 0)
    async with connected(dsn) as admin:
        before = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
        for i in range(1, 20):
            await bridge.publish("run", "token", i)
        after = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
    assert after == before  # no connection opened per publish
