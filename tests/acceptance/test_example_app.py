"""examples/agent_app, started with its one command as a real process, read over real HTTP.

The app gets an empty database through ``PGBRIDGE_DSN`` (so its own start-up
migration is exercised) and is read with httpx and httpx-sse, as a browser
or an SDK would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from httpx_sse import ServerSentEvent, aconnect_sse

from pgbridge.migrate import head_revision
from tests.support.helpers import seq_of
from tests.support.http_server import free_port
from tests.support.postgres_server import DatabaseFactory
from tests.support.sql_helpers import connected

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(scope="module")
async def app_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    """An empty database: the app migrates it when it starts."""
    url = await databases.create_empty()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def app_url(app_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    log_path = tmp_path_factory.mktemp("agent_app") / "app.log"
    process, url = await launch(app_dsn, log_path)
    try:
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def launch(dsn: str, log_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    """``python -m examples.agent_app`` on *dsn*, answering; its output in *log_path*."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PGBRIDGE_DSN": dsn, "AGENT_APP_TOKEN_DELAY": "0.01", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "examples.agent_app",
            "--port",
            str(port),
            cwd=REPOSITORY,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        await _wait_until_ready(process, url, log_path)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, url


async def _wait_until_ready(process: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"the app exited:\n{_text(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/events/health")).status_code == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the app did not answer in time:\n{_text(log_path)}")
            await asyncio.sleep(0.1)


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


@pytest_asyncio.fixture
async def client(app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_url, timeout=20) as http:
        yield http


async def start_run(client: httpx.AsyncClient, tokens: int) -> tuple[str, str]:
    response = await client.post("/runs", json={"prompt": "why durable?", "tokens": tokens})
    assert response.status_code == 202, response.text
    body = response.json()
    return body["run_id"], body["stream_url"]


async def read_stream(
    client: httpx.AsyncClient, path: str, *, last_event_id: str | None = None, stop_after: int | None = None
) -> list[ServerSentEvent]:
    """The stream's frames until the server ends it (or the first *stop_after*, then hang up)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}

    async def read() -> list[ServerSentEvent]:
        frames: list[ServerSentEvent] = []
        async with aconnect_sse(client, "GET", path, headers=headers) as source:
            async for frame in source.aiter_sse():
                frames.append(frame)
                if stop_after is not None and len(frames) == stop_after:
                    break
        return frames

    return await asyncio.wait_for(read(), 30)


async def test_a_started_run_streams_its_tokens_in_order_then_its_end_event(
    client: httpx.AsyncClient,
) -> None:
    _, stream_url = await start_run(client, tokens=12)
    frames = await read_stream(client, stream_url)
    assert [f.event for f in frames] == ["metadata", *["token"] * 12, "end"]
    assert [f.json()["index"] for f in frames[1:-1]] == list(range(12))
    assert frames[-1].json() == {"tokens": 12}
    assert [seq_of(f.id) for f in frames] == list(range(1, 15))


async def test_a_reader_that_reconnects_with_last_event_id_midway_gets_exactly_the_remainder(
    client: httpx.AsyncClient,
) -> None:
    _, stream_url = await start_run(client, tokens=60)
    before = await read_stream(client, stream_url, stop_after=10)  # then the connection drops
    after = await read_stream(client, stream_url, last_event_id=before[-1].id)
    whole = await read_stream(client, stream_url)
    assert [f.id for f in before + after] == [f.id for f in whole]
    assert after[-1].event == "end"


async def test_cancelling_a_run_ends_its_stream_with_a_cancel_event(client: httpx.AsyncClient) -> None:
    run_id, stream_url = await start_run(client, tokens=10_000)
    await read_stream(client, stream_url, stop_after=3)
    assert (await client.post(f"/runs/{run_id}/cancel")).status_code == 202
    frames = await read_stream(client, stream_url)
    assert frames[-1].event == "cancel"


async def test_the_app_migrated_the_empty_database_it_was_given(app_url: str, app_dsn: str) -> None:
    async with connected(app_dsn) as conn:
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == head_revision()


async def test_ctrl_c_with_a_client_on_a_live_stream_shuts_the_app_down_cleanly(
    app_dsn: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "app.log"
    process, url = await launch(app_dsn, log_path)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            _, stream_url = await start_run(http, tokens=10_000)  # runs for minutes
            frames: list[ServerSentEvent] = []
            streaming = asyncio.Event()

            async def follow() -> None:
                async with aconnect_sse(http, "GET", stream_url) as source:
                    async for frame in source.aiter_sse():
                        frames.append(frame)
                        if len(frames) == 5:
                            streaming.set()

            reader = asyncio.ensure_future(follow())
            await asyncio.wait_for(streaming.wait(), 20)
            started = asyncio.get_running_loop().time()
            process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(process.wait(), 30)
            took = asyncio.get_running_loop().time() - started
            await asyncio.wait_for(reader, 5)  # the stream ended, without an error
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = _text(log_path)
    assert code == 0, log
    assert took < 3.0, (took, log)  # not uvicorn's 2 s grace period, then cancelled tasks
    for noise in ("Traceback", "Exception in ASGI application", "timeout graceful shutdown exceeded"):
        assert noise not in log, log
