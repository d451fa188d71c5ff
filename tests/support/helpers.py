"""Small helpers the tests share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from pgbridge import HEARTBEAT_SENTINEL, StreamEvent


async def collect(
    stream: AsyncIterator[StreamEvent], *, timeout: float = 10.0, skip_heartbeats: bool = True
) -> list[StreamEvent]:
    """Everything *stream* yields until it returns (heartbeats dropped by default)."""

    async def drain() -> list[StreamEvent]:
        items = []
        async for item in stream:
            if skip_heartbeats and item == HEARTBEAT_SENTINEL:
                continue
            items.append(item)
        return items

    return await asyncio.wait_for(drain(), timeout)


async def take(stream: AsyncIterator[StreamEvent], count: int, *, timeout: float = 10.0) -> list[StreamEvent]:
    """The next *count* non-heartbeat items of *stream*."""

    async def grab() -> list[StreamEvent]:
        items: list[StreamEvent] = []
        while len(items) < count:
            item = await anext(stream)
            if item != HEARTBEAT_SENTINEL:
                items.append(item)
        return items

    return await asyncio.wait_for(grab(), timeout)


async def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait for *condition* to hold (a bound for the test, not a timing claim)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def seq_of(event_id: str) -> int:
    return int(event_id.split("-")[1])
