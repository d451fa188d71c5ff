"""Writing AI SDK responses into runs, the chat's pointer, and the tee, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from pgbridge import PostgresStreamBridge, RetentionPolicy
from pgbridge.ai_sdk import (
    MessagePointer,
    UIMessageWriter,
    chat_run_id,
    current_response,
    tee_ui_message_stream,
)
from pgbridge.ai_sdk.runs import POINTER_EVENT
from pgbridge.exceptions import InvalidEventError, StreamExistsError, StreamTerminatedError


async def events_of(bridge: PostgresStreamBridge, run_id: str) -> list[tuple[str, object]]:
    """Every stored event of *run_id* as (name, data), read until its terminal event."""
    found = []
    async for event in bridge.subscribe(run_id, heartbeat_interval=0.1):
        if event.event.startswith("__"):
            break
        found.append((event.event, event.data))
    return found


async def test_a_response_stores_each_chunk_as_an_event_named_by_its_type_ending_in_its_terminal(
    bridge: PostgresStreamBridge,
) -> None:
    async with UIMessageWriter(bridge, "chat-1", message_id="msg-1") as response:
        await response.write({"type": "text-start", "id": "t"})
        await response.write({"type": "text-delta", "id": "t", "delta": "Hi"})
        await response.write({"type": "text-end", "id": "t"})
    assert await events_of(bridge, response.run_id) == [
        ("start", {"type": "start", "messageId": "msg-1"}),
        ("text-start", {"type": "text-start", "id": "t"}),
        ("text-delta", {"type": "text-delta", "id": "t", "delta": "Hi"}),
        ("text-end", {"type": "text-end", "id": "t"}),
        ("end", {"type": "finish"}),
    ]
    info = await bridge.run_info(response.run_id)
    assert info is not None and info.status == "ended"


@pytest.mark.parametrize(
    ("ending", "status"), [("error", "errored"), ("abort", "cancelled"), ("finish", "ended")]
)
async def test_the_ending_chunk_gives_the_run_its_terminal_status(
    bridge: PostgresStreamBridge, ending: str, status: str
) -> None:
    response = UIMessageWriter(bridge, "chat-ending")
    chunk = {"type": ending, "errorText": "boom"} if ending == "error" else {"type": ending}
    await response.write(chunk)
    info = await bridge.run_info(response.run_id)
    assert info is not None and info.status == status
    assert (await events_of(bridge, response.run_id))[-1][1] == chunk


async def test_the_start_is_written_first_pointing_the_chat_at_the_response(
    bridge: PostgresStreamBridge,
) -> None:
    response = UIMessageWriter(bridge, "chat-2")
    assert await current_response(bridge, "chat-2") is None
    await response.write({"type": "text-start", "id": "t"})  # not a start: one is written before it
    assert await current_response(bridge, "chat-2") == MessagePointer(response.run_id, response.message_id)
    await response.finish()
    names = [name for name, _ in await events_of(bridge, response.run_id)]
    assert names == ["start", "text-start", "end"]


async def test_a_start_chunk_written_by_the_app_keeps_its_message_id_and_metadata(
    bridge: PostgresStreamBridge,
) -> None:
    response = UIMessageWriter(bridge, "chat-3")
    await response.write({"type": "start", "messageId": "theirs", "messageMetadata": {"model": "m"}})
    await response.finish()
    assert response.message_id == "theirs"
    assert (await events_of(bridge, response.run_id))[0] == (
        "start",
        {"type": "start", "messageId": "theirs", "messageMetadata": {"model": "m"}},
    )


async def test_the_chat_points_at_its_newest_response(bridge: PostgresStreamBridge) -> None:
    first = UIMessageWriter(bridge, "chat-4")
    await first.start()
    await first.finish()
    second = UIMessageWriter(bridge, "chat-4")
    await second.start()
    assert second.run_id != first.run_id
    assert await current_response(bridge, "chat-4") == MessagePointer(second.run_id, second.message_id)
    pointers = await events_of_open(bridge, chat_run_id("chat-4"), 2)
    assert pointers == [
        (POINTER_EVENT, MessagePointer(r.run_id, r.message_id).to_json()) for r in (first, second)
    ]


async def events_of_open(bridge: PostgresStreamBridge, run_id: str, count: int) -> list[tuple[str, object]]:
    """The first *count* events of a run that has no terminal event."""
    found = []
    async for event in bridge.subscribe(run_id):
        found.append((event.event, event.data))
        if len(found) == count:
            return found
    raise AssertionError("the run ended")


async def test_a_bad_chunk_is_refused_and_nothing_is_stored(bridge: PostgresStreamBridge) -> None:
    response = UIMessageWriter(bridge, "chat-5")
    with pytest.raises(InvalidEventError, match="needs 'delta'"):
        await response.write({"type": "text-delta", "id": "t"})
    with pytest.raises(InvalidEventError, match="NaN"):
        await response.write({"type": "data-x", "data": float("nan")})
    assert await bridge.run_info(response.run_id) is None
    assert await current_response(bridge, "chat-5") is None


async def test_nothing_more_is_written_after_the_response_ended(bridge: PostgresStreamBridge) -> None:
    response = UIMessageWriter(bridge, "chat-6")
    await response.finish()
    with pytest.raises(StreamTerminatedError, match="has ended"):
        await response.write({"type": "text-start", "id": "t"})
    info = await bridge.run_info(response.run_id)
    assert info is not None and info.events_published == 2


async def test_a_response_whose_run_someone_cancelled_refuses_the_producers_next_chunk(
    bridge: PostgresStreamBridge,
) -> None:
    """A stop button: the app cancels the response's run; its producer learns at its next write."""
    response = UIMessageWriter(bridge, "chat-7")
    await response.start()
    await bridge.cancel(response.run_id)
    with pytest.raises(StreamTerminatedError):
        await response.write({"type": "text-start", "id": "t"})


