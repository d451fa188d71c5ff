"""A pinned xmin horizon: a transaction elsewhere holds a snapshot while runs publish, subscribers
read and retention deletes (docs/reliability.md).

While the horizon is held PostgreSQL can remove no row version that died after it, not even by
pruning a page: every version an append leaves behind stays, and every later look-up of that row
walks past it. So the test counts versions, not time: with revision 0012 an append leaves its run
row alone (pgbridge_run_head reads the head from run_events), so a thousand appends under a
pinned horizon leave a handful of dead run-row versions, where one per append was left before.
No timing is asserted; benchmarks/xmin_horizon.py measures latency and sizes over time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from pgbridge import PostgresStreamBridge, RetentionPolicy
from tests.support.helpers import take
from tests.support.sql_helpers import connected

RUNS = [f"run-{i}" for i in range(5)]
#: Appends per run while the horizon is held (each one a statement: a publish at a time).
APPENDS = 200
KEEP = 50


@asynccontextmanager
async def pinned_horizon(dsn: str) -> AsyncIterator[None]:
    """A REPEATABLE READ transaction with its snapshot taken, held until the block ends."""
    async with connected(dsn) as conn, conn.transaction(isolation="repeatable_read"):
        await conn.fetchval("SELECT count(*) FROM run_streams")  # the snapshot is taken here
        yield


async def dead_after_vacuum(dsn: str, table: str) -> int:
    """VACUUM *table*, then the dead row versions it could not remove (what it reported)."""
    async with connected(dsn) as conn:
        await conn.execute(f"VACUUM {table}")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        dead: int = await conn.fetchval(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = $1::regclass", table
        )
        return dead


async def heap_bytes(conn: asyncpg.Connection, table: str) -> int:
    size: int = await conn.fetchval("SELECT pg_relation_size($1::regclass)", table)
    return size


async def publish_one_at_a_time(bridge: PostgresStreamBridge, run_id: str, count: int) -> list[str]:
    return [await bridge.publish(run_id, "token", {"i": i}) for i in range(count)]


async def test_under_a_pinned_horizon_appends_leave_no_run_row_version_behind_and_nothing_is_lost(
    bridge: PostgresStreamBridge, make_bridge: object, dsn: str
) -> None:
    reader = await make_bridge()  # type: ignore[operator]
    for run_id in RUNS:
        await bridge.publish(run_id, "token", {"i": -1})  # each run's row exists, with its first event
    assert await dead_after_vacuum(dsn, "run_streams") == 0
    async with connected(dsn) as conn:
        streams_before = await heap_bytes(conn, "run_streams")
    followers = [asyncio.ensure_future(take(reader.subscribe(run_id), APPENDS + 1)) for run_id in RUNS]

    async with pinned_horizon(dsn):
        published = await asyncio.gather(*(publish_one_at_a_time(bridge, r, APPENDS) for r in RUNS))
        report = await bridge.run_retention(
            RetentionPolicy(max_events_per_run=KEEP, ended_run_ttl=None, tombstone_ttl=None)
        )
        received = await asyncio.gather(*followers)
        dead_run_rows = await dead_after_vacuum(dsn, "run_streams")
        dead_events = await dead_after_vacuum(dsn, "run_events")
        async with connected(dsn) as conn:
            streams_pinned = await heap_bytes(conn, "run_streams")

    appends = len(RUNS) * APPENDS
    print(
        f"pinned horizon: {appends} appends, run_streams dead versions {dead_run_rows}, "
        f"run_streams {streams_before} -> {streams_pinned} bytes, run_events dead {dead_events}"
    )
    # The horizon was really held: VACUUM could not remove the events retention deleted.
    assert report.events_deleted == len(RUNS) * (APPENDS + 1 - KEEP)
    assert dead_events >= report.events_deleted
    # A version per trimmed run (retention moved its first_seq), none per append; the table
    # grows by no page (revision 0010's appends left one dead version each: 1,000 here).
    assert dead_run_rows <= 2 * len(RUNS)
    assert streams_pinned - streams_before <= 8192
    # Nothing lost, nothing repeated while it was held.
    for ids, events in zip(published, received, strict=True):
        assert [e.id for e in events[1:]] == ids

    # Released: vacuum removes what retention deleted, and the runs go on.
    assert await dead_after_vacuum(dsn, "run_events") == 0
    assert await dead_after_vacuum(dsn, "run_streams") == 0
    assert [(await bridge.resolve(r, ids[-1])).status for r, ids in zip(RUNS, published, strict=True)] == [
        "resumed"
    ] * len(RUNS)
