"""``GET /chat/{chat_id}/stream`` (the AI SDK's resume request) on a ``pgbridge serve`` process,
read over real HTTP with httpx: status codes, headers and the exact framing of
:mod:`pgbridge.ai_sdk.routes`. The AI SDK's own client reads it in
tests/acceptance/test_ai_sdk_client.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge, RetentionPolicy
from pgbridge.ai_sdk import UIMessageWriter
from pgbridge.ai_sdk.chunks import INTERRUPTED_TEXT
from pgbridge.ai_sdk.runs import chat_run_id
from pgbridge.tokens import TokenKeyring, issue_read_token
from tests.support.cli import cli, cli_env
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory

UI_ORIGIN = "http://ui.example"


@pytest_asyncio.fixture(scope="module")
async def chat_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(chat_dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(chat_dsn, extra_args=("--cors-origin", UI_ORIGIN))
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def producer(chat_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    async with PostgresStreamBridge(chat_dsn) as bridge:
        yield bridge


@pytest_asyncio.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as http:
        yield http


def new_chat() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


async def read_body(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, str]:
    """The response and its whole body (the server ends it after [DONE])."""

    async def read() -> tuple[httpx.Response, str]:
        async with client.stream("GET", path) as response:
            return response, (await response.aread()).decode()

    return await asyncio.wait_for(read(), 20)


async def started_reading(client: httpx.AsyncClient, path: str) -> asyncio.Task[tuple[httpx.Response, str]]:
    """A read of *path* that has its first bytes (the replay reached it) before this returns."""
    first_bytes = asyncio.Event()

    async def read() -> tuple[httpx.Response, str]:
        async with client.stream("GET", path) as response:
            body = ""
            async for text in response.aiter_text():
                body += text
                first_bytes.set()
            return response, body

    task = asyncio.create_task(read())
    await asyncio.wait_for(first_bytes.wait(), 20)
    return task


def data_lines(body: str) -> list[str]:
    """The body's frames without its comments: each must be one ``data:`` line and a blank one."""
    frames = [frame for frame in body.split("\n\n") if frame and not frame.startswith(":")]
    assert body.endswith("\n\n") and all("\n" not in frame for frame in frames), body
    return frames


def chunks(body: str) -> list[object]:
    lines = data_lines(body)
    assert lines[-1] == "data: [DONE]", body
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


