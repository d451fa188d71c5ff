"""Connections cut and stalled mid-publish and mid-subscribe, through a real TCP proxy.

Each test ends with the accounting of issue 8: every event a publisher was
told is committed is in the table; nothing a publisher was told failed is;
every subscriber received exactly the stored events, once each, in seq order.
The bridge under fault connects through :class:`tests.support.fault_proxy.FaultProxy`;
the other side of each test connects directly, so the fault hits one path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio

from pgbridge import (
    DatabaseUnavailableError,
    PostgresStreamBridge,
    PublishOutcomeUnknownError,
    StreamEvent,
)
from tests.conftest import BridgeFactory
from tests.support.fault_proxy import FaultProxy, listeners, not_listeners
from tests.support.helpers import collect, take, wait_until
from tests.support.sql_helpers import connected

RUN = "run"


@pytest_asyncio.fixture
async def proxy(dsn: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy.in_front_of(dsn) as running:
        yield running


@pytest_asyncio.fixture
async def proxied(proxy: FaultProxy, dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    """A started bridge that reaches PostgreSQL only through the proxy."""
    bridge = PostgresStreamBridge(proxy.dsn(dsn), poll_interval=0.2)
    await bridge.start()
    yield bridge
    await bridge.close()


@dataclass
class Outcomes:
    """What each publish was told, by the number it carried as data."""

    acknowledged: dict[int, str] = field(default_factory=dict)
    unknown: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    pending: int = 0

    async def publish(self, bridge: PostgresStreamBridge, number: int) -> None:
        self.pending += 1
        try:
            self.acknowledged[number] = await bridge.publish(RUN, "token", number)
        except PublishOutcomeUnknownError:
            self.unknown.add(number)
        except DatabaseUnavailableError:
            self.failed.add(number)
        finally:
            self.pending -= 1


async def publish_range(bridge: PostgresStreamBridge, outcomes: Outcomes, numbers: range) -> None:
    """Publish *numbers* ten at a time, so several batches are in flight at any moment."""
    for start in range(numbers.start, numbers.stop, 10):
        chunk = range(start, min(start + 10, numbers.stop))
        await asyncio.gather(*(outcomes.publish(bridge, n) for n in chunk))
        await asyncio.sleep(0.005)


async def publish_until(bridge: PostgresStreamBridge, outcomes: Outcomes, stop: asyncio.Event) -> None:
    """Publish ten at a time until *stop* is set, however fast the machine is."""
    number = 0
    while not stop.is_set():
        await publish_range(bridge, outcomes, range(number, number + 10))
        number += 10


async def stored(dsn: str) -> list[tuple[str, object]]:
    """(ID, data) of every stored event of the run, in seq order."""
    async with connected(dsn) as conn:
        rows = await conn.fetch(
            "SELECT created_ms || '-' || seq AS id, data FROM run_events WHERE run_id = $1 ORDER BY seq", RUN
        )
    return [(row["id"], row["data"]) for row in rows]


async def assert_accounting(dsn: str, outcomes: Outcomes, received: list[StreamEvent]) -> None:
    acknowledged, unknown, failed = len(outcomes.acknowledged), len(outcomes.unknown), len(outcomes.failed)
    print(f"publishes acknowledged {acknowledged}, unknown outcome {unknown}, failed {failed}")  # pytest -s
    rows = await stored(dsn)
    stored_data = {data: event_id for event_id, data in rows}
    for number, event_id in outcomes.acknowledged.items():
        assert stored_data.get(str(number)) == event_id, f"acknowledged event {number} is not stored"
    for number in outcomes.failed:
        assert str(number) not in stored_data, f"publish {number} was reported failed but is stored"
    accounted = set(outcomes.acknowledged) | outcomes.unknown
    assert {int(data) for data in stored_data if data != "null"} <= accounted
    assert [event.id for event in received] == [event_id for event_id, _ in rows]


async def cut_repeatedly(proxy: FaultProxy, times: int, *, in_flight: Outcomes | None = None) -> None:
    """Cut every connection *times* times, each time once publishes are *in_flight* (if given)."""
    for _ in range(times):
        await asyncio.sleep(0.15)
        if in_flight is not None:
            await wait_until(lambda: in_flight.pending > 0)
        proxy.cut()


async def test_connections_cut_mid_publish_lose_no_acknowledged_event(
    make_bridge: BridgeFactory, proxy: FaultProxy, dsn: str
) -> None:
    reader = await make_bridge(poll_interval=0.2)
    writer = PostgresStreamBridge(proxy.dsn(dsn), publish_retry_timeout=20)
    await writer.start()
    stream = reader.subscribe(RUN, heartbeat_interval=0.5)
    outcomes = Outcomes()
    done = asyncio.Event()
    try:
        publishing = asyncio.create_task(publish_until(writer, outcomes, done))
        await cut_repeatedly(proxy, 6, in_flight=outcomes)
        done.set()
        await publishing
        await writer.publish_end(RUN)
    finally:
        await writer.close()
    received = await collect(stream, timeout=60)
    assert proxy.cuts >= 6
    await assert_accounting(dsn, outcomes, received)
    assert not outcomes.failed  # the retry rides through every cut


async def test_connections_stalled_mid_publish_deliver_every_publish_once_flowing_again(
    make_bridge: BridgeFactory, proxy: FaultProxy, dsn: str
) -> None:
    reader = await make_bridge(poll_interval=0.2)
    writer = PostgresStreamBridge(proxy.dsn(dsn))
    await writer.start()
    stream = reader.subscribe(RUN, heartbeat_interval=0.5)
    outcomes = Outcomes()
    done = asyncio.Event()
    try:
        publishing = asyncio.create_task(publish_until(writer, outcomes, done))
        await wait_until(lambda: len(outcomes.acknowledged) >= 50)
        proxy.stall()
        await asyncio.sleep(1.5)
        held = outcomes.pending
        proxy.resume()
        await wait_until(lambda: len(outcomes.acknowledged) >= 200)
        done.set()
        await publishing
        await writer.publish_end(RUN)
    finally:
        await writer.close()
    received = await collect(stream, timeout=60)
    assert held > 0  # the stall caught publishes in flight
    await assert_accounting(dsn, outcomes, received)
    assert (
        not outcomes.unknown and not outcomes.failed
    )  # a stall shorter than command_timeout costs only time


async def test_a_subscriber_whose_connections_are_cut_gets_every_event_once(
    make_bridge: BridgeFactory, proxy: FaultProxy, proxied: PostgresStreamBridge, dsn: str
) -> None:
    writer = await make_bridge()
    stream = proxied.subscribe(RUN, heartbeat_interval=0.5)
    outcomes = Outcomes()
    publishing = asyncio.create_task(publish_range(writer, outcomes, range(300)))
    first = await take(stream, 20, timeout=30)
    await cut_repeatedly(proxy, 5)
    await publishing
    await writer.publish_end(RUN)
    received = first + await collect(stream, timeout=60)
    assert proxy.cuts >= 5
    await assert_accounting(dsn, outcomes, received)


async def test_a_subscriber_whose_connections_stall_resumes_with_every_event_once(
    make_bridge: BridgeFactory, proxy: FaultProxy, proxied: PostgresStreamBridge, dsn: str
) -> None:
    writer = await make_bridge()
    stream = proxied.subscribe(RUN, heartbeat_interval=0.2)
    outcomes = Outcomes()
    await outcomes.publish(writer, 0)
    first = await take(stream, 1)
    proxy.stall()
    await publish_range(writer, outcomes, range(1, 100))
    await asyncio.sleep(1.0)
    proxy.resume()
    await publish_range(writer, outcomes, range(100, 200))
    await writer.publish_end(RUN)
    received = first + await collect(stream, timeout=60)
    await assert_accounting(dsn, outcomes, received)


async def test_with_the_listener_cut_alone_the_poll_delivers_every_event(
    make_bridge: BridgeFactory, proxy: FaultProxy, proxied: PostgresStreamBridge, dsn: str
) -> None:
    writer = await make_bridge()
    stream = proxied.subscribe(RUN, heartbeat_interval=0.2)
    outcomes = Outcomes()
    await outcomes.publish(writer, 0)
    first = await take(stream, 1)
    assert proxy.count(listeners) == 1
    pool_connections = proxy.count(not_listeners)
    proxy.refuse_listeners = True  # every reconnect is cut as soon as it sends LISTEN
    assert proxy.cut(listeners) == 1
    await publish_range(writer, outcomes, range(1, 40))
    during_outage = first + await take(stream, 39, timeout=30)
    assert proxy.count(listeners) == 0  # so only the poll can have delivered them
    assert all(proxy.cut_listeners)  # no pool connection was cut
    assert proxy.count(not_listeners) >= pool_connections
    proxy.refuse_listeners = False
    await wait_until(lambda: proxied.listener_reconnects >= 1, timeout=30)
    await writer.publish_end(RUN)
    received = during_outage + await collect(stream, timeout=30)
    await assert_accounting(dsn, outcomes, received)


async def test_a_subscription_starts_and_reads_while_its_listener_cannot_listen(
    make_bridge: BridgeFactory, proxy: FaultProxy, proxied: PostgresStreamBridge, dsn: str
) -> None:
    """The first subscription asks the listener to LISTEN (docs/behaviour.md §6); a listener
    connection cut as it does must neither fail nor hold up the subscription, which reads
    through the poll until a reconnect LISTENs."""
    writer = await make_bridge()
    proxy.refuse_listeners = True  # every LISTEN is cut as soon as it is sent
    stream = proxied.subscribe(RUN, heartbeat_interval=0.2)
    outcomes = Outcomes()
    await publish_range(writer, outcomes, range(0, 20))
    during_outage = await take(stream, 20, timeout=30)
    assert proxy.count(listeners) == 0  # so the poll delivered them
    proxy.refuse_listeners = False
    await wait_until(lambda: proxied._listener.listening, timeout=30)
    assert proxy.count(listeners) == 1
    await publish_range(writer, outcomes, range(20, 40))
    await writer.publish_end(RUN)
    received = during_outage + await collect(stream, timeout=30)
    await assert_accounting(dsn, outcomes, received)


async def test_start_rides_through_connections_cut_in_the_handshake(proxy: FaultProxy, dsn: str) -> None:
    """A process started while the network or the server blips comes up once it is back."""
    proxy.refuse_listeners = True  # the listener's connection is cut as it sends LISTEN
    bridge = PostgresStreamBridge(proxy.dsn(dsn), connect_timeout=30)
    starting = asyncio.create_task(bridge.start())
    await wait_until(lambda: proxy.cuts >= 2, timeout=30)
    assert not starting.done()
    proxy.refuse_listeners = False
    await asyncio.wait_for(starting, 30)
    try:
        assert await bridge.publish(RUN, "token", 1)
    finally:
        await bridge.close()
