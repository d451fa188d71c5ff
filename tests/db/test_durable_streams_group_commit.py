"""Group commit of Durable Streams appends: concurrent protocol appends share transactions,
and every request still gets its own checks and its own outcome."""

from __future__ import annotations

import asyncio
import json

import pytest

from pgbridge import PostgresStreamBridge
from pgbridge.durable_streams.streams import AppendOutcome, Producer, StreamConfig
from pgbridge.exceptions import StreamBridgeError
from tests.conftest import BridgeFactory

JSON = "application/json"


async def _stream(bridge: PostgresStreamBridge, name: str, content_type: str = JSON) -> str:
    created, _ = await bridge.streams.create(name, StreamConfig(content_type))
    assert created
    return name


async def _texts(bridge: PostgresStreamBridge, run_id: str) -> list[str]:
    """The stored texts of the run's messages (a page's body joins them exactly, in order)."""
    read = await bridge.streams.read_page(run_id, 0, max_messages=10_000, max_bytes=1 << 30)
    assert read is not None
    if not read.count:
        return []
    joined, texts, start = read.body.decode()[1:-1], [], 0  # "[text,text,...]"
    while start < len(joined):
        _, end = json.JSONDecoder().raw_decode(joined, start)
        texts.append(joined[start:end])
        start = end + 1  # past the comma
    return texts


async def test_concurrent_appends_share_batches_and_all_are_stored_in_order(
    make_bridge: BridgeFactory,
) -> None:
    # One batch in flight: the first append goes alone, the rest queue behind it in
    # arrival order (with more in flight, the first few would race each other, as
    # concurrent HTTP requests do).
    bridge = await make_bridge(publish_batches_in_flight=1)
    runs = [await _stream(bridge, f"gc-{i}") for i in range(10)]
    per_run = 20

    async def producer(run_id: str) -> list[AppendOutcome]:
        # Every append of a run at once: they are answered in arrival order.
        return await asyncio.gather(
            *(bridge.streams.append(run_id, JSON, [("message", f'{{"i": {i}}}')]) for i in range(per_run))
        )

    batcher = bridge.streams._batcher
    before = batcher.batches, batcher.requests
    outcomes = await asyncio.gather(*(producer(run) for run in runs))
    batches, requests = batcher.batches - before[0], batcher.requests - before[1]
    assert requests == len(runs) * per_run
    assert batches < requests  # concurrent appends shared transactions
    for run, answered in zip(runs, outcomes, strict=True):
        assert [o.kind for o in answered] == ["appended"] * per_run
        assert [o.last_seq for o in answered] == list(range(1, per_run + 1))
        assert await _texts(bridge, run) == [f'{{"i": {i}}}' for i in range(per_run)]


async def test_each_request_in_a_batch_gets_its_own_producer_and_closure_checks(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(publish_batches_in_flight=1)
    run = await _stream(bridge, "gc-producer")
    other = await _stream(bridge, "gc-closed")
    text_stream = await _stream(bridge, "gc-text", "text/plain")
    await bridge.streams.append(other, None, [], close=True)

    def append(seq: int, epoch: int = 0) -> asyncio.Future[AppendOutcome]:
        return asyncio.ensure_future(
            bridge.streams.append(
                run, JSON, [("message", f'{{"seq": {seq}}}')], producer=Producer("p", epoch, seq)
            )
        )

    answered = await asyncio.gather(
        append(0),
        append(1),
        append(1),  # a retry: stored once
        append(3),  # a gap
        bridge.streams.append(other, JSON, [("message", "{}")]),  # closed
        bridge.streams.append(text_stream, JSON, [("message", "{}")]),  # wrong content type
        bridge.streams.append("gc-missing", JSON, [("message", "{}")]),  # no stream
        append(2),
    )
    assert [o.kind for o in answered] == [
        "appended",
        "appended",
        "duplicate",
        "gap",
        "closed",
        "content_type",
        "not_found",
        "appended",
    ]
    assert answered[2].event_seq == answered[1].event_seq
    assert await _texts(bridge, run) == ['{"seq": 0}', '{"seq": 1}', '{"seq": 2}']
    assert await _texts(bridge, other) == []
    assert await _texts(bridge, text_stream) == []


async def test_a_batch_the_server_refuses_is_retried_alone_so_only_the_bad_request_fails(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(publish_batches_in_flight=1)
    run = await _stream(bridge, "gc-refused")
    # Not JSON: the stored jsonb refuses it (HTTP validates first; this reaches SQL on purpose).
    bodies = ['{"a": 1}', '{"a": 2}', "{not json", '{"a": 3}', '{"a": 4}']
    answered = await asyncio.gather(
        *(bridge.streams.append(run, JSON, [("message", body)]) for body in bodies),
        return_exceptions=True,
    )
    assert isinstance(answered[2], StreamBridgeError)
    kept = [a for i, a in enumerate(answered) if i != 2]
    assert all(isinstance(a, AppendOutcome) and a.kind == "appended" for a in kept)
    assert await _texts(bridge, run) == ['{"a": 1}', '{"a": 2}', '{"a": 3}', '{"a": 4}']


@pytest.mark.parametrize("events", [0, 3])
async def test_a_lone_append_or_close_is_answered_as_before(make_bridge: BridgeFactory, events: int) -> None:
    bridge = await make_bridge()
    run = await _stream(bridge, f"gc-lone-{events}")
    outcome = await bridge.streams.append(
        run, JSON, [("message", str(i)) for i in range(events)], close=events == 0
    )
    assert outcome.kind == ("appended" if events else "closed_now")
    assert outcome.closed == (events == 0)
    assert await _texts(bridge, run) == [str(i) for i in range(events)]
