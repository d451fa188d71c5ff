"""Group commit and publish_many: fewer transactions under load, same guarantees."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from pgbridge import InvalidEventError, PostgresStreamBridge, StreamTerminatedError
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, seq_of
from tests.support.sql_helpers import connected, event_rows


async def test_concurrent_publishes_share_transactions(bridge: PostgresStreamBridge, dsn: str) -> None:
    runs = [f"run-{i}" for i in range(50)]
    before = bridge._publisher.batches
    calls = [(run, i) for i in range(4) for run in runs]
    ids = await asyncio.gather(*(bridge.publish(run, "token", i) for run, i in calls))
    batches = bridge._publisher.batches - before
    assert len({(run, event_id) for (run, _), event_id in zip(calls, ids, strict=True)}) == 200
    assert batches < 200  # 200 events, far fewer commits
    for run in runs:
        assert [r["seq"] for r in await event_rows(dsn, run)] == [1, 2, 3, 4]


async def test_a_lone_publisher_sends_each_event_at_once(bridge: PostgresStreamBridge) -> None:
    before = bridge._publisher.batches
    for i in range(5):
        await bridge.publish("run", "token", i)
    assert bridge._publisher.batches - before == 5


async def test_every_concurrent_caller_gets_its_own_committed_event(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await asyncio.gather(*(bridge.publish("run", "token", {"n": i}) for i in range(100)))
    assert sorted(seq_of(i) for i in ids) == list(range(1, 101))
    rows = {r["seq"]: r["data"] for r in await event_rows(dsn, "run")}
    assert all(json.loads(rows[seq_of(event_id)]) == {"n": n} for n, event_id in enumerate(ids))


async def test_concurrent_publishes_and_a_terminal_leave_one_terminal_last(
    bridge: PostgresStreamBridge,
) -> None:
    async def publish(i: int) -> str | None:
        try:
            return await bridge.publish("run", "token", i)
        except StreamTerminatedError:
            return None

    results = await asyncio.gather(*(publish(i) for i in range(30)), bridge.publish_end("run"))
    events = await collect(bridge.subscribe("run"))
    assert events[-1].event == "end" and events[-1].id == results[-1]
    assert [e.id for e in events[:-1]] == sorted((r for r in results[:-1] if r), key=seq_of)


# -- publish_many -------------------------------------------------------------------------


async def test_publish_many_appends_in_order_in_one_transaction(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    before = bridge._publisher.batches
    ids = await bridge.publish_many("run", [("token", i) for i in range(10)])
    assert bridge._publisher.batches - before == 1
    assert [seq_of(i) for i in ids] == list(range(1, 11))
    assert [r["data"] for r in await event_rows(dsn, "run")] == [str(i) for i in range(10)]


async def test_publish_many_of_nothing_writes_nothing(bridge: PostgresStreamBridge, dsn: str) -> None:
    assert await bridge.publish_many("run", []) == []
    assert await event_rows(dsn, "run") == []


@pytest.mark.parametrize(
    "events",
    [
        [("token", 1), ("__reserved", 2)],
        [("token", 1), ("token", float("nan"))],
        [("token", 1), ("token",)],
        "token",
    ],
)
async def test_publish_many_with_one_bad_event_writes_none(
    bridge: PostgresStreamBridge, dsn: str, events: object
) -> None:
    with pytest.raises(InvalidEventError):
        await bridge.publish_many("run", events)  # type: ignore[arg-type]
    assert await event_rows(dsn, "run") == []


async def test_publish_many_to_an_ended_run_is_refused(bridge: PostgresStreamBridge) -> None:
    await bridge.publish_end("run")
    with pytest.raises(StreamTerminatedError, match="0 of 2"):
        await bridge.publish_many("run", [("token", 1), ("token", 2)])


async def test_publish_many_is_read_by_subscribers_in_order(make_bridge: object) -> None:
    writer = await make_bridge()  # type: ignore[operator]
    reader = await make_bridge(poll_interval=3600)  # type: ignore[operator]
    ids = await writer.publish_many("run", [("token", i) for i in range(300)])
    ids.append(await writer.publish_end("run"))
    assert [e.id for e in await collect(reader.subscribe("run"))] == ids


async def test_statements_run_counts_one_append_per_batch(bridge: PostgresStreamBridge) -> None:
    before = bridge.statements_run
    await bridge.publish_many("run", [("token", i) for i in range(50)])
    await asyncio.sleep(0.1)  # let any NOTIFY go out
    # One statement for 50 events: sent while no other batch was in flight, the append
    # carries its run's NOTIFY inside (append_events_notifying).
    assert bridge.statements_run - before == 1


async def test_a_batch_rolled_back_as_a_deadlock_victim_is_sent_again_and_stored_once(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    # A batch locks its runs in run-id order; a transaction outside it that takes
    # them the other way round deadlocks with it. PostgreSQL rolls one side back:
    # here the batch (the other side waits longer before it checks), which must
    # then be sent again, not fail every caller in it.
    # publish_lock_wait=0: batches wait on row locks as long as they are held, so the slot
    # stays on dl-c and the deadlock forms (by default a batch gives up waiting after 0.1 s,
    # before deadlock_timeout, and goes around the held run: docs/transactions.md).
    bridge = await make_bridge(publish_batches_in_flight=1, publish_lock_wait=0)
    for run_id in ("dl-a", "dl-b", "dl-c"):
        await bridge.publish(run_id, "created", {})
    blocker, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await other.execute("SET deadlock_timeout = '30s'")  # the batch detects it, and loses
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM run_streams WHERE run_id = 'dl-c' FOR UPDATE")
            held = asyncio.create_task(bridge.publish("dl-c", "first", {}))  # the one slot waits on dl-c
            await _until_waiting_on_a_lock(other, count=1)
            batch = asyncio.gather(bridge.publish("dl-a", "e", 1), bridge.publish("dl-b", "e", 2))
            await asyncio.sleep(0.1)  # both queued behind dl-c: one batch, locking dl-a then dl-b
            transaction = other.transaction()
            await transaction.start()
            await other.execute("SELECT 1 FROM run_streams WHERE run_id = 'dl-b' FOR UPDATE")
        await held  # the slot is free: the batch locks dl-a, then waits on dl-b
        await _until_waiting_on_a_lock(blocker, count=1)
        # dl-a the other way round: a deadlock, which the batch's backend detects first.
        await other.execute("SELECT 1 FROM run_streams WHERE run_id = 'dl-a' FOR UPDATE")
        await transaction.commit()
        ids = await asyncio.wait_for(batch, 30)
    finally:
        await blocker.close()
        await other.close()
    assert len(ids) == 2
    rows = await later_events(dsn)
    assert rows == [("dl-a", 2, "e"), ("dl-b", 2, "e")]


async def _until_waiting_on_a_lock(conn: asyncpg.Connection, *, count: int) -> None:
    """Until *count* other backends of this database wait on a lock."""
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no backend started waiting on a lock")


async def later_events(dsn: str) -> list[tuple[str, int, str]]:
    """The events of runs dl-a and dl-b after their first."""
    async with connected(dsn) as conn:
        rows = await conn.fetch(
            "SELECT run_id, seq, event FROM run_events WHERE run_id IN ('dl-a', 'dl-b') AND seq > 1 "
            "ORDER BY run_id, seq"
        )
    return [(r["run_id"], r["seq"], r["event"]) for r in rows]