async def test_write_many_stores_every_chunk_or_none(bridge: PostgresStreamBridge) -> None:
    response = UIMessageWriter(bridge, "chat-8")
    good = [{"type": "text-start", "id": "t"}, {"type": "text-delta", "id": "t", "delta": "x"}]
    with pytest.raises(InvalidEventError, match="must be the last"):
        await response.write_many([*good, {"type": "finish"}, {"type": "text-end", "id": "t"}])
    with pytest.raises(InvalidEventError):
        await response.write_many([*good, {"type": "data-x", "data": float("inf")}])
    assert await bridge.run_info(response.run_id) is None
    ids = await response.write_many([*good, {"type": "finish"}])
    assert len(ids) == 3 and response.ended is not None
    assert [name for name, _ in await events_of(bridge, response.run_id)] == [
        "start",
        "text-start",
        "text-delta",
        "end",
    ]


@pytest.mark.parametrize(
    ("raised", "ending"),
    [(None, {"type": "finish"}), (RuntimeError("x"), {"type": "error", "errorText": "An error occurred."})],
)
async def test_leaving_the_block_ends_an_open_response(
    bridge: PostgresStreamBridge, raised: Exception | None, ending: dict[str, str]
) -> None:
    response = UIMessageWriter(bridge, "chat-9")
    with pytest.raises(RuntimeError) if raised else _nothing():
        async with response:
            if raised:
                raise raised
    assert (await events_of(bridge, response.run_id))[-1] == ("end" if not raised else "error", ending)


@pytest.mark.parametrize("when", ["in the block", "while starting"])
async def test_a_cancelled_producer_ends_its_response_as_aborted(
    bridge: PostgresStreamBridge, when: str
) -> None:
    response = UIMessageWriter(bridge, "chat-10")
    inside = asyncio.Event()

    async def produce() -> None:
        async with response:
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(produce())
    if when == "in the block":
        await inside.wait()
    else:  # once the start is stored, before the chat's pointer is
        await asyncio.wait_for(_until(lambda: response.started), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await events_of(bridge, response.run_id))[-1] == ("cancel", {"type": "abort"})


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - what is waited for sets no event
        await asyncio.sleep(0)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_the_chat_run_is_never_dead_lettered_while_a_silent_response_is(
    make_bridge: object, bridge: PostgresStreamBridge
) -> None:
    """The reaper ends runs born from publish that went quiet (a producer that died), but the
    chat's run is a JSON Durable Stream: a chat quiet for an hour still takes a new response."""
    response = UIMessageWriter(bridge, "chat-11")
    await response.start()
    await asyncio.sleep(0.05)
    report = await bridge.run_retention(RetentionPolicy(active_timeout=0.01))
    assert report.runs_dead_lettered >= 1
    info = await bridge.run_info(response.run_id)
    assert info is not None and info.status == "errored"
    chat = await bridge.run_info(chat_run_id("chat-11"))
    assert chat is not None and chat.status == "active"
    later = UIMessageWriter(bridge, "chat-11")
    await later.start()
    assert await current_response(bridge, "chat-11") == MessagePointer(later.run_id, later.message_id)


