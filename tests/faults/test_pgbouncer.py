"""Publishing and reading through PgBouncer in transaction pooling mode (tests/support/topology.py).

The pool goes through PgBouncer (``statement_cache_size=0``), the listener
and the retention pass connect to PostgreSQL directly (``listen_dsn``). A
listener pointed at the pooler would never hear a wake-up: start() refuses it.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgbridge import PostgresStreamBridge, RetentionPolicy, StreamStatus
from pgbridge.exceptions import TopologyConfigurationError
from tests.support.helpers import collect, seq_of
from tests.support.topology import ScaleDatabase, Topology

#: These tests start PostgreSQL servers of their own (.ci/run skips them in its second pass).
pytestmark = pytest.mark.own_server

RUNS = 6
EVENTS = 40


async def _client_backends(primary: str, database: str) -> int:
    conn = await asyncpg.connect(primary)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()",
            database,
        )
        return count
    finally:
        await conn.close()


async def test_publishers_and_subscribers_in_two_bridges_through_pgbouncer_lose_and_repeat_nothing(
    scale_db: ScaleDatabase, topology: Topology
) -> None:
    # Pools larger than PgBouncer's server pool: clients share its few server connections.
    options = scale_db.bridge_options(pool_max_size=8)
    async with (
        PostgresStreamBridge(scale_db.bouncer, **options) as writer,
        PostgresStreamBridge(scale_db.bouncer, **options) as reader,
    ):
        runs = [f"run-{i}" for i in range(RUNS)]
        # Subscribed before the runs exist, in the other bridge: every wake-up crosses NOTIFY.
        streams = [asyncio.create_task(collect(reader.subscribe(run), timeout=60)) for run in runs]
        streams += [asyncio.create_task(collect(writer.subscribe(run), timeout=60)) for run in runs]

        async def publish_run(run: str) -> None:
            for i in range(EVENTS):
                await writer.publish(run, "token", {"run": run, "i": i})
            await writer.publish_terminal(run, StreamStatus.ENDED)

        await asyncio.gather(*(publish_run(run) for run in runs))
        received = await asyncio.gather(*streams)
        backends = await _client_backends(topology.primary(), scale_db.name)
        # Catch-up from the start through the pooler too, in another bridge.
        replayed = await collect(reader.subscribe(runs[0], last_event_id=None), timeout=30)

    for index, events in enumerate(received):
        run = runs[index % RUNS]
        assert [seq_of(e.id) for e in events] == list(range(1, EVENTS + 2))
        assert [e.data for e in events[:-1]] == [{"run": run, "i": i} for i in range(EVENTS)]
        assert events[-1].event == "end"
    assert [seq_of(e.id) for e in replayed] == list(range(1, EVENTS + 2))
    # PgBouncer's server pool plus one direct listener per bridge, whatever the bridges' pools.
    assert backends <= topology.pool_size + 2


async def test_listener_behind_a_transaction_pooler_is_refused_at_start(scale_db: ScaleDatabase) -> None:
    bridge = PostgresStreamBridge(scale_db.bouncer, statement_cache_size=0, connect_timeout=3)
    with pytest.raises(TopologyConfigurationError, match="listen_dsn"):
        await bridge.start()


async def test_listener_given_a_direct_listen_dsn_hears_other_bridges(scale_db: ScaleDatabase) -> None:
    async with (
        PostgresStreamBridge(scale_db.bouncer, **scale_db.bridge_options()) as writer,
        PostgresStreamBridge(scale_db.bouncer, **scale_db.bridge_options()) as reader,
    ):
        stream = reader.subscribe("solo")
        first = asyncio.create_task(anext(stream))
        await asyncio.sleep(0)  # let the subscription register before the publish
        event_id = await writer.publish("solo", "token", {"n": 1})
        assert (await asyncio.wait_for(first, 30)).id == event_id
        await stream.aclose()  # type: ignore[attr-defined]


async def test_retention_passes_through_pgbouncer_leave_no_advisory_lock_behind(
    scale_db: ScaleDatabase, topology: Topology
) -> None:
    policy = RetentionPolicy(max_events_per_run=5)
    options = scale_db.bridge_options()
    async with (
        PostgresStreamBridge(scale_db.bouncer, **options) as one,
        PostgresStreamBridge(scale_db.bouncer, **options) as two,
    ):
        for run in ("a", "b", "c"):
            await one.publish_many(run, [("token", {"i": i}) for i in range(20)])
        reports = await asyncio.gather(one.run_retention(policy), two.run_retention(policy))
        again = await one.run_retention(policy)
    assert sum(r.events_deleted for r in reports) == 3 * 15
    assert again.events_deleted == 0
    conn = await asyncpg.connect(topology.primary())
    try:
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    finally:
        await conn.close()
    assert held == 0


async def test_a_replica_dsn_that_is_not_a_standby_is_refused_at_start(scale_db: ScaleDatabase) -> None:
    bridge = PostgresStreamBridge(scale_db.primary, replica_dsn=scale_db.primary)
    with pytest.raises(TopologyConfigurationError, match="hot standby"):
        await bridge.start()
