"""Subscribing (docs/behaviour.md sections 4 and 6) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from pgbridge import (
    CANCELLED_SENTINEL,
    END_SENTINEL,
    GAP_EVENT,
    HEARTBEAT_SENTINEL,
    InvalidEventError,
    PostgresStreamBridge,
    PublishOutcomeUnknownError,
    StreamEvent,
)
from pgbridge.sql.queries import Queries, notify_channel
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, take, wait_until
from tests.support.sql_helpers import (
    append_without_notify,
    connected,
    connection_count,
    evict_prefix,
    find_event,
    terminate_backends,
)


async def test_replays_history_in_seq_order_then_follows_live_events(bridge: PostgresStreamBridge) -> None:
    ids = [await bridge.publish("run", "token", i) for i in range(3)]
    stream = bridge.subscribe("run")
    assert [e.id for e in await take(stream, 3)] == ids
    live = await bridge.publish("run", "token", 3)
    assert [e.id for e in await take(stream, 1)] == [live]
    end = await bridge.publish_end("run")
    assert [e.id for e in await collect(stream)] == [end]


async def test_terminal_event_is_yielded_last_and_the_iterator_returns(bridge: PostgresStreamBridge) -> None:
    await bridge.publish("run", "token", 1)
    await bridge.cancel("run")
    events = await collect(bridge.subscribe("run"))
    assert [e.event for e in events] == ["token", "cancel"]


async def test_resume_past_the_terminal_event_yields_end_sentinel(bridge: PostgresStreamBridge) -> None:
    await bridge.publish("run", "token", 1)
    end = await bridge.publish_end("run")
    assert await collect(bridge.subscribe("run", last_event_id=end)) == [END_SENTINEL]


async def test_resume_yields_exactly_the_events_after_the_cursor(bridge: PostgresStreamBridge) -> None:
    ids = [await bridge.publish("run", "token", i) for i in range(10)]
    await bridge.publish_end("run")
    events = await collect(bridge.subscribe("run", last_event_id=ids[6]))
    assert [e.id for e in events[:-1]] == ids[7:]


async def test_idle_stream_heartbeats_every_interval(bridge: PostgresStreamBridge) -> None:
    await bridge.publish("run", "token", 1)
    stream = bridge.subscribe("run", heartbeat_interval=0.05)
    items = [await asyncio.wait_for(anext(stream), 5) for _ in range(4)]
    assert items[0].event == "token"
    assert items[1:] == [HEARTBEAT_SENTINEL] * 3
    await stream.aclose()  # type: ignore[attr-defined]


async def test_a_live_subscriber_heartbeats_every_interval_once_the_run_goes_quiet(
    bridge: PostgresStreamBridge,
) -> None:
    """The live tail (each event the one after the last in the shared buffer) heartbeats as
    a subscriber that has read nothing yet does."""
    ids = [await bridge.publish("run", "token", 0)]
    stream = bridge.subscribe("run", heartbeat_interval=0.2)
    received = await take(stream, 1)  # its own first read
    for index in (1, 2):  # then live: from the shared buffer
        ids.append(await bridge.publish("run", "token", index))
        received += await take(stream, 1)
    assert [e.id for e in received] == ids
    assert [await asyncio.wait_for(anext(stream), 5) for _ in range(3)] == [HEARTBEAT_SENTINEL] * 3
    await stream.aclose()  # type: ignore[attr-defined]


async def test_subscriber_may_connect_before_the_first_publish(bridge: PostgresStreamBridge) -> None:
    stream = bridge.subscribe("later", heartbeat_interval=0.05)
    assert await asyncio.wait_for(anext(stream), 5) == HEARTBEAT_SENTINEL
    first = await bridge.publish("later", "token", "hello")
    assert [e.id for e in await take(stream, 1)] == [first]
    await stream.aclose()  # type: ignore[attr-defined]


async def test_event_from_another_bridge_arrives_by_notify_without_polling(
    make_bridge: BridgeFactory,
) -> None:
    reader = await make_bridge(poll_interval=3600)
    writer = await make_bridge(poll_interval=3600)
    stream = reader.subscribe("run", heartbeat_interval=0.05)
    assert await asyncio.wait_for(anext(stream), 5) == HEARTBEAT_SENTINEL  # following, run not there yet
    sent = await writer.publish("run", "token", 1)
    assert [e.id for e in await take(stream, 1, timeout=5)] == [sent]
    await stream.aclose()  # type: ignore[attr-defined]


async def test_poll_delivers_an_event_whose_notify_was_lost(make_bridge: BridgeFactory, dsn: str) -> None:
    reader = await make_bridge(poll_interval=0.2)
    await reader.publish("run", "token", 0)
    stream = reader.subscribe("run")
    await take(stream, 1)
    silent = await append_without_notify(dsn, "run", "token", '"quiet"')
    assert [e.id for e in await take(stream, 1, timeout=10)] == [silent]
    await stream.aclose()  # type: ignore[attr-defined]


async def test_close_makes_every_subscriber_yield_cancelled_and_return(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    bridge = await make_bridge()
    await bridge.publish("run", "token", 1)
    streams = [bridge.subscribe("run") for _ in range(3)]
    for stream in streams:
        await take(stream, 1)
    pending = [asyncio.ensure_future(anext(stream)) for stream in streams]
    await asyncio.sleep(0.05)
    await bridge.close()
    assert [await asyncio.wait_for(p, 5) for p in pending] == [CANCELLED_SENTINEL] * 3
    for stream in streams:
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    async with PostgresStreamBridge(dsn) as other:  # the run itself is untouched
        assert (await other.resolve("run", None)).status == "fresh"
        assert await other.publish("run", "token", 2)


async def test_iterator_made_before_close_but_read_after_yields_cancelled(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    stream = bridge.subscribe("run")
    await bridge.close()
    assert await collect(stream) == [CANCELLED_SENTINEL]


async def test_subscribe_after_close_raises_at_first_read(make_bridge: BridgeFactory) -> None:
    from pgbridge import BridgeClosedError

    bridge = await make_bridge()
    await bridge.close()
    stream = bridge.subscribe("run")
    with pytest.raises(BridgeClosedError):
        await anext(stream)


async def test_bad_run_id_raises_invalid_event_error(bridge: PostgresStreamBridge) -> None:
    with pytest.raises(InvalidEventError):
        bridge.subscribe("")
    with pytest.raises(InvalidEventError):
        await bridge.resolve("x" * 256, None)


@pytest.mark.parametrize("how", ["break", "aclose", "cancel"])
async def test_leaving_the_iterator_early_releases_the_run_at_once(
    bridge: PostgresStreamBridge, how: str
) -> None:
    await bridge.publish("run", "token", 1)
    stream = bridge.subscribe("run")
    if how == "break":
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
    elif how == "aclose":
        await take(stream, 1)
        await stream.aclose()  # type: ignore[attr-defined]
    else:
        task = asyncio.create_task(collect(stream))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(bridge._feeds) == 0


async def publish_checking_outcome(writer: PostgresStreamBridge, dsn: str, i: int) -> str:
    """Publish token *i*; on an unknown outcome, read the run first, as the docs say."""
    while True:
        try:
            return await writer.publish("run", "token", i)
        except PublishOutcomeUnknownError:
            landed = await find_event(dsn, "run", f"{i}")
            if landed is not None:
                return landed


async def test_subscriber_survives_every_connection_being_terminated(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    bridge = await make_bridge(poll_interval=0.2)
    writer = await make_bridge()
    sent = [await writer.publish("run", "token", i) for i in range(5)]
    stream = bridge.subscribe("run", heartbeat_interval=0.1)
    received = [e.id for e in await take(stream, 5)]
    assert await terminate_backends(dsn) >= 2
    for i in range(5, 10):
        sent.append(await publish_checking_outcome(writer, dsn, i))
    sent.append(await writer.publish_end("run"))
    received += [e.id for e in await collect(stream, timeout=30)]
    assert received == sent
    await wait_until(lambda: bridge.listener_reconnects >= 1)  # and LISTENs again


async def test_publisher_never_waits_for_a_subscriber_that_stopped_reading(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(feed_buffer_size=16)
    stream = bridge.subscribe("run", heartbeat_interval=60)
    first = await bridge.publish("run", "token", 0)
    assert [e.id for e in await take(stream, 1)] == [first]
    # The subscriber reads nothing more while 500 events are published.
    sent = [first] + [await asyncio.wait_for(bridge.publish("run", "token", i), 10) for i in range(1, 500)]
    sent.append(await bridge.publish_end("run"))
    assert [e.id for e in await collect(stream, timeout=30)] == sent[1:]  # then catches up, all of it


async def test_200_subscribers_of_one_run_share_connections_and_reads(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    reader = await make_bridge()
    writer = await make_bridge()
    streams = [reader.subscribe("run", heartbeat_interval=60) for _ in range(200)]
    first = await writer.publish("run", "token", 0)
    for stream in streams:
        assert [e.id for e in await take(stream, 1)] == [first]
    feed = reader._feeds.get("run")
    assert feed is not None
    reads_before = feed.reads
    for i in range(1, 11):
        await writer.publish("run", "token", i)
    results = await asyncio.gather(*(take(s, 10, timeout=30) for s in streams))
    assert all(len(r) == 10 for r in results)
    # Cross-process path: at most one range read per wake-up, not per subscriber.
    assert feed.reads - reads_before <= 10
    defaults = reader.options.pool_max_size + 1
    assert await connection_count(dsn) <= 2 * defaults  # two bridges, each pool + listener
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_events_from_another_process_arrive_in_the_wake_up_without_a_read(
    make_bridge: BridgeFactory,
) -> None:
    reader = await make_bridge(poll_interval=3600)
    writer = await make_bridge(poll_interval=3600)  # its own pool and listener: another process
    await writer.publish("run", "token", 0)
    streams = [reader.subscribe("run", heartbeat_interval=60) for _ in range(3)]
    for stream in streams:
        await take(stream, 1)
    statements = reader.statements_run
    sent = [await writer.publish("run", "token", {"i": i, "text": 'é " x'}) for i in range(1, 6)]
    got = await asyncio.gather(*(take(s, 5) for s in streams))
    assert all(
        [(e.id, e.data) for e in events] == [(i, {"i": n, "text": 'é " x'}) for n, i in enumerate(sent, 1)]
        for events in got
    )
    assert reader.statements_run == statements  # no range read: the events came in the NOTIFYs
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_lone_publish_wakes_other_processes_with_its_own_commit_and_no_other_statement(
    make_bridge: BridgeFactory,
) -> None:
    reader = await make_bridge(poll_interval=3600)
    writer = await make_bridge(poll_interval=3600)
    await writer.publish("run", "token", 0)
    stream = reader.subscribe("run", heartbeat_interval=60)
    await take(stream, 1)
    await asyncio.sleep(0.1)  # anything the first publish left to send is sent
    written, read = writer.statements_run, reader.statements_run
    for i in range(1, 6):  # one at a time: no other batch in flight
        sent = await writer.publish("run", "token", i)
        assert [e.id for e in await take(stream, 1, timeout=5)] == [sent]
    await asyncio.sleep(0.1)
    assert writer.statements_run - written == 5  # the appends, each with its NOTIFY inside
    assert reader.statements_run == read
    await stream.aclose()  # type: ignore[attr-defined]


async def test_events_too_large_to_carry_are_read_after_the_wake_up(make_bridge: BridgeFactory) -> None:
    reader = await make_bridge(poll_interval=3600)
    writer = await make_bridge(poll_interval=3600)
    await writer.publish("run", "token", 0)
    stream = reader.subscribe("run", heartbeat_interval=60)
    await take(stream, 1)
    statements = reader.statements_run
    big = "x" * 9_000
    sent = await writer.publish("run", "token", big)
    assert [(e.id, e.data) for e in await take(stream, 1, timeout=5)] == [(sent, big)]
    assert reader.statements_run > statements  # the wake-up said where to read
    await stream.aclose()  # type: ignore[attr-defined]


async def test_same_process_publish_reaches_subscribers_without_a_read(bridge: PostgresStreamBridge) -> None:
    await bridge.publish("run", "token", 0)
    streams = [bridge.subscribe("run", heartbeat_interval=60) for _ in range(20)]
    for stream in streams:
        await take(stream, 1)
    feed = bridge._feeds.get("run")
    assert feed is not None
    reads_before = feed.reads
    for i in range(1, 6):
        await bridge.publish("run", "token", i)
    await asyncio.gather(*(take(s, 5) for s in streams))
    assert feed.reads == reads_before
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]


def _gap(event: StreamEvent) -> dict[str, object]:
    assert event.event == GAP_EVENT and event.id == ""
    assert isinstance(event.data, dict)
    return event.data


async def test_subscription_from_an_evicted_cursor_yields_a_gap_marker_first(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = [await bridge.publish("run", "token", i) for i in range(10)]
    await evict_prefix(dsn, "run", 6)
    events = await take(bridge.subscribe("run", last_event_id=ids[1]), 5)
    assert _gap(events[0]) == {
        "requested_event_id": ids[1],
        "gap_count": 3,
        "earliest_available_event_id": ids[5],
        "latest_available_event_id": ids[9],
    }
    assert [e.id for e in events[1:]] == ids[5:9]


async def test_on_gap_stop_ends_the_stream_after_the_marker(bridge: PostgresStreamBridge, dsn: str) -> None:
    ids = [await bridge.publish("run", "token", i) for i in range(10)]
    await evict_prefix(dsn, "run", 6)
    events = await collect(bridge.subscribe("run", last_event_id=ids[0], on_gap="stop"))
    assert len(events) == 1 and _gap(events[0])["gap_count"] == 4


async def test_live_subscriber_whose_unread_events_are_deleted_gets_a_gap_marker(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    reader = await make_bridge(poll_interval=0.1, feed_buffer_size=2)
    writer = await make_bridge()
    ids = [await writer.publish("run", "token", i) for i in range(3)]
    stream = reader.subscribe("run")
    assert [e.id for e in await take(stream, 3)] == ids  # its last page is used up
    ids += [await writer.publish("run", "token", i) for i in range(3, 10)]
    feed = reader._feeds.get("run")
    assert feed is not None
    await wait_until(lambda: feed.high_seq == 10)  # the shared tail moved on without us
    await evict_prefix(dsn, "run", 8)
    await wait_until(lambda: feed.state.first_seq == 8)  # and saw retention's wake-up
    rest = await take(stream, 3)
    gap = _gap(rest[0])
    assert gap == {
        "requested_event_id": ids[2],  # the last event it yielded
        "gap_count": 4,  # seqs 4..7
        "earliest_available_event_id": ids[7],
        "latest_available_event_id": ids[9],
    }
    # Whatever the buffer held, nothing deleted is yielded after the marker.
    assert [e.id for e in rest[1:]] == ids[7:9]


async def test_fully_evicted_run_reports_gap_with_nothing_available(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = [await bridge.publish("run", "token", i) for i in range(4)]
    await evict_prefix(dsn, "run", 5)
    stream = bridge.subscribe("run", last_event_id=ids[0], heartbeat_interval=0.05)
    gap = _gap(await asyncio.wait_for(anext(stream), 5))
    assert gap == {
        "requested_event_id": ids[0],
        "gap_count": 3,
        "earliest_available_event_id": None,
        "latest_available_event_id": None,
    }
    await stream.aclose()  # type: ignore[attr-defined]


async def test_catching_up_a_long_run_leaves_the_shared_reader_at_its_tail(
    bridge: PostgresStreamBridge,
) -> None:
    # Catch-up is the subscriber's own paged read; the shared feed starts near
    # the end instead of replaying history into a buffer that keeps 256 events.
    for _ in range(5):
        await bridge.publish_many("run", [("token", i) for i in range(1000)])
    stream = bridge.subscribe("run")
    assert len(await take(stream, 5000)) == 5000
    feed = bridge._feeds.get("run")
    assert feed is not None and feed.reads <= 3
    await stream.aclose()  # type: ignore[attr-defined]


async def test_integers_beyond_64_bits_come_back_intact(bridge: PostgresStreamBridge) -> None:
    await bridge.publish("run", "token", {"big": 2**70, "negative": -(2**65)})
    (event,) = await take(bridge.subscribe("run"), 1)
    assert event.data == {"big": 2**70, "negative": -(2**65)}


async def test_the_poll_checks_every_idle_run_in_one_statement(make_bridge: BridgeFactory) -> None:
    writer = await make_bridge()
    reader = await make_bridge(poll_interval=0.2)
    runs = [f"run-{i}" for i in range(50)]
    for run in runs:
        await writer.publish(run, "token", 0)
    streams = [reader.subscribe(run, heartbeat_interval=60) for run in runs]
    for stream in streams:
        await take(stream, 1)
    before = reader.statements_run
    await asyncio.sleep(1.0)  # about ten poll ticks, 50 idle runs
    assert reader.statements_run - before <= 12  # one statement per tick, not one per run
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_wake_up_of_many_runs_reads_them_all_in_one_statement(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    writer = await make_bridge()
    reader = await make_bridge(poll_interval=3600)
    runs = [f"run-{i}" for i in range(30)]
    for run in runs:
        await writer.publish(run, "token", 0)
    streams = [reader.subscribe(run, heartbeat_interval=60) for run in runs]
    for stream in streams:
        await take(stream, 1)
    await asyncio.sleep(0.2)  # the writer's own wake-ups, already read, are behind us
    sent = {run: [await append_without_notify(dsn, run, "token", str(i)) for i in range(3)] for run in runs}
    refills, statements = reader._feeds.refills, reader.statements_run
    async with connected(dsn) as conn:  # one NOTIFY statement for every run, as a notifier sends it
        await conn.execute(
            Queries.for_schema().notify_runs,
            notify_channel("public"),
            [3] * len(runs),
            runs,
            [None] * len(runs),
        )
    got = await asyncio.gather(*(take(stream, 3) for stream in streams))
    assert {run: [e.id for e in events] for run, events in zip(runs, got, strict=True)} == sent
    assert reader._feeds.refills - refills == 1  # one read for the 30 runs that woke
    assert reader.statements_run - statements == 1
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_long_catch_up_reads_larger_pages_while_each_comes_back_full(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(page_size=10, feed_buffer_size=10)
    ids = await bridge.publish_many("run", [("token", i) for i in range(300)])
    ids.append(await bridge.publish_end("run"))
    before = bridge.statements_run
    events = await collect(bridge.subscribe("run"))
    assert [e.id for e in events] == ids  # every event once, in order, across the growing pages
    assert [e.data for e in events[:-1]] == list(range(300))
    # Pages of 10, 20, 40, then 80 (8 x page_size): 6 range reads, not 31, beside the
    # cursor's resolution and the shared feed's start at the run's tail (35 in all before).
    assert bridge.statements_run - before <= 12


async def test_a_long_catch_up_gives_the_event_loop_turns_while_it_yields_a_page(
    make_bridge: BridgeFactory,
) -> None:
    """A consumer that never awaits still lets the process's other tasks run (and the next
    page arrive) every LOOP_TURN_EVERY events, not only between pages."""
    bridge = await make_bridge(page_size=1000)
    for start in range(0, 8000, 1000):
        await bridge.publish_many("run", [("token", i) for i in range(start, start + 1000)])
    await bridge.publish_end("run")
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    seen: list[int] = []
    async for event in bridge.subscribe("run"):
        seen.append(turns)  # nothing awaited here: only the subscription gives turns
        if event.event == "end":
            break
    counter.cancel()
    assert len(seen) == 8001
    # Pages of 1,000, 2,000, 4,000 and 1,000 rows: a turn between pages alone would show
    # 4 or 5 distinct counts; one every 512 rows of a page read ahead shows 14 or more.
    assert len(set(seen)) >= 12


@pytest.mark.parametrize("stop_after", [5, 15, 35])
async def test_leaving_a_catch_up_while_its_next_page_is_read_releases_everything(
    make_bridge: BridgeFactory, stop_after: int
) -> None:
    bridge = await make_bridge(page_size=10, pool_max_size=2)
    ids = await bridge.publish_many("run", [("token", i) for i in range(100)])
    for _ in range(3):  # more often than the pool has connections
        stream = bridge.subscribe("run")
        assert [e.id for e in await take(stream, stop_after)] == ids[:stop_after]
        await stream.aclose()  # type: ignore[attr-defined]
        assert len(bridge._feeds) == 0
    await asyncio.sleep(0.05)  # the cancelled reads ahead finish cancelling
    assert not [t for t in asyncio.all_tasks() if "read_after" in repr(t.get_coro())]
    # and the pool's connections are all back: a whole replay still runs
    assert [e.id for e in await take(bridge.subscribe("run"), 100)] == ids


@pytest.mark.parametrize("statement", ["read_events_after", "read_runs_events_after"])
async def test_a_page_of_a_long_run_scans_only_the_rows_it_may_return(
    bridge: PostgresStreamBridge, dsn: str, statement: str
) -> None:
    # With a LIMIT alone, a table never analyzed (autovacuum off, or not yet run after a bulk
    # load) got a row estimate of a few hundred for a 100,000-event run, and PostgreSQL read and
    # sorted every event of the run for each page of a replay (found profiling workload (d)).
    for first in range(0, 20_000, 1000):
        await bridge.publish_many("long", [("token", i) for i in range(first, first + 1000)])
    text = getattr(Queries.for_schema("public"), statement)
    args: tuple[object, ...] = (
        ("long", 1000, 100) if statement == "read_events_after" else (["long"], [1000], 100)
    )
    async with connected(dsn) as conn:
        await conn.execute("SET enable_indexscan = off")  # the plan a stale estimate led to
        plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + text, *args)
        rows = await conn.fetch(text, *args)
    # read_runs_events_after starts at the cursor's own event (its creation time, no data).
    first = 1000 if statement == "read_runs_events_after" else 1001
    assert [row["seq"] for row in rows] == list(range(first, 1101))
    scans = _nodes_on(json.loads(plan)[0]["Plan"], "run_events")
    # read_events_after looks for the run's head (pgbridge_run_head, revision 0012) within the 255
    # seqs after its row's last_seq: bounded too, whatever the plan.
    head = [node for node in scans if "256" in json.dumps(node)]
    pages = [node for node in scans if node not in head]
    assert bool(head) == (statement == "read_events_after")
    assert all(node["Actual Rows"] * node["Actual Loops"] <= 255 for node in head)
    assert pages and all(node["Actual Rows"] * node["Actual Loops"] <= 101 for node in pages)


def _nodes_on(node: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    """The plan nodes that read *relation*, anywhere under *node*."""
    found = [node] if node.get("Relation Name") == relation else []
    for child in node.get("Plans", []):
        found.extend(_nodes_on(child, relation))
    return found
