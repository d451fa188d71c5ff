"""Walking a stream page by page, from any offset, under any page limits, gives every
message after the offset exactly once, in order (hypothesis).

Each example makes a stream (JSON, binary, a run born from publish, or a
fork of a JSON stream) and reads it the way a catch-up client does: from an
offset, following each page's ``next_seq`` until the page says the reader is
up to date. Every page must respect its limits (at most ``max_messages``,
at most ``max_bytes`` of stored message data unless it holds one message),
move forward, and only the last may say up to date.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgbridge import PostgresStreamBridge
from pgbridge.durable_streams.forks import ForkRequest
from pgbridge.durable_streams.messages import JSON_TYPE, MESSAGE_EVENT, bytes_message
from pgbridge.durable_streams.streams import StreamConfig, StreamPage
from pgbridge.payload import encode_data
from tests.support.postgres_server import DatabaseFactory

T = TypeVar("T")
BINARY = "application/octet-stream"

#: Text PostgreSQL can store (no NUL, no lone surrogates: the bridge refuses those).
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=120)
keys = texts.map(lambda text: text[:8])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@dataclass(frozen=True)
class Scenario:
    kind: str  # "json", "binary", "published" or "fork"
    messages: list[Any]  # JSON values, or bytes for "binary"
    fork_point: int  # for "fork": the source's messages up to here are inherited
    own: list[Any]  # for "fork": the fork's own messages
    start: int  # the offset read after
    max_messages: int
    max_bytes: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    kind = draw(st.sampled_from(["json", "binary", "published", "fork"]))
    items = st.binary(max_size=200) if kind == "binary" else json_values
    messages = draw(st.lists(items, min_size=1 if kind == "published" else 0, max_size=40))  # a run exists
    fork_point = draw(st.integers(0, len(messages))) if kind == "fork" else 0
    own = draw(st.lists(json_values, max_size=15)) if kind == "fork" else []
    total = (fork_point + len(own)) if kind == "fork" else len(messages)
    return Scenario(
        kind=kind,
        messages=messages,
        fork_point=fork_point,
        own=own,
        start=draw(st.integers(0, total)),
        max_messages=draw(st.integers(1, 12)),
        max_bytes=draw(st.integers(1, 1500)),
    )


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def _make(bridge: PostgresStreamBridge, scenario: Scenario) -> tuple[str, list[Any], list[int]]:
    """The stream; what a read from the start returns, message by message; each one's stored size."""
    run_id = f"walk-{uuid.uuid4().hex[:12]}"
    if scenario.kind == "binary":
        texts = [bytes_message(m) for m in scenario.messages]
        await bridge.streams.create(run_id, StreamConfig(BINARY), [(MESSAGE_EVENT, t) for t in texts])
        return run_id, list(scenario.messages), [len(t.encode()) for t in texts]
    if scenario.kind == "published":
        expected = []
        for index, value in enumerate(scenario.messages):
            event = f"step-{index}"
            event_id = await bridge.publish(run_id, event, value)
            expected.append({"id": event_id, "event": event, "data": value})
        sizes = [len(encode_data(m).encode()) for m in scenario.messages]  # as publish stores it
        return run_id, expected, sizes
    texts = [_text(m) for m in scenario.messages]
    await bridge.streams.create(run_id, StreamConfig(JSON_TYPE), [(MESSAGE_EVENT, t) for t in texts])
    if scenario.kind == "json":
        return run_id, list(scenario.messages), [len(t.encode()) for t in texts]
    fork_id = run_id + "-fork"
    await bridge.streams.create_fork(
        fork_id, StreamConfig(JSON_TYPE), ForkRequest(run_id, offset_seq=scenario.fork_point)
    )
    own = [_text(m) for m in scenario.own]
    if own:
        await bridge.streams.append(fork_id, JSON_TYPE, [(MESSAGE_EVENT, t) for t in own])
    inherited = texts[: scenario.fork_point]
    expected = scenario.messages[: scenario.fork_point] + scenario.own
    return fork_id, expected, [len(t.encode()) for t in inherited + own]


def _messages_of(page: StreamPage, kind: str) -> list[Any]:
    if kind == "binary":
        return [page.body] if page.body else []  # bytes: checked concatenated
    value = json.loads(page.body)
    assert isinstance(value, list)
    return value


async def _walk(bridge: PostgresStreamBridge, scenario: Scenario) -> None:
    run_id, expected, sizes = await _make(bridge, scenario)
    received: list[Any] = []
    position = scenario.start
    for _ in range(len(expected) + 2):
        page = await bridge.streams.read_page(
            run_id, position, max_messages=scenario.max_messages, max_bytes=scenario.max_bytes
        )
        assert page is not None
        assert page.count <= scenario.max_messages
        assert page.next_seq == position + page.count  # gapless, and the page says where it ended
        if page.count > 1:
            assert sum(sizes[position : page.next_seq]) <= scenario.max_bytes
        received.extend(_messages_of(page, scenario.kind))
        position = page.next_seq
        if page.up_to_date:
            break
        assert page.count > 0  # a page that is not the last moves forward
    else:
        raise AssertionError("the walk never became up to date")
    assert position == len(expected)
    if scenario.kind == "binary":
        assert b"".join(received) == b"".join(expected[scenario.start :])
    else:
        assert received == expected[scenario.start :]


@pytest.mark.timeout(300)
def test_walking_pages_from_any_offset_gives_every_message_once_in_order(databases: DatabaseFactory) -> None:
    loop = asyncio.new_event_loop()

    def wait(work: Coroutine[Any, Any, T]) -> T:
        return loop.run_until_complete(asyncio.wait_for(work, 60))

    dsn = wait(databases.create())
    bridge = PostgresStreamBridge(dsn)
    wait(bridge.start())
    try:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(scenarios())
        def walk(scenario: Scenario) -> None:
            wait(_walk(bridge, scenario))

        walk()
    finally:
        wait(bridge.close())
        wait(databases.drop(dsn))
        loop.close()
