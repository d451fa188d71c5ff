"""Publishers while a caller's transaction that used ``publish_in`` is open (docs/transactions.md).

The transaction holds its run's row until it ends. Another publisher of that
run waits on the row lock and then gets the next seq (gapless, in commit
order), or, after a rollback, the seq the rolled-back event had. Publishers
of other runs go on: a group-commit batch that meets the held row gives up
waiting after ``publish_lock_wait``, its other runs commit, and the held
run's publishes wait in a lane of their own.

"Waiting" is seen in PostgreSQL (a backend of the test's database waiting on
a lock), never inferred from time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge
from pgbridge.exceptions import RolledBackByConflictError
from tests.conftest import BridgeFactory
from tests.support.helpers import seq_of, wait_until
from tests.support.sql_helpers import connected

HELD = "held-run"


@pytest_asyncio.fixture
async def caller(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """The application's connection, whose transaction publishes to HELD."""
    async with connected(dsn) as conn:
        yield conn


async def waiting_on_locks(dsn: str, count: int = 1) -> None:
    """Until at least *count* backends of this database wait on a lock (a bound, not a timing)."""
    async with connected(dsn) as conn:
        for _ in range(1000):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} backend(s) ever waited on a lock")


async def seqs(dsn: str, run_id: str) -> list[int]:
    async with connected(dsn) as conn:
        rows = await conn.fetch("SELECT seq FROM run_events WHERE run_id = $1 ORDER BY seq", run_id)
    return [row["seq"] for row in rows]


async def hold(bridge: PostgresStreamBridge, caller: asyncpg.Connection) -> asyncpg.transaction.Transaction:
    """Open the caller's transaction and publish to HELD in it (HELD has one event before)."""
    transaction = caller.transaction()
    await transaction.start()
    assert seq_of(await bridge.publish_in(caller, HELD, "tool_result", {})) == 2
    return transaction


async def test_a_publisher_of_the_held_run_waits_for_the_commit_then_gets_the_next_seq(
    make_bridge: BridgeFactory, caller: asyncpg.Connection, dsn: str
) -> None:
    bridge, elsewhere = await make_bridge(), await make_bridge()
    await bridge.publish(HELD, "token", {})
    transaction = await hold(bridge, caller)
    waiting = asyncio.create_task(elsewhere.publish(HELD, "token", {}))
    await wait_until(lambda: elsewhere._publisher.lanes == 1)  # its batch gave up: it waits alone
    await waiting_on_locks(dsn)
    assert not waiting.done()
    await transaction.commit()
    assert seq_of(await asyncio.wait_for(waiting, 30)) == 3
    assert await seqs(dsn, HELD) == [1, 2, 3]


async def test_after_a_rollback_the_waiting_publisher_gets_the_seq_the_rolled_back_event_had(
    make_bridge: BridgeFactory, caller: asyncpg.Connection, dsn: str
) -> None:
    bridge = await make_bridge()
    await bridge.publish(HELD, "token", {})
    transaction = await hold(bridge, caller)
    waiting = asyncio.create_task(bridge.publish(HELD, "token", {}))
    await wait_until(lambda: bridge._publisher.lanes == 1)
    await waiting_on_locks(dsn)
    await transaction.rollback()
    assert seq_of(await asyncio.wait_for(waiting, 30)) == 2
    assert await seqs(dsn, HELD) == [1, 2]


async def test_a_run_sharing_a_batch_with_the_held_run_is_committed_while_it_waits(
    make_bridge: BridgeFactory, caller: asyncpg.Connection, dsn: str
) -> None:
    # One batch in flight: while the publish of "first" is in it, the publishes of the
    # held run and of four others queue, and go together as the next batch.
    bridge = await make_bridge(publish_batches_in_flight=1)
    await bridge.publish(HELD, "token", {})
    transaction = await hold(bridge, caller)
    first = asyncio.create_task(bridge.publish("first", "token", {}))
    held = asyncio.create_task(bridge.publish(HELD, "token", {}))
    others = [asyncio.create_task(bridge.publish(f"other-{n}", "token", {})) for n in range(4)]
    for other in [first, *others]:
        assert seq_of(await asyncio.wait_for(other, 30)) == 1
    assert not held.done()
    await transaction.commit()
    assert seq_of(await asyncio.wait_for(held, 30)) == 3
    assert await seqs(dsn, HELD) == [1, 2, 3]


async def test_other_runs_go_on_while_every_batch_slot_has_met_the_held_run(
    make_bridge: BridgeFactory, caller: asyncpg.Connection, dsn: str
) -> None:
    bridge = await make_bridge()  # 4 batches in flight
    await bridge.publish(HELD, "token", {})
    transaction = await hold(bridge, caller)
    held = [asyncio.create_task(bridge.publish(HELD, "token", {"n": n})) for n in range(6)]
    await waiting_on_locks(dsn)
    for n in range(3):
        assert seq_of(await asyncio.wait_for(bridge.publish(f"other-{n}", "token", {}), 30)) == 1
    many = await asyncio.wait_for(bridge.publish_many("other-0", [("a", {}), ("b", {})]), 30)
    assert [seq_of(event_id) for event_id in many] == [2, 3]
    assert not any(task.done() for task in held)
    await transaction.commit()
    assert sorted([seq_of(await asyncio.wait_for(task, 30)) for task in held]) == [3, 4, 5, 6, 7, 8]
    assert await seqs(dsn, HELD) == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_with_publish_lock_wait_0_a_batch_waits_with_the_held_run(
    make_bridge: BridgeFactory, caller: asyncpg.Connection, dsn: str
) -> None:
    """The behaviour publish_lock_wait exists to avoid, measured: the other run of the
    batch waits on the held row too, until the transaction ends."""
    bridge = await make_bridge(publish_batches_in_flight=1, publish_lock_wait=0)
    await bridge.publish(HELD, "token", {})
    transaction = await hold(bridge, caller)
    first = asyncio.create_task(bridge.publish("first", "token", {}))
    held = asyncio.create_task(bridge.publish(HELD, "token", {}))
    other = asyncio.create_task(bridge.publish("other", "token", {}))
    await asyncio.wait_for(first, 30)
    await waiting_on_locks(dsn)
    assert not held.done() and not other.done()
    await transaction.commit()
    assert [seq_of(await asyncio.wait_for(task, 30)) for task in (held, other)] == [3, 1]


async def test_a_batch_leaves_no_lock_timeout_on_its_pooled_connection(make_bridge: BridgeFactory) -> None:
    """The bound is set for the batch's own transaction only (no session state on the pool)."""
    bridge = await make_bridge(pool_max_size=1)
    await bridge.publish("run", "token", {})
    assert [row[0] for row in await bridge._db.fetch("SHOW lock_timeout")] == ["0"]


async def test_a_publisher_held_longer_than_its_lane_allows_is_told_nothing_was_written(
    make_bridge: BridgeFactory, caller: asyncpg.Connection, dsn: str
) -> None:
    """A lane waits at most 0.9 x command_timeout: then a clear "nothing written", not the
    unknown outcome a statement cut off by command_timeout would leave."""
    bridge = await make_bridge(command_timeout=1.0, publish_retry_timeout=0)
    await bridge.publish(HELD, "token", {})
    transaction = await hold(bridge, caller)
    with pytest.raises(
        RolledBackByConflictError, match=r"held by another transaction for longer than 0\.9 s"
    ):
        await bridge.publish(HELD, "token", {})
    await transaction.commit()
    assert await seqs(dsn, HELD) == [1, 2]
    assert seq_of(await bridge.publish(HELD, "token", {})) == 3
