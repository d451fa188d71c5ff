"""Durable Streams over HTTP: bad input answered with the protocol's status codes and
nothing stored, and runs and streams being one thing (bridge <-> protocol)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from pgbridge import END_SENTINEL, PostgresStreamBridge, Producer, ProducerFencedError, StreamTerminatedError
from pgbridge.durable_streams.http import DurableStreamSettings
from pgbridge.http.app import create_app
from tests.support.helpers import collect, take
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory
from tests.support.sql_helpers import deletion_rows, run_head

MAX_APPEND = 4096


@pytest_asyncio.fixture(scope="module")
async def http_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(http_dsn: str) -> AsyncIterator[ServerProcess]:
    args = ("--long-poll-timeout", "3", "--max-append-bytes", str(MAX_APPEND))
    process = ServerProcess(http_dsn, extra_args=args)
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def bridge(http_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    async with PostgresStreamBridge(http_dsn) as started:
        yield started


@pytest_asyncio.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as http:
        yield http


def new_path() -> str:
    return f"/v1/stream/t-{uuid.uuid4().hex[:10]}"


async def make_stream(
    client: httpx.AsyncClient, content_type: str = "application/json", body: bytes = b""
) -> str:
    path = new_path()
    response = await client.put(path, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 201
    return path


async def stored(client: httpx.AsyncClient, path: str) -> tuple[str, bytes]:
    """The stream's tail offset and its whole content."""
    head = await client.head(path)
    body = await client.get(path, params={"offset": "-1"})
    return head.headers["Stream-Next-Offset"], body.content


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize("offset", ["abc", "12", "0000000000000001,2", "-2", "", "0" * 15 + "x", "nowx"])
async def test_malformed_offsets_are_answered_400(client: httpx.AsyncClient, offset: str) -> None:
    path = await make_stream(client, body=b'{"a":1}')
    for live in (None, "long-poll", "sse"):
        params = {"offset": offset} | ({"live": live} if live else {})
        response = await client.get(path, params=params)
        assert response.status_code == 400, (offset, live)


async def test_an_offset_past_the_tail_is_answered_400(client: httpx.AsyncClient) -> None:
    path = await make_stream(client, body=b'{"a":1}')
    assert (await client.get(path, params={"offset": "0000000000000009"})).status_code == 400


async def test_an_append_with_another_content_type_is_answered_409_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    path = await make_stream(client, body=b'{"a":1}')
    before = await stored(client, path)
    response = await client.post(path, content=b"plain", headers={"Content-Type": "text/plain"})
    assert response.status_code == 409
    assert await stored(client, path) == before


async def test_an_append_without_content_type_or_body_is_answered_400_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    path = await make_stream(client, "text/plain", b"hello")
    before = await stored(client, path)
    assert (await client.post(path, content=b"x", headers={"Content-Type": ""})).status_code == 400
    assert (await client.post(path, content=b"", headers={"Content-Type": "text/plain"})).status_code == 400
    assert await stored(client, path) == before


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"NaN", b'{"a":1}{"b":2}'])
async def test_invalid_json_appends_are_answered_400_and_store_nothing(
    client: httpx.AsyncClient, body: bytes
) -> None:
    path = await make_stream(client, body=b'{"a":1}')
    before = await stored(client, path)
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert await stored(client, path) == before


