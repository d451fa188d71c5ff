"""``connector.Database``: the bridge's pool and what closing it promises."""

from __future__ import annotations

import asyncio

import pytest

from pgbridge.connector import Database
from pgbridge.exceptions import DatabaseUnavailableError


async def test_a_connection_borrowed_before_close_goes_back_when_its_user_is_done(db: Database) -> None:
    """A read in flight when the bridge closes gives its connection back to the pool it came
    from, so close ends as soon as the read does (it used to wait out its whole timeout: the
    give-back looked the pool up again and found it detached)."""
    borrowed, done = asyncio.Event(), asyncio.Event()

    async def read_in_flight() -> None:
        async with db.connection():
            borrowed.set()
            await done.wait()

    reader = asyncio.create_task(read_in_flight())
    await borrowed.wait()
    pool = db.pool
    closing = asyncio.create_task(db.close(timeout=60))
    await asyncio.sleep(0.05)
    done.set()
    await reader
    await asyncio.wait_for(closing, 30)
    assert pool._closed and pool.get_size() == 0


async def test_a_closed_database_refuses_new_borrowers(db: Database) -> None:
    await db.close()
    with pytest.raises(DatabaseUnavailableError, match="pool is closed"):
        async with db.connection():
            pass
