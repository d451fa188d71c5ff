"""HTTP/SSE (``pgbridge serve``) against a real server process and a real PostgreSQL,
read by clients nobody here wrote: httpx with httpx-sse, and the LangGraph SDK."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
import pytest_asyncio
from httpx_sse import ServerSentEvent, aconnect_sse
from langgraph_sdk import get_client

import pgbridge.store.events as events_module
from pgbridge import PostgresStreamBridge
from pgbridge.http.app import create_app
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory
from tests.support.sql_helpers import evict_prefix


@pytest_asyncio.fixture(scope="module")
async def http_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    """One database for this module's server; tests keep apart by run id."""
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(http_dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(http_dsn)
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def publisher(http_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    async with PostgresStreamBridge(http_dsn) as bridge:
        yield bridge


@pytest_asyncio.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as http:
        yield http


def new_run() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


async def published_run(
    publisher: PostgresStreamBridge, count: int = 3, *, end: bool = True
) -> tuple[str, list[str]]:
    run_id = new_run()
    ids = [
        await publisher.publish(run_id, "token", {"i": i, "text": f"line {i}\nnext"}) for i in range(count)
    ]
    if end:
        ids.append(await publisher.publish_end(run_id))
    return run_id, ids


async def sse(client: httpx.AsyncClient, path: str, **kwargs: object) -> list[ServerSentEvent]:
    """Every frame of a stream until the server ends it."""

    async def read() -> list[ServerSentEvent]:
        async with aconnect_sse(client, "GET", path, **kwargs) as source:  # type: ignore[arg-type]
            return [frame async for frame in source.aiter_sse()]

    return await asyncio.wait_for(read(), 20)


async def raw_lines(client: httpx.AsyncClient, path: str, count: int) -> list[str]:
    async def read() -> list[str]:
        lines: list[str] = []
        async with client.stream("GET", path) as response:
            async for line in response.aiter_lines():
                lines.append(line)
                if len(lines) >= count:
                    break
        return lines

    return await asyncio.wait_for(read(), 20)


# -- streams -------------------------------------------------------------------------


async def test_a_finished_run_is_replayed_whole_then_the_response_ends(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher)
    frames = await sse(client, f"/runs/{run_id}/stream")
    assert [(f.id, f.event) for f in frames] == [*((i, "token") for i in ids[:-1]), (ids[-1], "end")]
    assert frames[0].json() == {"i": 0, "text": "line 0\nnext"}
    assert frames[-1].json() is None


async def test_a_stream_resumes_after_the_last_event_id_header(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 5)
    frames = await sse(client, f"/runs/{run_id}/stream", headers={"Last-Event-ID": ids[2]})
    assert [f.id for f in frames] == ids[3:]


async def test_a_stream_resumes_after_the_last_event_id_query_parameter(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 5)
    frames = await sse(client, f"/runs/{run_id}/stream", params={"last_event_id": ids[1]})
    assert [f.id for f in frames] == ids[2:]


async def test_a_stream_starts_with_a_retry_hint(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, _ = await published_run(publisher)
    assert (await raw_lines(client, f"/runs/{run_id}/stream", 1)) == ["retry: 200"]


async def test_a_silent_run_gets_heartbeat_comments(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, _ = await published_run(publisher, 1, end=False)
    lines = await raw_lines(client, f"/runs/{run_id}/stream", 12)
    assert ": heartbeat" in lines[5:]


async def test_a_run_that_does_not_exist_yet_is_waited_for(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id = new_run()
    reading = asyncio.ensure_future(sse(client, f"/runs/{run_id}/stream"))
    await asyncio.sleep(0.5)
    assert not reading.done()
    sent = [await publisher.publish(run_id, "token", 1), await publisher.publish_end(run_id)]
    assert [f.id for f in await reading] == sent


async def test_resuming_after_the_terminal_event_answers_204_so_eventsource_stops(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher)
    response = await client.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": ids[-1]})
    assert response.status_code == 204


@pytest.mark.parametrize("cursor", ["not-an-id", "1-999", "0"])
async def test_invalid_and_unknown_cursors_replay_from_the_first_event(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge, cursor: str
) -> None:
    run_id, ids = await published_run(publisher)
    frames = await sse(client, f"/runs/{run_id}/stream", headers={"Last-Event-ID": cursor})
    assert [f.id for f in frames] == ids


async def test_an_evicted_cursor_gets_a_gap_frame_without_an_id_then_the_rest(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge, http_dsn: str
) -> None:
    run_id, ids = await published_run(publisher, 6)
    await evict_prefix(http_dsn, run_id, keep_from_seq=4)
    frames = await sse(client, f"/runs/{run_id}/stream", headers={"Last-Event-ID": ids[0]})
    gap, *rest = frames
    assert gap.event == "gap" and gap.id == ""  # no id: line, so the client's cursor stays put
    assert gap.json() == {
        "requested_event_id": ids[0],
        "gap_count": 2,
        "earliest_available_event_id": ids[3],
        "latest_available_event_id": ids[-1],
    }
    assert [f.id for f in rest] == ids[3:]


async def test_gap_frames_carry_no_id_line(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge, http_dsn: str
) -> None:
    run_id, ids = await published_run(publisher, 4)
    await evict_prefix(http_dsn, run_id, keep_from_seq=3)
    lines = await raw_lines(client, f"/runs/{run_id}/stream?last_event_id={ids[0]}", 4)
    assert lines[:3] == ["retry: 200", "event: gap", lines[2]] and lines[2].startswith("data: {")


async def test_envelope_mode_sends_every_event_unnamed_with_its_name_in_the_data(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 1)
    frames = await sse(client, f"/runs/{run_id}/stream", params={"envelope": "1"})
    assert [(f.event, f.id, f.json()) for f in frames] == [
        ("message", ids[0], {"event": "token", "data": {"i": 0, "text": "line 0\nnext"}}),
        ("message", ids[1], {"event": "end", "data": None}),
    ]


async def test_a_bad_run_id_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/runs/{'x' * 300}/stream")
    assert response.status_code == 400
    assert "run_id" in response.json()["error"]


async def test_a_client_that_disconnects_releases_its_subscription_and_the_run_goes_on(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 2, end=False)
    async with aconnect_sse(client, "GET", f"/runs/{run_id}/stream") as source:
        frames = source.aiter_sse()
        assert (await anext(frames)).id == ids[0]
        status = (await client.get(f"/runs/{run_id}")).json()
        assert status["local_subscribers"] == 1

    async def released() -> bool:
        return (await client.get(f"/runs/{run_id}")).json()["local_subscribers"] == 0

    for _ in range(100):
        if await released():
            break
        await asyncio.sleep(0.05)
    assert await released()
    later = await publisher.publish(run_id, "token", "after the disconnect")
    status = (await client.get(f"/runs/{run_id}")).json()
    assert (status["status"], status["last_event_id"]) == ("active", later)


# -- status ---------------------------------------------------------------------------


async def test_run_status_reports_counts_ids_and_times(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 2)
    status = (await client.get(f"/runs/{run_id}")).json()
    assert status["status"] == "ended"
    assert (status["events_published"], status["events_retained"], status["events_deleted"]) == (3, 3, 0)
    assert (status["first_event_id"], status["last_event_id"], status["terminal_event_id"]) == (
        ids[0],
        ids[-1],
        ids[-1],
    )
    assert status["created_at"] and status["ended_at"]


async def test_run_status_of_a_missing_run_is_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/runs/{new_run()}")).status_code == 404


async def test_runs_lists_recent_runs_filtered_by_status(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    open_run, _ = await published_run(publisher, 1, end=False)
    ended_run, _ = await published_run(publisher, 1)
    listed = (await client.get("/runs", params={"limit": 1000})).json()["runs"]
    assert {open_run, ended_run} <= {run["run_id"] for run in listed}
    active = (await client.get("/runs", params={"status": "active", "limit": 1000})).json()["runs"]
    assert open_run in {r["run_id"] for r in active} and ended_run not in {r["run_id"] for r in active}


@pytest.mark.parametrize("query", [{"status": "finished"}, {"limit": "0"}, {"limit": "many"}])
async def test_runs_with_a_bad_filter_is_a_400(client: httpx.AsyncClient, query: dict[str, str]) -> None:
    assert (await client.get("/runs", params=query)).status_code == 400


# -- auth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/health", "/runs", "/runs/r", "/runs/r/stream", "/runs/r/view", "/threads/t/runs/r/stream"]
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-token"}])
async def test_every_endpoint_answers_401_without_the_token(
    server: ServerProcess, path: str, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
        response = await anonymous.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_token_may_come_as_a_query_parameter_for_eventsource(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 1)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
        frames = await sse(anonymous, f"/runs/{run_id}/stream", params={"access_token": server.token})
    assert [f.id for f in frames] == ids


# -- the LangGraph SDK ----------------------------------------------------------------------


async def test_langgraph_sdk_join_stream_reads_a_whole_run(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 3)
    client = get_client(url=server.url, headers=server.auth)
    parts = [part async for part in client.runs.join_stream("thread-1", run_id)]
    assert [(p.id, p.event) for p in parts] == [*((i, "token") for i in ids[:-1]), (ids[-1], "end")]
    assert parts[1].data == {"i": 1, "text": "line 1\nnext"}


async def test_langgraph_sdk_join_stream_resumes_after_last_event_id(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id, ids = await published_run(publisher, 4)
    client = get_client(url=server.url, headers=server.auth)
    parts = [p async for p in client.runs.join_stream("thread-1", run_id, last_event_id=ids[1])]
    assert [p.id for p in parts] == ids[2:]


async def test_langgraph_sdk_follows_a_live_run_to_its_end(
    server: ServerProcess, publisher: PostgresStreamBridge
) -> None:
    run_id, first = await published_run(publisher, 1, end=False)
    client = get_client(url=server.url, headers=server.auth)

    async def join() -> list[str | None]:
        return [p.id async for p in client.runs.join_stream("thread-1", run_id)]

    joined = asyncio.ensure_future(join())
    await asyncio.sleep(0.3)
    rest = [await publisher.publish(run_id, "token", 2), await publisher.publish_end(run_id)]
    assert await asyncio.wait_for(joined, 20) == first + rest


async def test_the_langgraph_run_endpoint_maps_statuses(
    client: httpx.AsyncClient, publisher: PostgresStreamBridge
) -> None:
    open_run, _ = await published_run(publisher, 1, end=False)
    ended_run, _ = await published_run(publisher, 1)
    assert (await client.get(f"/threads/t/runs/{open_run}")).json()["status"] == "running"
    assert (await client.get(f"/threads/t/runs/{ended_run}")).json()["status"] == "success"


# -- CORS -------------------------------------------------------------------------------------


async def test_cors_lets_a_configured_origin_read_streams(http_dsn: str) -> None:
    server = ServerProcess(http_dsn, extra_args=("--cors-origin", "https://app.example"))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser_like:
            preflight = await browser_like.options(
                "/runs/r/stream",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization,last-event-id",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            other = await browser_like.get(
                "/health", headers={**server.auth, "Origin": "https://elsewhere.example"}
            )
            assert "access-control-allow-origin" not in other.headers
    finally:
        await server.stop()


# -- mounted in an existing app -------------------------------------------------------------


async def test_the_routes_mount_under_a_prefix_in_an_existing_app(bridge: PostgresStreamBridge) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from pgbridge.http.app import sse_routes

    app = Starlette(routes=[Mount("/agent", routes=sse_routes(bridge))])
    sent = await bridge.publish("mounted", "token", 1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        status = (await http.get("/agent/runs/mounted")).json()
        view = await http.get("/agent/runs/mounted/view")
    assert status["last_event_id"] == sent
    assert view.status_code == 200 and "EventSource" in view.text


async def test_the_stream_sends_each_event_s_stored_json_text_without_decoding_it(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SSE route passes the stored JSON text through: never decoded, never encoded again."""
    async with PostgresStreamBridge(dsn) as bridge:
        run_id = new_run()
        await bridge.publish(run_id, "token", {"text": "é\u2028\n", "n": 1.5, "big": 2**70})
        await bridge.publish_end(run_id)

        def refuse(text: str) -> object:
            raise AssertionError(f"decoded {text!r}")

        # Every decoding of stored data goes through one of these.
        monkeypatch.setattr(
            events_module, "orjson", SimpleNamespace(loads=refuse, JSONDecodeError=ValueError)
        )
        monkeypatch.setattr(events_module, "decode_data", refuse)
        app = create_app(bridge, manage_bridge=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
            plain = (await http.get(f"/runs/{run_id}/stream")).text
            envelope = (await http.get(f"/runs/{run_id}/stream", params={"envelope": "1"})).text
    stored = '{"text":"é\u2028\\n","n":1.5,"big":1180591620717411303424}'
    assert f"\nevent: token\ndata: {stored}\n\n" in plain
    assert f'\ndata: {{"event":"token","data":{stored}}}\n\n' in envelope