async def test_an_oversized_body_is_answered_413_and_stores_nothing(client: httpx.AsyncClient) -> None:
    path = await make_stream(client, "application/octet-stream", b"\x00\x01")
    before = await stored(client, path)
    big = bytes(MAX_APPEND + 1)
    response = await client.post(path, content=big, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(3):
            yield bytes(MAX_APPEND // 2)

    response = await client.post(
        path, content=chunked(), headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 413
    assert await stored(client, path) == before


async def test_a_stale_producer_epoch_is_answered_403_and_stores_nothing(client: httpx.AsyncClient) -> None:
    path = await make_stream(client, "text/plain")

    def producer(epoch: int, seq: int) -> dict[str, str]:
        return {
            "Content-Type": "text/plain",
            "Producer-Id": "worker",
            "Producer-Epoch": str(epoch),
            "Producer-Seq": str(seq),
        }

    assert (await client.post(path, content=b"a", headers=producer(1, 0))).status_code == 200
    before = await stored(client, path)
    response = await client.post(path, content=b"zombie", headers=producer(0, 1))
    assert response.status_code == 403
    assert response.headers["Producer-Epoch"] == "1"
    assert (await client.post(path, content=b"gap", headers=producer(1, 5))).status_code == 409
    assert (await client.post(path, content=b"a", headers=producer(1, 0))).status_code == 204  # a retry
    assert await stored(client, path) == before


async def test_incomplete_or_malformed_producer_headers_are_answered_400(client: httpx.AsyncClient) -> None:
    path = await make_stream(client, "text/plain")
    before = await stored(client, path)
    for headers in (
        {"Producer-Id": "p"},
        {"Producer-Id": "p", "Producer-Epoch": "0"},
        {"Producer-Id": "", "Producer-Epoch": "0", "Producer-Seq": "0"},
        {"Producer-Id": "p", "Producer-Epoch": "-1", "Producer-Seq": "0"},
        {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "1.5"},
        {"Producer-Id": "p", "Producer-Epoch": str(2**53), "Producer-Seq": "0"},
    ):
        response = await client.post(path, content=b"x", headers={"Content-Type": "text/plain", **headers})
        assert response.status_code == 400, headers
    assert await stored(client, path) == before


async def test_appends_to_a_missing_stream_are_404_and_create_nothing(client: httpx.AsyncClient) -> None:
    path = new_path()
    response = await client.post(path, content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 404
    assert (await client.head(path)).status_code == 404


# -- one storage model: runs and streams ---------------------------------------------


async def test_a_run_published_with_the_bridge_reads_as_a_json_stream_of_event_envelopes(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    run_id = f"team/{uuid.uuid4().hex[:8]}"
    first = await bridge.publish(run_id, "token", {"text": "hi"})
    end = await bridge.publish_end(run_id)
    response = await client.get(f"/v1/stream/{run_id}", params={"offset": "-1"})
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == [
        {"id": first, "event": "token", "data": {"text": "hi"}},
        {"id": end, "event": "end", "data": None},
    ]
    assert response.headers["Stream-Closed"] == "true"  # a terminal event closes the stream


async def test_a_json_stream_appended_over_http_reads_with_subscribe_and_ends_when_closed(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    path = await make_stream(client, body=b'{"n":1}')
    run_id = path.removeprefix("/v1/stream/")
    events = bridge.subscribe(run_id, heartbeat_interval=0.2)
    (first,) = await take(events, 1)
    assert (first.event, first.data) == ("message", {"n": 1})
    assert (
        await client.post(path, content=b'[{"n":2},{"n":3}]', headers={"Content-Type": "application/json"})
    ).status_code == 204
    assert [e.data for e in await take(events, 2)] == [{"n": 2}, {"n": 3}]
    close = await client.post(path, headers={"Stream-Closed": "true"})
    assert close.status_code == 204
    assert await collect(events) == [END_SENTINEL]  # closed: the subscription ends there
    with pytest.raises(StreamTerminatedError):
        await bridge.publish(run_id, "late", {})


async def test_a_producer_publish_retried_from_another_bridge_is_stored_once(
    http_dsn: str, bridge: PostgresStreamBridge
) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    producer = Producer("worker-1", epoch=0, seq=0)
    first = await bridge.publish(run_id, "step", {"i": 0}, producer=producer)
    async with PostgresStreamBridge(http_dsn) as other:  # the retry reaches another process
        again = await other.publish(run_id, "step", {"i": 0}, producer=producer)
        second = await other.publish(run_id, "step", {"i": 1}, producer=Producer("worker-1", 0, 1))
    assert again == first
    info = await bridge.run_info(run_id)
    assert info is not None and info.events_published == 2
    assert second.endswith("-2")
    await bridge.publish(run_id, "step", {"i": 2}, producer=Producer("worker-1", epoch=1, seq=0))
    with pytest.raises(ProducerFencedError):
        await bridge.publish(run_id, "step", {"i": 3}, producer=Producer("worker-1", epoch=0, seq=2))


async def test_a_bridge_publish_and_an_http_append_share_one_order(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    path = await make_stream(client)
    run_id = path.removeprefix("/v1/stream/")
    writes = [
        client.post(path, content=f'{{"http":{i}}}'.encode(), headers={"Content-Type": "application/json"})
        for i in range(5)
    ]
    publishes = [bridge.publish(run_id, "message", {"bridge": i}) for i in range(5)]
    await asyncio.gather(*writes, *publishes)
    over_http = (await client.get(path, params={"offset": "-1"})).json()
    subscribed = [e.data for e in await take(bridge.subscribe(run_id), 10)]
    assert over_http == subscribed
    assert len(over_http) == 10


# -- methods ----------------------------------------------------------------------

STREAM_METHODS = {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"}


async def test_options_is_answered_without_looking_at_the_stream(client: httpx.AsyncClient) -> None:
    response = await client.options(new_path(), headers={"Access-Control-Request-Method": "PUT"})
    assert response.status_code == 204
    assert set(response.headers["Allow"].split(", ")) == STREAM_METHODS
    # No CORS unless the server is given --cors-origin (tests/db/test_http_serve.py).
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


async def test_another_method_is_answered_405_with_the_allowed_ones(client: httpx.AsyncClient) -> None:
    path = await make_stream(client, body=b'{"a":1}')
    before = await stored(client, path)
    response = await client.patch(path, content=b'{"b":2}', headers={"Content-Type": "application/json"})
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == STREAM_METHODS
    assert await stored(client, path) == before


async def test_an_error_is_json_with_the_protocols_headers(client: httpx.AsyncClient) -> None:
    path = new_path()
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.json() == {"error": f"no stream {path.removeprefix('/v1/stream/')!r}"}


# -- deleting: a run published through the bridge is audit history -------------------


async def publish_run(bridge: PostgresStreamBridge, count: int) -> str:
    run_id = f"published-{uuid.uuid4().hex[:10]}"
    for i in range(count):
        await bridge.publish(run_id, "token", {"n": i})
    return run_id


async def test_deleting_a_published_run_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge, http_dsn: str
) -> None:
    run_id = await publish_run(bridge, 3)
    path = f"/v1/stream/{run_id}"
    before = await stored(client, path)
    response = await client.delete(path)
    assert response.status_code == 403
    reason = response.json()["error"]
    assert "published through the bridge" in reason and "audit history" in reason
    assert "--allow-run-deletion" in reason
    assert await stored(client, path) == before
    report = await bridge.verify(run_id)
    assert (report.ok, report.events_checked) == (True, 3)
    assert await deletion_rows(http_dsn, run_id) == []


async def test_deleting_a_durable_streams_stream_leaves_a_record_verify_reports(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge, http_dsn: str
) -> None:
    path = await make_stream(client, body=b'[{"a":1},{"b":2}]')
    run_id = path.removeprefix("/v1/stream/")
    last_hash = (await run_head(http_dsn, run_id))["last_hash"]  # type: ignore[index]
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).status_code == 404
    report = await bridge.verify(run_id)
    assert (report.ok, report.verdict) == (False, "deleted")
    assert report.deletion is not None
    assert (report.deletion.via, report.deletion.last_seq, report.deletion.events_deleted) == ("http", 2, 2)
    assert report.deletion.last_hash == last_hash
    [record] = await deletion_rows(http_dsn, run_id)
    assert (record["via"], record["last_seq"], record["last_hash"]) == ("http", 2, last_hash)


async def test_a_server_started_with_allow_run_deletion_deletes_a_published_run_and_records_it(
    http_dsn: str, bridge: PostgresStreamBridge
) -> None:
    run_id = await publish_run(bridge, 3)
    last_hash = (await run_head(http_dsn, run_id))["last_hash"]  # type: ignore[index]
    process = ServerProcess(http_dsn, extra_args=("--allow-run-deletion",))
    await process.start()
    try:
        async with process.client() as http:
            assert (await http.delete(f"/v1/stream/{run_id}")).status_code == 204
    finally:
        await process.stop()
    report = await bridge.verify(run_id)
    assert report.verdict == "deleted" and report.deletion is not None
    assert (report.deletion.via, report.deletion.last_seq, report.deletion.events_deleted) == ("http", 3, 3)
    assert report.deletion.last_hash == last_hash and report.deletion.status == "active"


async def in_process(bridge: PostgresStreamBridge, settings: DurableStreamSettings) -> httpx.AsyncClient:
    app = create_app(bridge, manage_bridge=False, stream_settings=settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def test_the_python_api_deletes_published_runs_only_when_told_to(
    bridge: PostgresStreamBridge, http_dsn: str
) -> None:
    run_id = await publish_run(bridge, 2)
    async with await in_process(bridge, DurableStreamSettings()) as http:
        refused = await http.delete(f"/v1/stream/{run_id}")
    assert refused.status_code == 403 and "allow_run_deletion" in refused.json()["error"]
    assert (await bridge.verify(run_id)).ok
    async with await in_process(bridge, DurableStreamSettings(allow_run_deletion=True)) as http:
        assert (await http.delete(f"/v1/stream/{run_id}")).status_code == 204
    report = await bridge.verify(run_id)
    assert report.verdict == "deleted" and report.deletion is not None
    assert (report.deletion.via, report.deletion.last_seq) == ("http", 2)