async def test_a_chat_run_id_taken_by_a_published_run_is_refused(bridge: PostgresStreamBridge) -> None:
    await bridge.publish(chat_run_id("chat-12"), "token", {})
    with pytest.raises(StreamExistsError):
        await UIMessageWriter(bridge, "chat-12").start()
    assert await current_response(bridge, "chat-12") is None


# -- the tee ---------------------------------------------------------------------------


def sse_of(*chunks: dict[str, object]) -> list[bytes]:
    """A UI message stream as an app's server sends it: one piece per chunk, a comment, [DONE]."""
    pieces = [b": stream-open\n\n"]
    pieces += [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks]
    return [*pieces, b"data: [DONE]\n\n"]


CHUNKS = [
    {"type": "start", "messageId": "m-tee"},
    {"type": "text-start", "id": "t"},
    {"type": "text-delta", "id": "t", "delta": "tee"},
    {"type": "text-end", "id": "t"},
    {"type": "finish"},
]


async def pieces(
    items: list[bytes], *, gate: asyncio.Event | None = None, fail: bool = False
) -> AsyncIterator[bytes]:
    for index, item in enumerate(items):
        if gate is not None and index == 2:
            await gate.wait()
        yield item
    if fail:
        raise RuntimeError("the model service went away")


async def test_the_tee_passes_the_stream_on_unchanged_and_stores_its_chunks(
    bridge: PostgresStreamBridge,
) -> None:
    sent = sse_of(*CHUNKS)
    tee = tee_ui_message_stream(bridge, "chat-tee-1", pieces(sent))
    assert [piece async for piece in tee] == sent
    await tee.stored()
    assert [data for _, data in await events_of(bridge, tee.writer.run_id)] == CHUNKS
    assert tee.writer.message_id == "m-tee"


async def test_the_tee_goes_on_storing_after_the_browser_left(bridge: PostgresStreamBridge) -> None:
    gate = asyncio.Event()
    tee = tee_ui_message_stream(bridge, "chat-tee-2", pieces(sse_of(*CHUNKS), gate=gate))
    body = aiter(tee)
    await anext(body)
    await body.aclose()  # the page reloaded
    gate.set()
    await tee.stored()
    assert [data for _, data in await events_of(bridge, tee.writer.run_id)] == CHUNKS


async def test_a_stream_that_ends_without_an_ending_chunk_is_stored_finished(
    bridge: PostgresStreamBridge,
) -> None:
    tee = tee_ui_message_stream(bridge, "chat-tee-3", pieces(sse_of(*CHUNKS[:-1])))
    assert len([piece async for piece in tee]) == 6
    await tee.stored()
    assert (await events_of(bridge, tee.writer.run_id))[-1] == ("end", {"type": "finish"})


async def test_a_stream_that_raises_is_stored_with_an_error_and_breaks_the_browsers_response(
    bridge: PostgresStreamBridge,
) -> None:
    tee = tee_ui_message_stream(bridge, "chat-tee-4", pieces(sse_of(*CHUNKS[:3])[:-1], fail=True))
    with pytest.raises(RuntimeError, match="went away"):
        async for _ in tee:
            pass
    await tee.stored()
    assert (await events_of(bridge, tee.writer.run_id))[-1] == (
        "error",
        {"type": "error", "errorText": "An error occurred."},
    )


async def test_the_tee_skips_what_is_no_chunk_and_stores_the_rest(bridge: PostgresStreamBridge) -> None:
    sent = [b"data: not json\n\n", b'data: {"type":"mystery"}\n\n', *sse_of(*CHUNKS)]
    tee = tee_ui_message_stream(bridge, "chat-tee-5", pieces(sent))
    assert [piece async for piece in tee] == sent
    await tee.stored()
    assert [data for _, data in await events_of(bridge, tee.writer.run_id)] == CHUNKS
