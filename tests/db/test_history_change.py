"""A run whose history changes under a live subscriber (docs/behaviour.md §6, §12).

The subscriber has yielded events that the run no longer stores: here, the
run was deleted and published again (a new life at seq 1); after an
asynchronous failover, the new primary never received them
(tests/faults/test_failover.py). Either way their continuation does not
exist, so the subscription raises RunHistoryChangedError, and an SSE stream
ends with an ``event: history_changed`` frame, instead of going on with the
new history as if it followed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from pgbridge import HEARTBEAT_SENTINEL, PostgresStreamBridge, RunHistoryChangedError, StreamEvent
from pgbridge.http.app import create_app
from tests.support.helpers import take
from tests.support.sql_helpers import connected

RUN = "run"


async def delete_run(dsn: str, run_id: str = RUN) -> None:
    """Delete the run as a DELETE of its stream would (its events, its row, a deletion record)."""
    async with connected(dsn) as conn:
        await conn.execute("SELECT pgbridge_delete_stream($1, 'api')", run_id)


async def yielded_until_it_raises(stream: AsyncIterator[StreamEvent]) -> tuple[list[str], BaseException]:
    """The event IDs *stream* yields (heartbeats aside) before it raises, and what it raised."""
    ids: list[str] = []
    try:
        async with asyncio.timeout(20):
            async for item in stream:
                if item is not HEARTBEAT_SENTINEL:
                    ids.append(item.id)
    except RunHistoryChangedError as exc:
        return ids, exc
    raise AssertionError(f"the stream ended without raising, after {ids}")


@pytest.mark.parametrize("new_life", [3, 8], ids=["shorter", "longer"])
async def test_a_subscriber_of_a_run_deleted_and_published_again_raises_and_yields_nothing_of_the_new_life(
    make_bridge: object, dsn: str, new_life: int
) -> None:
    writer = await make_bridge()  # type: ignore[operator]
    reader = await make_bridge(poll_interval=0.2)  # type: ignore[operator]
    ids = [await writer.publish(RUN, "token", {"life": 1, "i": i}) for i in range(5)]
    stream = reader.subscribe(RUN)
    assert [e.id for e in await take(stream, 5)] == ids
    await delete_run(dsn)
    again = [await writer.publish(RUN, "token", {"life": 2, "i": i}) for i in range(new_life)]
    yielded, error = await yielded_until_it_raises(stream)
    assert yielded == []  # nothing of the new life as if it followed event 5 of the first
    assert ids[-1] in str(error)
    assert (await reader.resolve(RUN, ids[-1])).status == "unknown"
    # A new subscription from the start reads the new life whole.
    assert [e.id for e in await take(reader.subscribe(RUN), new_life)] == again


async def test_a_subscriber_in_the_publishing_process_notices_too(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = [await bridge.publish(RUN, "token", {"i": i}) for i in range(4)]
    stream = bridge.subscribe(RUN)
    assert [e.id for e in await take(stream, 4)] == ids
    await delete_run(dsn)
    for i in range(6):  # handed to this process's feed without a query where they follow its buffer
        await bridge.publish(RUN, "token", {"again": i})
    yielded, _ = await yielded_until_it_raises(stream)
    assert yielded == []


async def test_a_subscriber_resumed_from_an_id_of_the_old_life_resolves_unknown_and_reads_the_new_one(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    old = [await bridge.publish(RUN, "token", {"i": i}) for i in range(3)]
    await delete_run(dsn)
    new = [await bridge.publish(RUN, "token", {"again": i}) for i in range(5)]
    # unknown: from the first event of what the run stores now (§3), not "after" the old ID
    assert [e.id for e in await take(bridge.subscribe(RUN, last_event_id=old[-1]), 5)] == new


async def test_an_sse_stream_of_a_run_published_anew_ends_with_a_history_changed_frame(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = [await bridge.publish(RUN, "token", {"i": i}) for i in range(3)]
    app = create_app(bridge, manage_bridge=False)
    frames: list[tuple[str, str]] = []

    async def read() -> None:
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://app", timeout=20
            ) as http,
            aconnect_sse(http, "GET", f"/runs/{RUN}/stream") as source,
        ):
            async for frame in source.aiter_sse():
                frames.append((frame.event, frame.id))

    reading = asyncio.ensure_future(read())
    # httpx's ASGI transport hands the frames over when the response ends: wait instead until
    # the stream's subscriber has yielded the three events and waits for more.
    for _ in range(500):
        feed = bridge._feeds.get(RUN)
        if feed is not None and any(waiter._future is not None for waiter in feed.waiters):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the SSE stream never caught up")
    await delete_run(dsn)
    for i in range(5):
        await bridge.publish(RUN, "token", {"again": i})
    await asyncio.wait_for(reading, 20)
    assert frames[:3] == [("token", i) for i in ids]
    # No id: line: the client's last event ID (sticky, by the SSE rules) stays on the last event.
    assert frames[3:] == [("history_changed", ids[-1])]


async def test_an_ai_sdk_resume_stream_of_a_run_published_anew_ends_with_an_error_chunk(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    from pgbridge.ai_sdk.routes import resume_frames

    await bridge.publish(RUN, "start", {"type": "start"})
    await bridge.publish(RUN, "text-delta", {"type": "text-delta", "id": "t", "delta": "Hel"})
    frames = resume_frames(bridge.subscribe_stored(RUN, heartbeat_interval=30))
    first = [await anext(frames), await anext(frames)]
    assert '"start"' in first[0] and '"Hel"' in first[1]
    await delete_run(dsn)
    for delta in ("other", "answer", "!"):
        await bridge.publish(RUN, "text-delta", {"type": "text-delta", "id": "t", "delta": delta})
    rest = [frame async for frame in frames]
    assert len(rest) == 1 and '"type":"error"' in rest[0] and "a failover lost them" in rest[0]
    assert rest[0].endswith("data: [DONE]\n\n")  # ended, not continued with the new history
