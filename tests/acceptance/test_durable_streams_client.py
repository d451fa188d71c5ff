"""Durable Streams through the official Python client (``durable-streams`` on PyPI), against
``pgbridge serve`` processes on a real PostgreSQL: no client code of ours on the reading side."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from durable_streams import AsyncDurableStream, astream

from pgbridge import PostgresStreamBridge
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory


@pytest_asyncio.fixture(scope="module")
async def streams_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(streams_dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(streams_dsn, extra_args=("--long-poll-timeout", "5"))
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def publisher(streams_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    async with PostgresStreamBridge(streams_dsn) as bridge:
        yield bridge


def stream_url(server: ServerProcess, name: str) -> str:
    return f"{server.url}/v1/stream/{name}"


def new_name() -> str:
    return f"ds-{uuid.uuid4().hex[:10]}"


async def create_json_stream(server: ServerProcess, name: str) -> AsyncDurableStream:
    return await AsyncDurableStream.create(
        stream_url(server, name), content_type="application/json", headers=server.auth, batching=False
    )


async def read_json(server: ServerProcess, name: str, offset: str | None = None) -> list[Any]:
    async with astream(stream_url(server, name), offset=offset, live=False, headers=server.auth) as res:
        return list(await res.read_json())


async def next_json(server: ServerProcess, name: str, offset: str, live: str, count: int) -> list[Any]:
    """The first *count* messages a live reader from *offset* receives."""
    items: list[Any] = []
    async with astream(stream_url(server, name), offset=offset, live=live, headers=server.auth) as res:  # type: ignore[arg-type]
        async for item in res.iter_json():
            items.append(item)
            if len(items) == count:
                break
    return items


async def test_client_creates_a_json_stream_appends_and_reads_it_from_the_start(
    server: ServerProcess,
) -> None:
    name = new_name()
    handle = await create_json_stream(server, name)
    async with handle:
        await handle.append({"n": 1})
        await handle.append({"n": 2, "text": "ünïcode\nline"})
        head = await handle.head()
    assert await read_json(server, name, "-1") == [{"n": 1}, {"n": 2, "text": "ünïcode\nline"}]
    assert await read_json(server, name) == await read_json(server, name, "-1")
    assert head.content_type == "application/json"


async def test_reading_from_an_offset_returns_only_the_messages_after_it(server: ServerProcess) -> None:
    name = new_name()
    async with await create_json_stream(server, name) as handle:
        first = await handle.append({"n": 1})
        await handle.append({"n": 2})
        await handle.append({"n": 3})
    assert await read_json(server, name, first.next_offset) == [{"n": 2}, {"n": 3}]


async def test_reading_from_now_skips_history_and_follows_new_appends_by_long_poll(
    server: ServerProcess,
) -> None:
    name = new_name()
    async with await create_json_stream(server, name) as handle:
        await handle.append({"old": True})
        assert await read_json(server, name, "now") == []
        reader = asyncio.create_task(next_json(server, name, "now", "long-poll", 2))
        await asyncio.sleep(0.3)  # let the reader park (it gets the data either way)
        await handle.append({"new": 1})
        await handle.append({"new": 2})
        assert await asyncio.wait_for(reader, 20) == [{"new": 1}, {"new": 2}]


async def test_live_sse_reader_receives_history_then_new_appends(server: ServerProcess) -> None:
    name = new_name()
    async with await create_json_stream(server, name) as handle:
        await handle.append({"n": 1})
        reader = asyncio.create_task(next_json(server, name, "-1", "sse", 3))
        await asyncio.sleep(0.3)
        await handle.append({"n": 2})
        await handle.append({"n": 3})
        assert await asyncio.wait_for(reader, 20) == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_a_bridge_publish_wakes_a_long_poll_reader_of_its_run(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id = f"agent/{new_name()}"  # a run id may hold "/"
    first_id = await publisher.publish(run_id, "token", {"text": "a"})
    history = await read_json(server, run_id, "-1")
    assert history == [{"id": first_id, "event": "token", "data": {"text": "a"}}]
    async with astream(stream_url(server, run_id), offset="-1", live=False, headers=server.auth) as res:
        await res.read_json()
        tail = res.offset
    reader = asyncio.create_task(next_json(server, run_id, tail, "long-poll", 1))
    await asyncio.sleep(0.3)
    second_id = await publisher.publish(run_id, "token", {"text": "b"})
    assert await asyncio.wait_for(reader, 20) == [{"id": second_id, "event": "token", "data": {"text": "b"}}]


async def test_reads_resume_from_an_offset_after_the_server_is_sigkilled_and_restarted(
    streams_dsn: str,
) -> None:
    process = ServerProcess(streams_dsn)
    await process.start()
    name = new_name()
    try:
        async with await create_json_stream(process, name) as handle:
            await handle.append({"n": 1})
            await handle.append({"n": 2})
        async with astream(stream_url(process, name), offset="-1", live=False, headers=process.auth) as res:
            assert list(await res.read_json()) == [{"n": 1}, {"n": 2}]
            offset = res.offset
        await process.kill()
        await process.start()  # same port, new process
        async with AsyncDurableStream(
            stream_url(process, name), content_type="application/json", headers=process.auth, batching=False
        ) as handle:
            await handle.append({"n": 3})
        assert await read_json(process, name, offset) == [{"n": 3}]
        assert await read_json(process, name, "-1") == [{"n": 1}, {"n": 2}, {"n": 3}]
    finally:
        await process.stop()


async def test_two_server_processes_on_one_database_serve_one_stream(
    server: ServerProcess, streams_dsn: str
) -> None:
    other = ServerProcess(streams_dsn)
    await other.start()
    name = new_name()
    try:
        async with await create_json_stream(server, name) as handle:
            await handle.append({"via": "first"})
            assert await read_json(other, name, "-1") == [{"via": "first"}]
            # A reader parked on the other process is woken by this one's append (NOTIFY).
            reader = asyncio.create_task(next_json(other, name, "now", "long-poll", 1))
            await asyncio.sleep(0.3)
            await handle.append({"via": "first", "n": 2})
            assert await asyncio.wait_for(reader, 20) == [{"via": "first", "n": 2}]
        async with AsyncDurableStream(
            stream_url(other, name), content_type="application/json", headers=other.auth, batching=False
        ) as handle:
            await handle.append({"via": "second"})
        assert await read_json(server, name, "-1") == [
            {"via": "first"},
            {"via": "first", "n": 2},
            {"via": "second"},
        ]
    finally:
        await other.stop()
