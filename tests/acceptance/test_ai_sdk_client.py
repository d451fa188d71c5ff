"""The AI SDK's own client (npm ``ai`` 5, 6 and 7, pinned) resuming chats from ``pgbridge serve``.

Responses are written by this (Python) process with
:class:`pgbridge.ai_sdk.UIMessageWriter`; the server is a ``pgbridge serve``
process on a real PostgreSQL; the reader is ``ai-sdk-client/resume.mjs``, which
uses ``DefaultChatTransport.reconnectToStream`` with ``readUIMessageStream``,
or an ``AbstractChat`` subclass's ``resumeStream()`` (what ``useChat({ resume: true })``
does on mount). Protocol: docs/ai-sdk.md and :mod:`pgbridge.ai_sdk.routes`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge
from pgbridge.ai_sdk import UIMessageWriter
from tests.support.ai_sdk_client import CLIENT_DIR, PACKAGES, ClientRun, installed_version, require_node
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

#: A response with every kind of part: reasoning, text, a tool call and its result, data, a source.
OPENING: list[dict[str, Any]] = [
    {"type": "start-step"},
    {"type": "reasoning-start", "id": "r1"},
    {"type": "reasoning-delta", "id": "r1", "delta": "The user wants "},
    {"type": "reasoning-delta", "id": "r1", "delta": "the weather."},
    {"type": "reasoning-end", "id": "r1"},
    {"type": "text-start", "id": "t1"},
    {"type": "text-delta", "id": "t1", "delta": "Looking it "},
]
CLOSING: list[dict[str, Any]] = [
    {"type": "text-delta", "id": "t1", "delta": "up."},
    {"type": "text-end", "id": "t1"},
    {"type": "tool-input-start", "toolCallId": "call-1", "toolName": "weather"},
    {"type": "tool-input-delta", "toolCallId": "call-1", "inputTextDelta": '{"city":'},
    {"type": "tool-input-delta", "toolCallId": "call-1", "inputTextDelta": '"Paris"}'},
    {
        "type": "tool-input-available",
        "toolCallId": "call-1",
        "toolName": "weather",
        "input": {"city": "Paris"},
    },
    {"type": "tool-output-available", "toolCallId": "call-1", "output": {"celsius": 21}},
    {"type": "data-forecast", "id": "f1", "data": {"days": ["sun", "rain"]}},
    {"type": "source-url", "sourceId": "s1", "url": "https://example.org/paris", "title": "Paris"},
    {"type": "finish-step"},
]
#: The message those chunks make, as every major builds it (the fields the test compares).
EXPECTED_PARTS = [
    {"type": "step-start"},
    {"type": "reasoning", "text": "The user wants the weather."},
    {"type": "text", "text": "Looking it up."},
    {
        "type": "tool-weather",
        "toolCallId": "call-1",
        "state": "output-available",
        "input": {"city": "Paris"},
        "output": {"celsius": 21},
    },
    {"type": "data-forecast", "id": "f1", "data": {"days": ["sun", "rain"]}},
    {"type": "source-url", "sourceId": "s1", "url": "https://example.org/paris", "title": "Paris"},
]


@pytest_asyncio.fixture(scope="module")
async def chat_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(chat_dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(chat_dsn)
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def producer(chat_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    async with PostgresStreamBridge(chat_dsn) as bridge:
        yield bridge


@pytest.fixture(params=PACKAGES)
def package(request: pytest.FixtureRequest) -> str:
    require_node(request.param)
    return str(request.param)


def new_chat() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


def projected(part: dict[str, Any]) -> dict[str, Any]:
    """The fields of a message part that EXPECTED_PARTS names (majors add others of their own)."""
    expected = next((p for p in EXPECTED_PARTS if p["type"] == part["type"]), {"type": part["type"]})
    return {key: part.get(key) for key in expected}


def texts(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def test_the_pinned_ai_versions_are_the_installed_ones() -> None:
    """What the lock file pins is what runs (a stale node_modules would test something else)."""
    wanted = json.loads((CLIENT_DIR / "package.json").read_text())["dependencies"]
    for package in PACKAGES:
        require_node(package)
        assert wanted[package] == f"npm:ai@{installed_version(package)}"
        assert installed_version(package).split(".")[0] == package.removeprefix("ai")


async def test_reconnect_to_stream_gets_a_response_in_progress_whole_with_every_part_kind(
    package: str, server: ServerProcess, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    async with UIMessageWriter(producer, chat_id) as response:
        await response.write_many(OPENING)
        client = await ClientRun.start(package, "transport", server.url, chat_id, token=server.token)
        try:
            # It joined mid-response: the replay reaches it from "start" before the rest is written.
            await client.wait_for("the replay", lambda c: len(c.chunks()) == 1 + len(OPENING))
            for chunk in CLOSING:
                await response.write(chunk)
        finally:
            await response.finish(finish_reason="stop")
            outcome = await client.outcome()
            await client.stop()
    assert outcome["status"] == 200
    message = outcome["message"]
    assert message["id"] == response.message_id and message["role"] == "assistant"
    assert [projected(part) for part in message["parts"]] == EXPECTED_PARTS
    assert [c["type"] for c in client.chunks()] == [
        "start",
        *(c["type"] for c in OPENING + CLOSING),
        "finish",
    ]


async def test_resume_stream_rebuilds_the_message_of_a_reader_that_joins_mid_response(
    package: str, server: ServerProcess, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    words = [f"word{i} " for i in range(12)]
    async with UIMessageWriter(producer, chat_id) as response:
        await response.write({"type": "text-start", "id": "t"})
        for word in words[:6]:
            await response.write({"type": "text-delta", "id": "t", "delta": word})
        client = await ClientRun.start(package, "chat", server.url, chat_id, token=server.token)
        try:
            await client.wait_for("the replay", lambda c: len(c.chunks("text-delta")) == 6)
            for word in words[6:]:
                await response.write({"type": "text-delta", "id": "t", "delta": word})
            await response.write({"type": "text-end", "id": "t"})
        finally:
            await response.finish()
            outcome = await client.outcome()
            await client.stop()
    assert (outcome["status"], outcome["error"]) == ("ready", None)
    user, assistant = outcome["messages"]
    assert user["id"] == "user-1"
    assert assistant["id"] == response.message_id
    assert texts(assistant) == "".join(words)


async def test_a_chat_whose_response_has_finished_gets_204_and_the_client_stays_idle(
    package: str, server: ServerProcess, producer: PostgresStreamBridge
) -> None:
    chat_id = new_chat()
    async with UIMessageWriter(producer, chat_id) as response:
        await response.write_many([{"type": "text-start", "id": "t"}, {"type": "text-end", "id": "t"}])
    transport = await ClientRun.start(package, "transport", server.url, chat_id, token=server.token)
    chat = await ClientRun.start(package, "chat", server.url, chat_id, token=server.token)
    assert await transport.outcome() == {"event": "outcome", "status": 204}
    outcome = await chat.outcome()
    assert (outcome["status"], outcome["error"]) == ("ready", None)
    assert [m["id"] for m in outcome["messages"]] == ["user-1"]  # nothing added


async def test_pages_resuming_one_chat_at_once_each_end_with_the_message_once(
    package: str, server: ServerProcess, producer: PostgresStreamBridge
) -> None:
    """Two pages of one chat resume at once, and one of them twice (React StrictMode mounts
    twice): every GET is served, and each page ends with the message once."""
    chat_id = new_chat()
    start = [{"type": "text-start", "id": "t"}, {"type": "text-delta", "id": "t", "delta": "a"}]
    async with UIMessageWriter(producer, chat_id) as response:
        await response.write_many(start)
        client = await ClientRun.start(package, "twice", server.url, chat_id, token=server.token)
        try:
            await client.wait_for(
                "both pages' replays", lambda c: {p for p, _ in c.page_chunks("text-delta")} == {"a", "b"}
            )
            await response.write_many(
                [{"type": "text-delta", "id": "t", "delta": "b"}, {"type": "text-end", "id": "t"}]
            )
        finally:
            await response.finish()
            outcome = await client.outcome()
            await client.stop()
    for page in outcome["pages"].values():
        assert (page["status"], page["error"]) == ("ready", None)
        assert [m["role"] for m in page["messages"]] == ["user", "assistant"]
        assert texts(page["messages"][1]) == "ab"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
async def test_a_server_stopped_mid_response_and_restarted_still_yields_the_whole_message_once(
    package: str, stop: str, chat_dsn: str, producer: PostgresStreamBridge, tmp_path: Path
) -> None:
    """SIGKILL: the connection drops. SIGTERM: the server cuts open resumes on purpose (an
    ended stream would be a finished message to the client). Either way the client sees a
    disconnect, and its next resume, on the restarted server, gets the whole message."""
    server = ServerProcess(chat_dsn, log=tmp_path / "serve.log")
    await server.start()
    chat_id = new_chat()
    words = [f"w{i} " for i in range(30)]
    # Each failed attempt is a page reload: a new chat resuming again.
    env = {"RESUME_ATTEMPTS": "200", "RESUME_PAUSE_MS": "100"}
    try:
        async with UIMessageWriter(producer, chat_id) as response:
            await response.write({"type": "text-start", "id": "t"})
            for word in words[:10]:
                await response.write({"type": "text-delta", "id": "t", "delta": word})
            client = await ClientRun.start(package, "chat", server.url, chat_id, token=server.token, env=env)
            try:
                await client.wait_for("the replay", lambda c: len(c.chunks("text-delta")) == 10)
                await (server.kill() if stop == "SIGKILL" else server.stop())  # mid-response
                for word in words[10:20]:  # written while no server is up
                    await response.write({"type": "text-delta", "id": "t", "delta": word})
                await server.start()  # a new process, nothing of the old one's memory
                # The next page load replays from "start" on the new process...
                await client.wait_for("a resume after the restart", lambda c: len(c.chunks("start")) == 2)
                for word in words[20:]:  # ...and follows what is written after
                    await response.write({"type": "text-delta", "id": "t", "delta": word})
                await response.write({"type": "text-end", "id": "t"})
            finally:
                await response.finish()
                outcome = await client.outcome()
                await client.stop()
    finally:
        await server.stop()
    attempts = [e for e in client.events if e["event"] == "attempt"]
    assert attempts and all(a["status"] == "error" for a in attempts)  # the kill was seen
    assert (outcome["status"], outcome["error"]) == ("ready", None)
    assert [m["role"] for m in outcome["messages"]] == ["user", "assistant"]
    assert texts(outcome["messages"][1]) == "".join(words)
