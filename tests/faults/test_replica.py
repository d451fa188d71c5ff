"""Catch-up and replay reads from a hot standby (``replica_dsn``), wake-ups from the primary.

The standby's replay is paused in the middle of a stream (``pg_wal_replay_pause()``)
and resumed later: readers must get every event exactly once, in order,
reading from the primary while the standby lags, and from the standby once
it has caught up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge, StreamEvent, StreamStatus
from pgbridge.exceptions import TopologyConfigurationError
from tests.support.helpers import collect, seq_of, take
from tests.support.topology import ScaleDatabase, Topology, wait_for_standby

#: These tests start PostgreSQL servers of their own (.ci/run skips them in its second pass).
pytestmark = pytest.mark.own_server

RUN = "replicated"
PART = 30


@pytest_asyncio.fixture
async def standby_control(topology: Topology) -> AsyncIterator[asyncpg.Connection]:
    """A superuser session on the standby; replay is resumed at the end whatever happened."""
    conn = await asyncpg.connect(topology.standby())
    yield conn
    await conn.execute("SELECT pg_wal_replay_resume()")
    await conn.close()


async def _pause_replay(standby: asyncpg.Connection) -> None:
    await standby.execute("SELECT pg_wal_replay_pause()")
    while await standby.fetchval("SELECT pg_get_wal_replay_pause_state()") != "paused":  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def _standby_last_seq(scale_db: ScaleDatabase) -> int | None:
    conn = await asyncpg.connect(scale_db.standby)
    try:
        value: int | None = await conn.fetchval(
            "SELECT h.last_seq FROM run_streams AS r CROSS JOIN LATERAL "
            "pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h WHERE r.run_id = $1",
            RUN,
        )
        return value
    finally:
        await conn.close()


async def _standby_range_reads(scale_db: ScaleDatabase) -> int:
    """Range reads the standby itself executed in this database (its own pg_stat_statements)."""
    conn = await asyncpg.connect(scale_db.standby)
    try:
        calls: int = await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query LIKE '%LEFT JOIN LATERAL%'"
        )
        return calls
    finally:
        await conn.close()


def _assert_exact(events: list[StreamEvent], last: int) -> None:
    assert [seq_of(e.id) for e in events] == list(range(1, last + 1))
    assert [e.data for e in events[:-1]] == [{"i": i} for i in range(last - 1)]
    assert events[-1].event == "end"


async def test_a_paused_standby_never_makes_a_reader_miss_reorder_or_repeat_an_event(
    scale_db: ScaleDatabase, topology: Topology, standby_control: asyncpg.Connection
) -> None:
    primary = await asyncpg.connect(scale_db.primary)
    await primary.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await primary.close()
    # A tiny shared buffer and small pages: catch-up reads are the subscriber's own, page by page.
    reader_options = scale_db.bridge_options(replica_dsn=scale_db.standby, feed_buffer_size=4, page_size=7)
    async with (
        PostgresStreamBridge(scale_db.primary) as writer,
        PostgresStreamBridge(scale_db.bouncer, **reader_options) as reader,
    ):
        counter = 0

        async def publish(count: int) -> None:
            nonlocal counter
            for _ in range(count):
                await writer.publish(RUN, "token", {"i": counter})
                counter += 1

        # Part 1, standby streaming: a live subscriber, and a catch-up one once the standby has it all.
        live = reader.subscribe(RUN)
        first = asyncio.create_task(take(live, PART, timeout=60))
        await asyncio.sleep(0)
        await publish(PART)
        live_events = await first
        await wait_for_standby(topology)
        catch_up = await take(reader.subscribe(RUN), PART, timeout=60)
        assert [seq_of(e.id) for e in catch_up] == list(range(1, PART + 1))
        assert reader.reads_from_replica > 0, "a current standby serves catch-up reads"

        # Part 2, replay paused mid-stream: the standby stays at seq PART.
        await _pause_replay(standby_control)
        replica_before, primary_before = reader.reads_from_replica, reader.reads_from_primary
        standby_reads_before = await _standby_range_reads(scale_db)
        second = asyncio.create_task(take(live, PART, timeout=60))
        await publish(PART)
        live_events += await second
        # A subscriber from the start while the standby lags: all of it, from the primary.
        paused_catch_up = await take(reader.subscribe(RUN), 2 * PART, timeout=60)
        assert [seq_of(e.id) for e in paused_catch_up] == list(range(1, 2 * PART + 1))
        assert await _standby_last_seq(scale_db) == PART, "the standby really lagged"
        assert reader.reads_from_replica == replica_before
        assert reader.reads_from_primary > primary_before
        assert await _standby_range_reads(scale_db) == standby_reads_before

        # Part 3, replay resumed: the rest of the stream and its end.
        await standby_control.execute("SELECT pg_wal_replay_resume()")
        third = asyncio.create_task(collect(live, timeout=60))
        await publish(PART)
        await writer.publish_terminal(RUN, StreamStatus.ENDED)
        live_events += await third
        await wait_for_standby(topology)
        replica_after_resume = reader.reads_from_replica
        whole = await collect(reader.subscribe(RUN), timeout=60)
        assert reader.reads_from_replica > replica_after_resume, "a caught-up standby serves reads again"

    _assert_exact(live_events, 3 * PART + 1)
    _assert_exact(whole, 3 * PART + 1)


async def test_a_bridge_whose_dsn_reaches_the_standby_is_refused_saying_what_to_do(
    scale_db: ScaleDatabase,
) -> None:
    bridge = PostgresStreamBridge(scale_db.standby, connect_timeout=5)
    with pytest.raises(TopologyConfigurationError, match="target_session_attrs=read-write"):
        await bridge.start()
    await bridge.close()


async def test_a_multi_host_dsn_naming_the_standby_first_finds_the_primary(
    scale_db: ScaleDatabase, topology: Topology
) -> None:
    standby, primary = urlsplit(scale_db.standby), urlsplit(scale_db.primary)
    both = (
        f"postgresql://postgres@{standby.netloc.rpartition('@')[2]},{primary.netloc.rpartition('@')[2]}"
        f"/{scale_db.name}?target_session_attrs=read-write"
    )
    async with PostgresStreamBridge(both) as writer, PostgresStreamBridge(both) as reader:
        stream = reader.subscribe(RUN)
        event_id = await writer.publish(RUN, "token", {"i": 0})
        assert [e.id for e in await take(stream, 1, timeout=30)] == [event_id]
    assert await _standby_last_seq(scale_db) in (None, 1)  # it was written on the primary
