"""The listener LISTENs from the first subscriber on (docs/behaviour.md §6).

A process that only publishes (a worker) would otherwise be sent every
wake-up of every run in the database, and the events they carry: its listener
connects and checks at start, and LISTENs on the wake-up channel only once a
reader of this process follows a run; then for good, across reconnects.
"""

from __future__ import annotations

from pgbridge import PostgresStreamBridge
from pgbridge.sql.queries import notify_channel
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, take, wait_until
from tests.support.sql_helpers import terminate_backends

CHANNEL = notify_channel("public")


async def listening_channels(bridge: PostgresStreamBridge) -> list[str]:
    """What the bridge's listener connection LISTENs on, as PostgreSQL says."""
    conn = bridge._listener._conn
    assert conn is not None
    return [row[0] for row in await conn.fetch("SELECT pg_listening_channels()")]


async def test_a_bridge_that_only_publishes_listens_on_nothing(make_bridge: BridgeFactory) -> None:
    worker = await make_bridge()
    await worker.publish("run", "token", {"i": 1})
    await worker.publish_end("run")
    assert await listening_channels(worker) == []


async def test_the_first_subscription_listens_before_its_first_read(make_bridge: BridgeFactory) -> None:
    reader = await make_bridge(poll_interval=3600)  # only a wake-up can bring what follows
    writer = await make_bridge()
    stream = reader.subscribe("run", heartbeat_interval=60)
    first = await writer.publish("run", "token", 0)
    assert [e.id for e in await take(stream, 1)] == [first]
    assert await listening_channels(reader) == [CHANNEL]
    second = await writer.publish("run", "token", 1)
    end = await writer.publish_end("run")
    assert [e.id for e in await collect(stream, timeout=30)] == [second, end]


async def test_a_bridge_that_followed_runs_listens_again_after_a_reconnect(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    reader = await make_bridge()
    writer = await make_bridge()
    stream = reader.subscribe("run", heartbeat_interval=60)
    await writer.publish("run", "token", 0)
    await take(stream, 1)
    await terminate_backends(dsn)
    await wait_until(lambda: reader.listener_reconnects >= 1)
    await wait_until(lambda: reader._listener.listening)
    assert await listening_channels(reader) == [CHANNEL]
    await stream.aclose()


async def test_a_publishing_bridge_stays_deaf_after_a_reconnect(make_bridge: BridgeFactory, dsn: str) -> None:
    worker = await make_bridge()
    await worker.publish("run", "token", 0)
    await terminate_backends(dsn)
    await wait_until(lambda: worker.listener_reconnects >= 1)
    assert await listening_channels(worker) == []


async def test_a_durable_streams_reader_listens_before_its_first_read(make_bridge: BridgeFactory) -> None:
    """A protocol reader (long-poll, SSE) follows a run through ``streams.watch``, which also
    asks for wake-ups first: an append from another process wakes it, not the poll."""
    reader = await make_bridge(poll_interval=3600)
    writer = await make_bridge()
    await writer.publish("run", "token", 0)
    async with reader.streams.watch("run", 1) as waiter:
        assert await listening_channels(reader) == [CHANNEL]
        waiter.clear()
        await writer.publish("run", "token", 1)
        assert await waiter.wait(30) is True
