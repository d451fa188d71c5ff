"""The unmodified LangGraph SDK rides through a server restart (SIGKILL, then a new
process on the same port a second later) without losing or repeating an event.

What makes it work: stream responses carry ``Location`` (the stream's own
path), so after a drop the SDK asks ``GET /threads/{t}/runs/{r}``, sees
``running``, and reconnects there with ``Last-Event-ID``; the durable log
resumes exactly after that event, whichever process serves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.schema import StreamPart

from pgbridge import PostgresStreamBridge
from tests.support.helpers import wait_until
from tests.support.http_server import ServerProcess

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once


@pytest_asyncio.fixture
async def server(dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(dsn)
    await process.start()
    yield process
    await process.stop()


async def publish_through_a_restart(
    server: ServerProcess, publisher: PostgresStreamBridge, run_id: str, received: list[StreamPart]
) -> list[str]:
    """While a client reads: publish, SIGKILL the server once the client has
    read five events, publish while no server is up, start a new server a
    second later, publish the rest and the end. Returns every published ID."""
    published = [await publisher.publish(run_id, "token", {"n": i}) for i in range(5)]
    await wait_until(lambda: len(received) >= 5, timeout=30)
    await server.kill()
    published += [await publisher.publish(run_id, "token", {"n": i}) for i in range(5, 15)]
    await asyncio.sleep(1.0)
    await server.start()
    published += [await publisher.publish(run_id, "token", {"n": i}) for i in range(15, 25)]
    published.append(await publisher.publish_end(run_id))
    return published


async def test_the_async_sdk_join_stream_resumes_through_a_server_kill_and_restart(
    server: ServerProcess, dsn: str
) -> None:
    run_id = "run-async-sdk"
    received: list[StreamPart] = []
    client = get_client(url=server.url, headers=server.auth)

    async def join() -> None:
        async for part in client.runs.join_stream("thread-1", run_id):
            received.append(part)

    async with PostgresStreamBridge(dsn) as publisher:
        joining = asyncio.ensure_future(join())
        published = await publish_through_a_restart(server, publisher, run_id, received)
        await asyncio.wait_for(joining, 60)
    assert [part.id for part in received] == published
    assert received[-1].event == "end"


async def test_the_sync_sdk_join_stream_resumes_through_a_server_kill_and_restart(
    server: ServerProcess, dsn: str
) -> None:
    run_id = "run-sync-sdk"
    received: list[StreamPart] = []
    client = get_sync_client(url=server.url, headers=server.auth)

    def join() -> None:  # in a thread: the sync client blocks
        for part in client.runs.join_stream("thread-1", run_id):
            received.append(part)

    async with PostgresStreamBridge(dsn) as publisher:
        joining = asyncio.ensure_future(asyncio.to_thread(join))
        published = await publish_through_a_restart(server, publisher, run_id, received)
        await asyncio.wait_for(joining, 60)
    assert [part.id for part in received] == published
    assert received[-1].event == "end"


async def test_stream_responses_name_their_own_path_for_reconnects(server: ServerProcess, dsn: str) -> None:
    async with PostgresStreamBridge(dsn) as publisher:
        await publisher.publish("a/b", "token", 1)
        await publisher.publish_end("a/b")
    async with server.client() as http:
        thread_stream = await http.get("/threads/t-1/runs/a%2Fb/stream")
        plain_stream = await http.get("/runs/a%2Fb/stream")
        run = await http.get("/threads/t-1/runs/a%2Fb")
        missing = await http.get("/threads/t-1/runs/never")
    assert thread_stream.headers["location"] == "/threads/t-1/runs/a%2Fb/stream"
    assert plain_stream.headers["location"] == "/runs/a%2Fb/stream"
    assert (run.json()["run_id"], run.json()["thread_id"], run.json()["status"]) == ("a/b", "t-1", "success")
    assert missing.status_code == 404