async def test_a_chat_with_no_response_gets_204(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/chat/{new_chat()}/stream")
    assert (response.status_code, response.content) == (204, b"")


async def test_a_chat_whose_response_ended_gets_204(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    async with UIMessageWriter(producer, chat_id):
        pass
    assert (await client.get(f"/chat/{chat_id}/stream")).status_code == 204


async def test_a_response_in_progress_is_the_ai_sdks_stream_from_start_to_done(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    async with UIMessageWriter(producer, chat_id, message_id="m1") as response:
        await response.write({"type": "text-start", "id": "t"})
        reading = await started_reading(client, f"/chat/{chat_id}/stream")
        await asyncio.sleep(0.5)  # quiet for longer than the heartbeat (0.2 s)
        await response.write({"type": "text-delta", "id": "t", "delta": 'line\nwith "quotes" ü'})
        await response.write({"type": "text-end", "id": "t"})
    answer, body = await asyncio.wait_for(reading, 20)
    assert answer.status_code == 200
    assert {
        name: answer.headers.get(name) for name in ("content-type", "cache-control", "x-accel-buffering")
    } == {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert data_lines(body) == [
        'data: {"type":"start","messageId":"m1"}',
        'data: {"type":"text-start","id":"t"}',
        'data: {"type":"text-delta","id":"t","delta":"line\\nwith \\"quotes\\" ü"}',
        'data: {"type":"text-end","id":"t"}',
        'data: {"type":"finish"}',
        "data: [DONE]",
    ]
    assert "\n\n: keep-alive\n\n" in body  # comments while quiet: the client's parser skips them


async def test_concurrent_resumes_of_one_chat_each_get_the_whole_response(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    async with UIMessageWriter(producer, chat_id) as response:
        await response.write({"type": "text-start", "id": "t"})
        readers = [await started_reading(client, f"/chat/{chat_id}/stream") for _ in range(3)]
        await response.write({"type": "text-end", "id": "t"})
    bodies = [body for _, body in await asyncio.gather(*readers)]
    assert [c["type"] for c in chunks(bodies[0])] == ["start", "text-start", "text-end", "finish"]  # type: ignore[index]
    assert chunks(bodies[1]) == chunks(bodies[0]) == chunks(bodies[2])


async def test_a_response_cancelled_by_the_app_ends_on_abort(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    response = UIMessageWriter(producer, chat_id)
    await response.start()
    reading = await started_reading(client, f"/chat/{chat_id}/stream")
    await producer.cancel(response.run_id)  # a stop button
    _, body = await asyncio.wait_for(reading, 20)
    assert chunks(body)[-1] == {"type": "abort"}


async def test_a_response_whose_producer_died_ends_on_an_error_when_the_reaper_ends_it(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    response = UIMessageWriter(producer, chat_id)
    await response.start()  # and then nothing: the producer is gone
    reading = await started_reading(client, f"/chat/{chat_id}/stream")
    await asyncio.sleep(0.1)
    await producer.run_retention(RetentionPolicy(active_timeout=0.05))
    _, body = await asyncio.wait_for(reading, 20)
    assert chunks(body)[-1] == {"type": "error", "errorText": INTERRUPTED_TEXT}


async def test_an_event_that_is_no_chunk_is_never_a_data_line(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    async with UIMessageWriter(producer, chat_id) as response:
        await producer.publish(response.run_id, "token", {"text": "not for the AI SDK"})
        reading = await started_reading(client, f"/chat/{chat_id}/stream")
    _, body = await asyncio.wait_for(reading, 20)
    assert [c["type"] for c in chunks(body)] == ["start", "finish"]  # type: ignore[index]
    assert ": skipped an event that is no UI message chunk\n\n" in body


async def test_a_response_whose_start_retention_deleted_is_one_error_chunk(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    response = UIMessageWriter(producer, chat_id)
    await response.write_many(
        [{"type": "text-start", "id": "t"}, {"type": "text-delta", "id": "t", "delta": "x"}]
    )
    # Every run keeps its newest event only (the chat's run too: its pointer is its newest).
    await producer.run_retention(RetentionPolicy(max_events_per_run=1))
    _, body = await read_body(client, f"/chat/{chat_id}/stream")
    assert chunks(body) == [
        {
            "type": "error",
            "errorText": "the first 2 chunks of this response were deleted by retention; "
            "it cannot be replayed",
        }
    ]
    await response.finish()


async def test_a_chat_id_with_a_slash_is_resumed_at_its_encoded_path(
    client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    chat_id = f"team/{new_chat()}"
    async with UIMessageWriter(producer, chat_id):
        reading = await started_reading(client, f"/chat/{chat_id.replace('/', '%2F')}/stream")
    _, body = await asyncio.wait_for(reading, 20)
    assert [c["type"] for c in chunks(body)] == ["start", "finish"]  # type: ignore[index]


async def test_a_chat_id_that_can_name_no_run_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/chat/a%00b/stream")
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]


async def test_the_bearer_token_covers_the_resume_route(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
        assert (await anonymous.get(f"/chat/{new_chat()}/stream")).status_code == 401


async def test_a_ui_on_another_allowed_origin_may_send_the_resume_request_with_its_token(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser:
        preflight = await browser.options(
            f"/chat/{new_chat()}/stream",
            headers={
                "Origin": UI_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == UI_ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        answer = await browser.get(f"/chat/{new_chat()}/stream", headers={"Origin": UI_ORIGIN, **server.auth})
        assert (answer.status_code, answer.headers["access-control-allow-origin"]) == (204, UI_ORIGIN)


async def test_serve_answers_the_resume_request_at_the_path_it_is_given(
    chat_dsn: str, producer: PostgresStreamBridge
) -> None:
    other = ServerProcess(chat_dsn, extra_args=("--chat-stream-path", "/api/chat/{chat_id}/stream"))
    await other.start()
    try:
        chat_id = new_chat()
        async with other.client() as client:
            async with UIMessageWriter(producer, chat_id):
                reading = await started_reading(client, f"/api/chat/{chat_id}/stream")
                assert (await client.get(f"/chat/{chat_id}/stream")).status_code == 404
            _, body = await asyncio.wait_for(reading, 20)
        assert [c["type"] for c in chunks(body)] == ["start", "finish"]  # type: ignore[index]
    finally:
        await other.stop()


async def test_serve_refuses_a_chat_stream_path_without_the_chat_id_in_one_line(chat_dsn: str) -> None:
    code, _out, err = await cli(
        "serve", "--dsn", chat_dsn, "--chat-stream-path", "/chat/stream", env=cli_env()
    )
    assert code == 2
    assert err.splitlines() == [
        "pgbridge: the chat stream path must start with / and hold {chat_id} once, not '/chat/stream'"
    ]


async def test_a_server_that_stops_cuts_an_open_resume_instead_of_ending_it(
    chat_dsn: str, producer: PostgresStreamBridge, tmp_path: Path
) -> None:
    """A properly ended stream is a finished message to the AI SDK client (it would show half an
    answer as whole); a cut one is a disconnect it resumes from. And no error is logged for it."""
    log = tmp_path / "serve.log"
    other = ServerProcess(chat_dsn, log=log)
    await other.start()
    chat_id = new_chat()
    response = UIMessageWriter(producer, chat_id)
    await response.write({"type": "text-start", "id": "t"})
    async with other.client() as client:
        reading = await started_reading(client, f"/chat/{chat_id}/stream")
        await other.stop()  # SIGTERM: a graceful shutdown
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
            await asyncio.wait_for(reading, 20)
    await response.finish()
    text = log.read_text()
    assert "Shutting down" in text
    assert "without completing response" not in text and "Exception in ASGI application" not in text


async def test_another_server_process_serves_the_same_response_live(
    chat_dsn: str, client: httpx.AsyncClient, producer: PostgresStreamBridge
) -> None:
    """Nothing to pin behind a load balancer: each process reads the chunks from PostgreSQL,
    woken by NOTIFY when the writer (in a third process here) commits one."""
    other = ServerProcess(chat_dsn)
    await other.start()
    try:
        chat_id = new_chat()
        async with other.client() as other_client:
            async with UIMessageWriter(producer, chat_id) as response:
                await response.write({"type": "text-start", "id": "t"})
                readers = [
                    await started_reading(http, f"/chat/{chat_id}/stream") for http in (client, other_client)
                ]
                await response.write({"type": "text-delta", "id": "t", "delta": "live"})
                await response.write({"type": "text-end", "id": "t"})
            first, second = [body for _, body in await asyncio.gather(*readers)]
        assert chunks(first) == chunks(second)
        assert [c["type"] for c in chunks(first)] == [
            "start",
            "text-start",
            "text-delta",
            "text-end",
            "finish",
        ]  # type: ignore[index]
    finally:
        await other.stop()


async def test_a_read_token_of_the_chats_run_resumes_it_and_its_expiry_cuts_the_stream(
    chat_dsn: str, producer: PostgresStreamBridge, tmp_path: Path
) -> None:
    """The resume route reads the chat's run (chat:<id>): a read token of that run may resume
    it, one of any other run may not; at expiry the response is cut, not ended, as at a server
    stop (an ended one would be a whole message to the AI SDK client)."""
    keys = tmp_path / "keys"
    keys.write_text(f"k1:{'ab' * 32}\n")
    ring = TokenKeyring.parse(keys.read_text())
    other = ServerProcess(chat_dsn, extra_args=("--token-secret-file", str(keys)))
    await other.start()
    chat_id = new_chat()
    response = UIMessageWriter(producer, chat_id)
    await response.write({"type": "text-start", "id": "t"})
    try:
        async with httpx.AsyncClient(base_url=other.url, timeout=10) as browser:
            path = f"/chat/{chat_id}/stream"
            wrong = issue_read_token(ring, chat_run_id(new_chat()), 60)
            assert (await browser.get(path, params={"token": wrong})).status_code == 401
            token = issue_read_token(ring, chat_run_id(chat_id), 2)
            reading = await started_reading(browser, f"{path}?token={token}")
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
                await asyncio.wait_for(reading, 20)
    finally:
        await response.finish()
        await other.stop()
