"""Durable Streams forks (PROTOCOL.md 4.2) over HTTP, against a real PostgreSQL.

A fork is a run that reads its source's events up to the fork point and then
its own (revision 0007): these tests check reads across the fork point,
appends that leave the source alone, forks of forks, refused forks storing
nothing, soft deletion and its cascade, retention leaving a source alone,
the fork's own hash chain, and a fork read after a server restart; and that
``bridge.subscribe`` on a fork yields the same stitched view as a read over
HTTP, resumes after any of its IDs, and resolves cursors into the inherited
part like any run's (evicted, unknown, gap marker).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from pgbridge import (
    END_SENTINEL,
    GAP_EVENT,
    PostgresStreamBridge,
    ResumeResult,
    RetentionPolicy,
    StreamEvent,
)
from pgbridge.durable_streams.offsets import parse_offset
from tests.support.helpers import collect, take
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory
from tests.support.sql_helpers import stream_row

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}


@pytest_asyncio.fixture(scope="module")
async def fork_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(fork_dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(fork_dsn, extra_args=("--long-poll-timeout", "2"))
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(scope="module")
async def bridge(fork_dsn: str) -> AsyncIterator[PostgresStreamBridge]:
    """A bridge in this process: the HTTP server is another, so live events come by NOTIFY."""
    async with PostgresStreamBridge(fork_dsn, poll_interval=0.5) as started:
        yield started


@pytest_asyncio.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as http:
        yield http


def new_path(tag: str = "s") -> str:
    return f"/v1/stream/{tag}-{uuid.uuid4().hex[:10]}"


def run_of(path: str) -> str:
    return path.removeprefix("/v1/stream/")


async def make(
    client: httpx.AsyncClient, *bodies: bytes, headers: dict[str, str] = TEXT
) -> tuple[str, list[str]]:
    """A stream with one message per body; its path and the offset after each message."""
    path = new_path()
    first = await client.put(path, content=bodies[0] if bodies else b"", headers=headers)
    assert first.status_code == 201
    offsets = [first.headers["Stream-Next-Offset"]] if bodies else []
    for body in bodies[1:]:
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 204
        offsets.append(response.headers["Stream-Next-Offset"])
    return path, offsets


async def fork(
    client: httpx.AsyncClient, source: str, offset: str | None = None, **headers: str
) -> tuple[str, httpx.Response]:
    path = new_path("fork")
    sent = {"Stream-Forked-From": source, **headers}
    if offset is not None:
        sent["Stream-Fork-Offset"] = offset
    return path, await client.put(path, headers=sent)


async def body(client: httpx.AsyncClient, path: str, offset: str = "-1") -> bytes:
    response = await client.get(path, params={"offset": offset})
    assert response.status_code == 200, response.text
    return response.content


run_row = stream_row


# -- reads across the fork point ---------------------------------------------------


async def test_a_fork_at_an_offset_reads_the_source_up_to_it_then_its_own_messages(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, offsets = await make(client, b"A", b"B", b"C")
    path, created = await fork(client, source, offsets[1])
    assert created.status_code == 201
    assert created.headers["Stream-Next-Offset"] == offsets[1]  # the same offset space
    assert await body(client, path) == b"AB"
    appended = await client.post(path, content=b"x", headers=TEXT)
    assert appended.status_code == 204
    own = appended.headers["Stream-Next-Offset"]
    assert own > offsets[1]
    assert await body(client, path) == b"ABx"
    assert await body(client, path, offsets[0]) == b"Bx"  # across the fork point
    assert await body(client, path, offsets[1]) == b"x"
    tail = await client.get(path, params={"offset": own})
    assert tail.content == b"" and tail.headers["Stream-Up-To-Date"] == "true"
    # No event was copied: the fork's run holds only its own.
    row = await run_row(fork_dsn, run_of(path))
    assert row is not None and row["events"] == 1 and row["fork_seq"] == parse_offset(offsets[1]).seq


async def test_appending_to_a_fork_leaves_the_source_alone_and_the_source_moves_on_alone(
    client: httpx.AsyncClient,
) -> None:
    source, _ = await make(client, b"one")
    path, created = await fork(client, source)
    assert created.status_code == 201
    assert (await client.post(path, content=b"-fork", headers=TEXT)).status_code == 204
    assert (await client.post(source, content=b"-source", headers=TEXT)).status_code == 204
    assert await body(client, source) == b"one-source"
    assert await body(client, path) == b"one-fork"
    assert (await client.post(path, headers={"Stream-Closed": "true"})).status_code == 204
    assert "Stream-Closed" not in (await client.head(source)).headers


async def test_a_fork_of_a_fork_reads_through_both_levels(client: httpx.AsyncClient) -> None:
    root, _ = await make(client, b'{"n":1}', b'{"n":2}', headers=JSON)
    middle, _ = await fork(client, root)
    await client.post(middle, content=b'[{"n":3},{"n":4}]', headers=JSON)
    middle_offset = (await client.head(middle)).headers["Stream-Next-Offset"]
    await client.post(middle, content=b'{"n":5}', headers=JSON)
    leaf, created = await fork(client, middle, middle_offset)
    assert created.status_code == 201
    assert created.headers["Content-Type"] == "application/json"  # inherited
    await client.post(leaf, content=b'{"n":6}', headers=JSON)
    response = await client.get(leaf, params={"offset": "-1"})
    assert response.json() == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 6}]
    # A JSON sub-offset counts messages; a binary one cuts a message, copying its part.
    partial, created = await fork(client, leaf, "0000000000000001", **{"Stream-Fork-Sub-Offset": "2"})
    assert created.status_code == 201
    assert (await client.get(partial, params={"offset": "-1"})).json() == [{"n": 1}, {"n": 2}, {"n": 3}]
    text, _ = await make(client, b"hello")
    cut, created = await fork(client, text, "0000000000000000", **{"Stream-Fork-Sub-Offset": "3"})
    assert created.status_code == 201
    assert await body(client, cut) == b"hel"


async def test_long_poll_on_a_fork_waits_for_the_fork_not_the_source(client: httpx.AsyncClient) -> None:
    source, _ = await make(client, b"s")
    path, _ = await fork(client, source)
    tail = (await client.head(path)).headers["Stream-Next-Offset"]
    await client.post(source, content=b"not mine", headers=TEXT)
    waited = await client.get(path, params={"offset": tail, "live": "long-poll"})
    assert waited.status_code == 204  # the source's append did not wake it


# -- refused forks store nothing ------------------------------------------------------


async def test_bad_fork_requests_get_the_protocol_codes_and_store_nothing(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, offsets = await make(client, b"data")
    cases: list[tuple[dict[str, str], int]] = [
        ({"Stream-Forked-From": "/v1/stream/no-such-" + uuid.uuid4().hex}, 404),
        ({"Stream-Forked-From": source, "Stream-Fork-Offset": "0000000000000009"}, 400),
        ({"Stream-Forked-From": source, "Stream-Fork-Offset": "banana"}, 400),
        ({"Stream-Forked-From": source, "Stream-Fork-Sub-Offset": "1"}, 400),  # past the tail
        (
            {
                "Stream-Forked-From": source,
                "Stream-Fork-Offset": "0000000000000000",
                "Stream-Fork-Sub-Offset": "9",
            },
            400,
        ),
        ({"Stream-Forked-From": source, "Stream-Fork-Sub-Offset": "-1"}, 400),
        ({"Stream-Forked-From": source, "Content-Type": "application/json"}, 409),
        ({"Stream-Fork-Offset": offsets[0]}, 400),  # no source named
        ({"Stream-Fork-Sub-Offset": "0"}, 400),
    ]
    for headers, status in cases:
        target = new_path("refused")
        response = await client.put(target, headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert (await client.head(target)).status_code == 404, headers
    row = await run_row(fork_dsn, run_of(source))
    assert row is not None and row["fork_refs"] == 0  # no reference leaked
    assert (await client.delete(source)).status_code == 204
    assert (await client.head(source)).status_code == 404


async def test_repeating_a_fork_is_idempotent_and_another_fork_at_its_path_is_409(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, offsets = await make(client, b"a", b"b")
    path, first = await fork(client, source, offsets[0])
    assert first.status_code == 201
    again = await client.put(path, headers={"Stream-Forked-From": source, "Stream-Fork-Offset": offsets[0]})
    assert again.status_code == 200
    other = await client.put(path, headers={"Stream-Forked-From": source, "Stream-Fork-Offset": offsets[1]})
    assert other.status_code == 409
    row = await run_row(fork_dsn, run_of(source))
    assert row is not None and row["fork_refs"] == 1


# -- deletion, retention, audit, restart ---------------------------------------------


async def test_deleting_a_source_with_forks_soft_deletes_it_until_its_last_fork_goes(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, _ = await make(client, b"kept")
    middle, _ = await fork(client, source)
    await client.post(middle, content=b"+m", headers=TEXT)
    leaf, _ = await fork(client, middle)
    assert (await client.delete(source)).status_code == 204
    assert (await client.delete(middle)).status_code == 204
    for method in ("GET", "HEAD", "POST", "DELETE"):
        response = await client.request(method, source, params={"offset": "-1"}, headers=TEXT, content=b"x")
        assert response.status_code == 410, method
    assert (await client.put(source, headers=TEXT)).status_code == 409  # the path stays taken
    assert (await fork(client, middle))[1].status_code == 409  # no fork of a soft-deleted stream
    assert await body(client, leaf) == b"kept+m"
    assert (await client.delete(leaf)).status_code == 204
    for gone in (source, middle, leaf):  # the cascade went up the chain
        assert (await client.head(gone)).status_code == 404
        assert await run_row(fork_dsn, run_of(gone)) is None


async def test_forks_racing_the_deletion_of_their_source_each_read_it_or_were_refused(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, _ = await make(client, b"raced")
    paths = [new_path("race") for _ in range(8)]
    puts = [client.put(path, headers={"Stream-Forked-From": source}) for path in paths]
    *created, deleted = await asyncio.gather(*puts, client.delete(source))
    assert deleted.status_code == 204
    forks = [path for path, response in zip(paths, created, strict=True) if response.status_code == 201]
    # A fork created before the delete keeps the source (soft-deleted); one after it
    # finds the source soft-deleted (409) or, if no fork came first, gone (404).
    statuses = sorted(response.status_code for response in created)
    assert set(statuses) <= {201, 404, 409}, statuses
    assert not ({404, 409} <= set(statuses)), statuses
    row = await run_row(fork_dsn, run_of(source))
    assert (row["fork_refs"] if row else 0) == len(forks)
    for path in forks:
        assert await body(client, path) == b"raced"
    for path in forks:
        assert (await client.delete(path)).status_code == 204
    assert await run_row(fork_dsn, run_of(source)) is None


async def test_retention_leaves_a_forked_source_alone_and_the_fork_chain_verifies(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, _ = await make(client, b"1", b"2", b"3")
    path, _ = await fork(client, source)
    await client.post(path, content=b"4", headers=TEXT)
    await client.post(path, content=b"5", headers=TEXT)
    async with PostgresStreamBridge(fork_dsn) as bridge:
        await bridge.run_retention(RetentionPolicy(max_events_per_run=1))
        fork_report = await bridge.verify(run_of(path))
        source_report = await bridge.verify(run_of(source))
    assert await body(client, source) == b"123"
    assert source_report.ok and fork_report.ok, (source_report, fork_report)
    # The fork's own events were trimmed to the newest: reading before them is 410.
    assert await body(client, path, "0000000000000004") == b"5"
    assert (await client.get(path, params={"offset": "-1"})).status_code == 410


async def test_a_fork_of_a_source_retention_trimmed_before_it_answers_410_for_what_is_gone(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, offsets = await make(client, b"1", b"2", b"3")
    async with PostgresStreamBridge(fork_dsn) as bridge:
        await bridge.run_retention(RetentionPolicy(max_events_per_run=1))
    assert (await fork(client, source, offsets[0]))[1].status_code == 400  # deleted data
    path, created = await fork(client, source)
    assert created.status_code == 201
    assert (await client.get(path, params={"offset": "-1"})).status_code == 410
    assert await body(client, path, offsets[1]) == b"3"


async def test_a_fork_reads_the_same_after_a_server_restart(fork_dsn: str, server: ServerProcess) -> None:
    async with server.client() as http:
        source, offsets = await make(http, b"before", b"-after")
        path, _ = await fork(http, source, offsets[0])
        await http.post(path, content=b"-forked", headers=TEXT)
        assert (await http.delete(source)).status_code == 204
    await server.stop()
    await server.start()
    async with server.client() as http:
        assert await body(http, path) == b"before-forked"
        assert (await http.head(source)).status_code == 410
        assert (await http.post(path, content=b"!", headers=TEXT)).status_code == 204
        assert await body(http, path, offsets[0]) == b"-forked!"


@pytest.mark.parametrize("ttl", [None, "120"])
async def test_a_fork_inherits_its_sources_ttl_unless_it_asks_for_its_own(
    client: httpx.AsyncClient, ttl: str | None
) -> None:
    source, _ = await make(client, b"x", headers={**TEXT, "Stream-TTL": "3600"})
    extra = {"Stream-TTL": ttl} if ttl else {}
    path, created = await fork(client, source, **extra)
    assert created.status_code == 201
    assert (await client.head(path)).headers["Stream-TTL"] == (ttl or "3600")


# -- bridge.subscribe on a fork: the stitched view ------------------------------------


async def json_append(client: httpx.AsyncClient, path: str, body: bytes) -> None:
    assert (await client.post(path, content=body, headers=JSON)).status_code == 204


async def fork_of_a_fork(client: httpx.AsyncClient) -> tuple[str, str, str]:
    """root [1, 2] -> middle [+3, +4 | +5] -> leaf forked after 4 [+6]: root, middle, leaf paths."""
    root, _ = await make(client, b'{"n":1}', b'{"n":2}', headers=JSON)
    middle, _ = await fork(client, root)
    await json_append(client, middle, b'[{"n":3},{"n":4}]')
    middle_offset = (await client.head(middle)).headers["Stream-Next-Offset"]
    await json_append(client, middle, b'{"n":5}')
    leaf, created = await fork(client, middle, middle_offset)
    assert created.status_code == 201
    await json_append(client, leaf, b'{"n":6}')
    return root, middle, leaf


async def events_of(
    bridge: PostgresStreamBridge, path: str, count: int, after: str | None = None
) -> list[StreamEvent]:
    return await take(bridge.subscribe(run_of(path), last_event_id=after, heartbeat_interval=0.2), count)


async def test_subscribe_on_a_fork_of_a_fork_yields_the_http_read_in_the_same_order_with_the_sources_ids(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    root, middle, leaf = await fork_of_a_fork(client)
    over_http = (await client.get(leaf, params={"offset": "-1"})).json()
    subscribed = await events_of(bridge, leaf, 5)
    assert [e.data for e in subscribed] == over_http == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 6}]
    # Inherited events keep the IDs they have where they are stored.
    assert [e.id for e in subscribed[:2]] == [e.id for e in await events_of(bridge, root, 2)]
    assert [e.id for e in subscribed[:4]] == [e.id for e in await events_of(bridge, middle, 4)]
    assert [int(e.id.split("-")[1]) for e in subscribed] == [1, 2, 3, 4, 5]


async def test_subscribe_on_a_fork_resumes_exactly_after_any_id_of_its_stitched_view(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    _, _, leaf = await fork_of_a_fork(client)
    view = await events_of(bridge, leaf, 5)
    for i, event in enumerate(view):
        assert await bridge.resolve(run_of(leaf), event.id) == ResumeResult(
            next_offset=i + 2, status="resumed"
        )
        rest = await events_of(bridge, leaf, len(view) - i - 1, after=event.id) if i < len(view) - 1 else []
        assert rest == view[i + 1 :], event.id


async def test_subscribe_on_a_fork_follows_its_own_live_appends_not_its_sources(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    source, _ = await make(client, b'{"s":1}', headers=JSON)
    path, _ = await fork(client, source)
    events = bridge.subscribe(run_of(path), heartbeat_interval=0.2)
    assert [e.data for e in await take(events, 1)] == [{"s": 1}]
    await json_append(client, source, b'{"s":"not the fork\'s"}')
    await json_append(client, path, b'{"f":2}')
    assert [e.data for e in await take(events, 1)] == [{"f": 2}]
    assert (await client.post(path, headers={"Stream-Closed": "true"})).status_code == 204
    assert await collect(events) == [END_SENTINEL]


async def test_a_closed_fork_with_no_own_events_ends_after_the_inherited_ones(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    source, _ = await make(client, b'{"s":1}', b'{"s":2}', headers=JSON)
    path, created = await fork(client, source, **{"Stream-Closed": "true"})
    assert created.status_code == 201
    events = await collect(bridge.subscribe(run_of(path), heartbeat_interval=0.2))
    assert [e.data for e in events[:-1]] == [{"s": 1}, {"s": 2}]
    assert events[-1] == END_SENTINEL


async def test_a_cursor_of_the_source_past_the_fork_point_or_past_the_end_is_unknown_on_the_fork(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    source, offsets = await make(client, b'{"s":1}', b'{"s":2}', headers=JSON)
    path, _ = await fork(client, source, offsets[0])
    await asyncio.sleep(0.01)  # the fork's seq 2 gets another creation time than the source's
    await json_append(client, path, b'{"f":2}')
    source_ids = [e.id for e in await events_of(bridge, source, 2)]
    view = await events_of(bridge, path, 2)
    assert view[0].id == source_ids[0] and view[1].id != source_ids[1]
    unknown = ResumeResult(next_offset=1, status="unknown")
    assert await bridge.resolve(run_of(path), source_ids[1]) == unknown
    ms = view[1].id.split("-")[0]
    assert await bridge.resolve(run_of(path), f"{ms}-3") == unknown
    assert await events_of(bridge, path, 2, after=source_ids[1]) == view  # from the start


async def test_a_cursor_before_what_retention_took_from_the_source_before_the_fork_gets_a_gap_marker(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    source, _ = await make(client, b'{"s":1}', b'{"s":2}', b'{"s":3}', headers=JSON)
    source_ids = [e.id for e in await events_of(bridge, source, 3)]
    await bridge.run_retention(RetentionPolicy(max_events_per_run=2))  # seq 1 is gone
    path, created = await fork(client, source)
    assert created.status_code == 201
    await json_append(client, path, b'{"f":4}')
    assert await bridge.resolve(run_of(path), None) == ResumeResult(next_offset=2, status="fresh")
    assert await bridge.resolve(run_of(path), f"{source_ids[0].split('-')[0]}-0") == ResumeResult(
        next_offset=2, status="evicted", gap_count=1
    )
    events = await events_of(bridge, path, 4, after=f"{source_ids[0].split('-')[0]}-0")
    marker, *rest = events
    assert marker.event == GAP_EVENT
    assert isinstance(marker.data, dict)
    assert marker.data["gap_count"] == 1
    assert marker.data["earliest_available_event_id"] == source_ids[1]
    assert marker.data["latest_available_event_id"] == rest[-1].id
    assert [e.data for e in rest] == [{"s": 2}, {"s": 3}, {"f": 4}]
    assert rest[:2] == (await events_of(bridge, path, 2))
    stopped = await collect(
        bridge.subscribe(run_of(path), last_event_id="1-0", on_gap="stop", heartbeat_interval=0.2)
    )
    assert [e.event for e in stopped] == [GAP_EVENT]


async def test_a_cursor_into_the_inherited_part_of_a_fork_whose_own_events_were_trimmed_gets_a_gap_marker(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    source, _ = await make(client, b'{"s":1}', b'{"s":2}', headers=JSON)
    path, _ = await fork(client, source)
    await json_append(client, path, b'[{"f":3},{"f":4}]')
    view = await events_of(bridge, path, 4)
    await bridge.run_retention(RetentionPolicy(max_events_per_run=1))  # the fork keeps seq 4 only
    assert await bridge.resolve(run_of(path), view[0].id) == ResumeResult(
        next_offset=4, status="evicted", gap_count=2
    )
    marker, last = await events_of(bridge, path, 2, after=view[0].id)
    assert marker.event == GAP_EVENT and isinstance(marker.data, dict)
    assert (marker.data["gap_count"], marker.data["earliest_available_event_id"]) == (2, view[3].id)
    assert last == view[3]


async def test_resolving_a_cursor_costs_one_statement_on_a_run_that_is_no_fork_and_two_on_a_fork(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, _ = await make(client, b'{"s":1}', headers=JSON)
    path, _ = await fork(client, source)
    async with PostgresStreamBridge(fork_dsn) as fresh:  # no subscriber: no background statement
        for run_id, cost in ((run_of(source), 1), (run_of(path), 2)):
            before = fresh.statements_run
            await fresh.resolve(run_id, "1-1")
            assert fresh.statements_run - before == cost, run_id


async def test_subscribe_on_a_fork_pages_through_the_inherited_part_while_the_fork_is_appended_to(
    client: httpx.AsyncClient, fork_dsn: str
) -> None:
    source, offsets = await make(client, *(f'{{"s":{i}}}'.encode() for i in range(7)), headers=JSON)
    path, _ = await fork(client, source, offsets[4])
    async with PostgresStreamBridge(fork_dsn, page_size=2) as small_pages:
        events = small_pages.subscribe(run_of(path), heartbeat_interval=0.2)
        first = await take(events, 1)

        async def append_to_the_fork() -> None:
            for i in range(6):
                await json_append(client, path, f'{{"f":{i}}}'.encode())

        appending = asyncio.create_task(append_to_the_fork())
        rest = await take(events, 10)
        await appending
        await events.aclose()  # type: ignore[attr-defined]
    over_http = (await client.get(path, params={"offset": "-1"})).json()
    assert [e.data for e in first + rest] == over_http
    assert [int(e.id.split("-")[1]) for e in first + rest] == list(range(1, 12))


async def test_run_info_of_a_closed_fork_with_no_own_events_makes_up_no_terminal_id(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    # Its terminal position is an inherited event, whose creation time its own run
    # row does not hold: no ID rather than "None-2" (the pgbridge_runs view agrees).
    source, _ = await make(client, b'{"s":1}', b'{"s":2}', headers=JSON)
    path, _ = await fork(client, source, **{"Stream-Closed": "true"})
    info = await bridge.run_info(run_of(path))
    assert info is not None and info.status == "ended"
    assert info.terminal_event_id is None
    source_info = await bridge.run_info(run_of(source))
    assert source_info is not None  # its first and last events are the fork's, as a read shows
    assert (info.first_event_id, info.last_event_id) == (
        source_info.first_event_id,
        source_info.last_event_id,
    )


async def test_run_info_of_a_fork_counts_the_events_a_read_of_it_returns(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    # One truth on every surface: a fork whose read returns two inherited messages and one
    # of its own has three events, all retained, none deleted (not "1 retained, 2 deleted").
    source, _ = await make(client, b'{"s":1}', b'{"s":2}', headers=JSON)
    path, _ = await fork(client, source)
    await client.post(path, content=b'{"f":3}', headers=JSON)
    info = await bridge.run_info(run_of(path))
    source_info = await bridge.run_info(run_of(source))
    assert info is not None and source_info is not None
    assert (info.events_published, info.events_retained, info.events_deleted) == (3, 3, 0)
    assert info.first_event_id == source_info.first_event_id
    assert info.fork_of == run_of(source)
    (listed,) = [run for run in await bridge.list_runs() if run.run_id == run_of(path)]
    assert listed == info


async def test_run_info_says_a_stream_deleted_while_forks_read_it_is_deleted(
    client: httpx.AsyncClient, bridge: PostgresStreamBridge
) -> None:
    source, _ = await make(client, b"kept")
    await fork(client, source)
    assert (await client.delete(source)).status_code == 204  # soft-deleted: a fork still reads it
    info = await bridge.run_info(run_of(source))
    assert info is not None and info.deleted
