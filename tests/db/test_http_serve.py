"""``pgbridge serve`` as a newcomer meets it, through a real server process: no secret in
its log, no CORS unless asked for (on both surfaces alike), an index page and a runs
page, a 400 for every bad query parameter, and ``?wait=0`` on a stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from importlib.metadata import version

import httpx
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory

APP_ORIGIN = "https://app.example"


@pytest_asyncio.fixture(scope="module")
async def http_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(http_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    """A server with a token and no CORS option, its output in ``server.log``."""
    process = ServerProcess(http_dsn, token="s3cret-token", log=tmp_path_factory.mktemp("serve") / "log")
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def cors_server(http_dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(http_dsn, extra_args=("--cors-origin", APP_ORIGIN))
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def publisher(http_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    async with PostgresStreamBridge(http_dsn) as bridge:
        yield bridge


def new_id() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


# -- credentials in logs -------------------------------------------------------------


async def test_the_access_log_shows_no_credential(server: ServerProcess) -> None:
    assert server.log is not None
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        ok = await http.get(f"/runs?limit=1&access_token={server.token}")
        wrong = await http.get("/runs?access_token=wr0ng-s3cret&x=1")
        other = await http.get("/health?token=t0ken-s3cret")
    assert (ok.status_code, wrong.status_code, other.status_code) == (200, 401, 401)
    await asyncio.sleep(0.5)  # the server writes unbuffered (PYTHONUNBUFFERED)
    log = server.log.read_text()
    assert "GET /runs?limit=1&access_token=*** HTTP/1.1" in log, log
    assert "GET /runs?access_token=***&x=1 HTTP/1.1" in log
    assert "GET /health?token=*** HTTP/1.1" in log
    for secret in (server.token, "wr0ng-s3cret", "t0ken-s3cret"):
        assert secret not in log


# -- CORS ----------------------------------------------------------------------------


async def test_no_surface_answers_cors_unless_an_origin_is_configured(server: ServerProcess) -> None:
    stream = f"/v1/stream/{new_id()}"
    origin = {"Origin": "https://evil.example"}
    async with server.client() as http:
        created = await http.put(stream, headers={**origin, "Content-Type": "application/json"})
        read = await http.get(stream, params={"offset": "-1"}, headers=origin)
        runs = await http.get("/runs", headers=origin)
        preflight = await http.options(stream, headers={**origin, "Access-Control-Request-Method": "PUT"})
    assert created.status_code == 201 and read.status_code == 200 and runs.status_code == 200
    for response in (created, read, runs, preflight):
        assert cors_headers(response) == {}, (response.request.url, response.headers)
    # A plain OPTIONS is still answered, with the methods the stream's URL allows.
    assert preflight.status_code == 204
    assert set(preflight.headers["Allow"].split(", ")) == {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"}


async def test_a_configured_origin_gets_cors_on_both_surfaces_alike(cors_server: ServerProcess) -> None:
    stream = f"/v1/stream/{new_id()}"
    async with cors_server.client() as http:
        assert (await http.put(stream, headers={"Content-Type": "application/json"})).status_code == 201
    async with httpx.AsyncClient(base_url=cors_server.url, timeout=10) as browser:
        preflights = [
            await browser.options(
                path,
                headers={
                    "Origin": APP_ORIGIN,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": headers,
                },
            )
            for path, method, headers in (
                (stream, "POST", "authorization,content-type,producer-id,producer-epoch,producer-seq"),
                (stream, "GET", "if-none-match"),
                ("/runs/r/stream", "GET", "authorization,last-event-id"),
            )
        ]
        auth = {**cors_server.auth, "Origin": APP_ORIGIN}
        reads = [
            await browser.get(stream, params={"offset": "-1"}, headers=auth),
            await browser.get("/runs", headers=auth),
        ]
        elsewhere = [
            await browser.get(
                stream, params={"offset": "-1"}, headers={**auth, "Origin": "https://x.example"}
            ),
            await browser.get("/runs", headers={**auth, "Origin": "https://x.example"}),
        ]
    for response in preflights:
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "PUT" in preflights[0].headers["access-control-allow-methods"]
    for response in reads:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "Stream-Next-Offset" in reads[0].headers["access-control-expose-headers"]
    for response in elsewhere:
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


# -- the index page, the runs page -----------------------------------------------------


async def test_the_root_is_an_index_page_with_the_version_and_links(server: ServerProcess) -> None:
    async with server.client() as http:
        index = await http.get("/")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
        refused = await anonymous.get("/")
        with_query = await anonymous.get("/", params={"access_token": server.token})
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert f"pgbridge {version('pgbridge')}" in index.text
    assert 'href="/ui/runs"' in index.text
    assert "/view" in index.text  # how to open a run's viewer
    assert refused.status_code == 401  # the same auth as every page
    # Opened with ?access_token= (as the viewer is), its links carry the token on.
    assert with_query.status_code == 200
    assert f'href="/ui/runs?access_token={server.token}"' in with_query.text


async def test_the_runs_page_is_html_behind_the_same_auth_as_the_viewer(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
        refused = await anonymous.get("/ui/runs")
        page = await anonymous.get("/ui/runs", params={"access_token": server.token})
    assert refused.status_code == 401
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<table" in page.text and "/view" in page.text


# -- bad query parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/runs?limit=abc", "limit must be a whole number from 1 to"),
        ("/runs?limit=0", "limit must be a whole number from 1 to"),
        ("/runs?limit=", "limit must be a whole number from 1 to"),
        ("/runs?status=happy", "status must be one of"),
        ("/runs/r/stream?envelope=maybe", "envelope must be one of"),
        ("/runs/r/stream?wait=later", "wait must be one of"),
        ("/threads/t/runs/r/stream?wait=later", "wait must be one of"),
    ],
)
async def test_a_bad_query_parameter_is_answered_400_with_a_clear_message(
    server: ServerProcess, path: str, message: str
) -> None:
    async with server.client() as http:
        response = await http.get(path)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error and "invalid literal" not in error


# -- ?wait=0 ---------------------------------------------------------------------------


async def test_wait_0_answers_404_for_a_run_that_does_not_exist(server: ServerProcess) -> None:
    async with server.client() as http:
        for path in (f"/runs/{new_id()}/stream", f"/threads/t/runs/{new_id()}/stream"):
            response = await http.get(path, params={"wait": "0"})
            assert response.status_code == 404
            assert response.json()["error"].startswith("no run ")


async def test_wait_0_streams_a_run_that_exists(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id = new_id()
    first = await publisher.publish(run_id, "token", 1)
    end = await publisher.publish_end(run_id)
    async with server.client() as http:
        response = await http.get(f"/runs/{run_id}/stream", params={"wait": "0"})
    assert response.status_code == 200
    ids = [line.removeprefix("id: ") for line in response.text.splitlines() if line.startswith("id: ")]
    assert ids == [first, end]


async def test_by_default_a_stream_waits_for_a_run_not_published_yet(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id = new_id()
    async with server.client() as http, http.stream("GET", f"/runs/{run_id}/stream") as response:
        assert response.status_code == 200  # docs/behaviour.md §6: a reader may come first
        await publisher.publish_end(run_id)
        assert "event: end" in (await response.aread()).decode()
