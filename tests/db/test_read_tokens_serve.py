"""Read tokens through a real ``pgbridge serve --token-secret-file`` process: a token grants
reading until it expires and not after (open streams included), and no log line shows one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge, TokenKeyring
from pgbridge.tokens import issue_read_token
from tests.support.http_server import TEST_KEYS, ServerProcess, write_keys
from tests.support.postgres_server import DatabaseFactory

RING = TokenKeyring.parse(TEST_KEYS)


@pytest_asyncio.fixture(scope="module")
async def http_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(http_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("serve-tokens")
    process = ServerProcess(
        http_dsn,
        token="global-s3cret",
        extra_args=("--token-secret-file", str(write_keys(folder)), "--long-poll-timeout", "60"),
        log=folder / "log",
    )
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def publisher(http_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    async with PostgresStreamBridge(http_dsn) as bridge:
        yield bridge


def new_run() -> str:
    return f"live/{uuid.uuid4().hex[:8]}"


def anonymous(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=90))


async def test_an_open_stream_ends_when_its_token_expires_and_a_reconnect_is_refused(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    """The run goes on (no terminal event): without the token's end, this stream never ends."""
    run_id = new_run()
    first = await publisher.publish(run_id, "token", 0)
    token = issue_read_token(RING, run_id, 2)
    path = f"/runs/{quote(run_id, safe='')}/stream"
    async with anonymous(server) as http:
        async with http.stream("GET", path, params={"token": token}) as response:
            assert response.status_code == 200
            text = (await asyncio.wait_for(response.aread(), 60)).decode()
        resumed = await http.get(path, params={"token": token}, headers={"Last-Event-ID": first})
    assert f"id: {first}" in text
    assert resumed.status_code == 401 and resumed.json() == {"error": "invalid token"}
    assert (await publisher.run_info(run_id)).status == "active"  # type: ignore[union-attr]


async def test_a_long_poll_waiting_when_its_token_expires_is_answered_401(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    """The server's long-poll waits 60 s: a 204 would mean the token outlived its expiry."""
    run_id = new_run()
    await publisher.publish(run_id, "token", 0)
    async with anonymous(server) as http:
        response = await http.get(
            f"/v1/stream/{quote(run_id, safe='')}",
            params={"offset": "now", "live": "long-poll", "token": issue_read_token(RING, run_id, 2)},
        )
    assert response.status_code == 401 and response.json() == {"error": "invalid token"}


async def test_a_read_token_reads_its_run_in_the_header_or_the_query_and_nothing_else(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id = new_run()
    ids = [await publisher.publish(run_id, "token", 0), await publisher.publish_end(run_id)]
    token = issue_read_token(RING, run_id, 600)
    path = f"/runs/{quote(run_id, safe='')}/stream"
    async with anonymous(server) as http:
        by_query = await http.get(path, params={"token": token})
        by_header = await http.get(path, headers={"Authorization": f"Bearer {token}"})
        listing = await http.get("/runs", params={"token": token})
        other = await http.get(f"/runs/{quote(new_run(), safe='')}", params={"token": token})
        append = await http.post(
            f"/v1/stream/{quote(run_id, safe='')}",
            params={"token": token},
            headers={"Content-Type": "application/json"},
            content=b"[1]",
        )
    for response in (by_query, by_header):
        assert response.status_code == 200
        assert [line[4:] for line in response.text.splitlines() if line.startswith("id: ")] == ids
    assert (listing.status_code, other.status_code, append.status_code) == (403, 401, 403)


async def test_no_log_line_shows_a_read_token_or_a_secret(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id = new_run()
    await publisher.publish_end(run_id)
    token = issue_read_token(RING, run_id, 600)
    async with anonymous(server) as http:
        await http.get(f"/runs/{quote(run_id, safe='')}", params={"token": token})
        await http.get("/runs", params={"token": token})  # refused: logged all the same
        await http.get(f"/runs/{quote(run_id, safe='')}", headers={"Authorization": f"Bearer {token}"})
    await asyncio.sleep(0.5)  # the server writes unbuffered (PYTHONUNBUFFERED)
    assert server.log is not None
    log = server.log.read_text()
    assert f"GET /runs/{quote(run_id, safe='')}?token=*** HTTP/1.1" in log, log
    assert "GET /runs?token=*** HTTP/1.1" in log
    assert "read tokens: key 'k2' signs, 'k1' verifies" in log
    assert token not in log and token.rsplit(".", 1)[1] not in log
    for line in TEST_KEYS.splitlines():
        assert line.split(":", 1)[1] not in log


async def test_the_viewer_page_sends_no_referer(server: ServerProcess, tmp_path: Path) -> None:
    """Its URL holds a token: no link or request from it may carry that URL to another site."""
    async with anonymous(server) as http:
        page = await http.get("/runs/r/view", params={"token": issue_read_token(RING, "r", 60)})
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
