"""Durable Streams offsets name one event of one history (docs/durable-streams.md, "Offsets").

An offset is ``<seq>_<ms>``: the position and the creation time of the event
there. After an asynchronous failover the new primary lacks the last events
and numbers new ones with their seqs (tests/faults/test_failover.py); here
:func:`lose_events` makes that happen on one server: the run's events from a
seq on are gone, and the next appends take their seqs at other times. An
offset of a lost event is then answered ``410`` (a fork at it ``400``), and
a live reader whose position was lost ends instead of reading on in the
other history.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from pgbridge.durable_streams.offsets import format_offset, parse_offset
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory
from tests.support.sql_helpers import connected, evict_prefix

TEXT = {"Content-Type": "text/plain"}


@pytest_asyncio.fixture(scope="module")
async def offsets_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def server(offsets_dsn: str) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(offsets_dsn, extra_args=("--long-poll-timeout", "2"))
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as http:
        yield http


async def make(client: httpx.AsyncClient, *bodies: bytes) -> tuple[str, list[str]]:
    """A text stream with one message per body; its path and the offset after each message."""
    path = f"/v1/stream/o-{uuid.uuid4().hex[:10]}"
    assert (await client.put(path, headers=TEXT)).status_code == 201
    return path, [await append(client, path, body) for body in bodies]


async def append(client: httpx.AsyncClient, path: str, body: bytes) -> str:
    response = await client.post(path, content=body, headers=TEXT)
    assert response.status_code == 204, response.text
    return response.headers["Stream-Next-Offset"]


async def lose_events(dsn: str, path: str, from_seq: int) -> None:
    """What an asynchronous failover does to the stream: its events from *from_seq* on
    were never received by the new primary. The next append waits a few milliseconds,
    as the failover itself would, so the events that take their seqs have other times."""
    run_id = path.removeprefix("/v1/stream/")
    async with connected(dsn) as conn, conn.transaction():
        await conn.execute("SET LOCAL pgbridge.retention = 'on'")  # past the append-only guard
        await conn.execute("DELETE FROM run_events WHERE run_id = $1 AND seq >= $2", run_id, from_seq)
        row = await conn.fetchrow("SELECT last_seq FROM run_streams WHERE run_id = $1", run_id)
        assert row is not None and row["last_seq"] < from_seq  # the row is written once in 256 events
    await asyncio.sleep(0.01)


def seq_of(offset: str) -> int:
    return parse_offset(offset).seq


# -- offsets that this history holds ----------------------------------------------------


async def test_every_offset_the_server_gives_reads_on_from_where_it_names(client: httpx.AsyncClient) -> None:
    path, offsets = await make(client, b"a", b"b", b"c")
    head = (await client.head(path)).headers["Stream-Next-Offset"]
    assert head == offsets[-1]
    first = await client.get(path, params={"offset": "-1"})
    assert first.headers["Stream-Next-Offset"] == offsets[-1]
    assert (await client.get(path, params={"offset": offsets[0]})).content == b"bc"
    tail = await client.get(path, params={"offset": head})
    assert tail.status_code == 200 and tail.content == b""
    assert tail.headers["Stream-Up-To-Date"] == "true" and tail.headers["Stream-Next-Offset"] == head


async def test_an_empty_forks_tail_offset_names_its_sources_event_at_the_fork_point(
    client: httpx.AsyncClient,
) -> None:
    source, offsets = await make(client, b"a", b"b", b"c")
    fork_path = f"/v1/stream/f-{uuid.uuid4().hex[:10]}"
    created = await client.put(
        fork_path, headers={"Stream-Forked-From": source, "Stream-Fork-Offset": offsets[1]}
    )
    assert created.status_code == 201
    assert created.headers["Stream-Next-Offset"] == offsets[1]
    assert (await client.head(fork_path)).headers["Stream-Next-Offset"] == offsets[1]
    closed = await client.post(fork_path, headers={"Stream-Closed": "true"})
    assert closed.headers["Stream-Next-Offset"] == offsets[1]
    # A fork of that fork, at its tail: the event is two runs up the chain.
    leaf = f"/v1/stream/f-{uuid.uuid4().hex[:10]}"
    assert (await client.put(leaf, headers={"Stream-Forked-From": fork_path})).status_code == 201
    assert (await client.head(leaf)).headers["Stream-Next-Offset"] == offsets[1]
    assert (await client.get(leaf, params={"offset": offsets[1]})).status_code == 200


async def test_a_bare_seq_offset_of_earlier_versions_still_reads(client: httpx.AsyncClient) -> None:
    path, offsets = await make(client, b"a", b"b", b"c")
    bare = offsets[0].partition("_")[0]
    response = await client.get(path, params={"offset": bare})
    assert response.status_code == 200 and response.content == b"bc"
    assert response.headers["Stream-Next-Offset"] == offsets[-1]  # answered in this version's form


# -- offsets of a lost history -----------------------------------------------------------


async def test_a_read_at_an_offset_whose_event_was_lost_and_replaced_is_gone(
    client: httpx.AsyncClient, offsets_dsn: str
) -> None:
    path, offsets = await make(client, b"a", b"b", b"c")
    await lose_events(offsets_dsn, path, from_seq=2)
    replaced = [await append(client, path, body) for body in (b"B", b"C", b"D")]
    assert seq_of(replaced[0]) == seq_of(offsets[1])  # the same seq, another event
    for lost in offsets[1:]:
        response = await client.get(path, params={"offset": lost})
        assert response.status_code == 410, response.text
        assert "failover" in response.text
    assert (await client.get(path, params={"offset": offsets[0]})).content == b"BCD"  # kept: reads on


async def test_an_offset_of_the_event_retention_deleted_last_is_checked_against_its_kept_time(
    client: httpx.AsyncClient, offsets_dsn: str
) -> None:
    """At ``first_seq - 1`` the event is gone but the run keeps its creation time (as an event
    ID is resolved there: docs/behaviour.md §3), so an offset of another history at that seq is
    refused and the run's own reads on."""
    path, offsets = await make(client, b"a", b"b", b"c")
    await evict_prefix(offsets_dsn, path.removeprefix("/v1/stream/"), keep_from_seq=3)
    kept = parse_offset(offsets[1])
    assert kept.ms is not None
    assert (await client.get(path, params={"offset": offsets[1]})).content == b"c"
    other_history = format_offset(kept.seq, kept.ms + 1)
    assert (await client.get(path, params={"offset": other_history})).status_code == 410
    assert (await client.get(path, params={"offset": offsets[0]})).status_code == 410  # deleted: before it


async def test_a_read_at_an_offset_past_the_tail_of_a_shorter_history_is_gone(
    client: httpx.AsyncClient, offsets_dsn: str
) -> None:
    path, offsets = await make(client, b"a", b"b", b"c")
    await lose_events(offsets_dsn, path, from_seq=2)
    assert (await client.get(path, params={"offset": offsets[2]})).status_code == 410
    # An offset this server never made, past the tail, stays a bad request.
    bare = offsets[2].partition("_")[0]
    assert (await client.get(path, params={"offset": bare})).status_code == 400


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_a_live_read_from_a_lost_offset_is_gone(
    client: httpx.AsyncClient, offsets_dsn: str, live: str
) -> None:
    path, offsets = await make(client, b"a", b"b")
    await lose_events(offsets_dsn, path, from_seq=2)
    await append(client, path, b"B")
    response = await client.get(path, params={"offset": offsets[1], "live": live})
    assert response.status_code == 410


async def test_a_long_poll_waiting_at_an_offset_that_a_failover_loses_is_gone(
    client: httpx.AsyncClient, offsets_dsn: str
) -> None:
    path, offsets = await make(client, b"a", b"b")
    waiting = asyncio.ensure_future(client.get(path, params={"offset": offsets[1], "live": "long-poll"}))
    await asyncio.sleep(0.3)
    await lose_events(offsets_dsn, path, from_seq=2)
    await append(client, path, b"B")
    await append(client, path, b"C")  # wakes the wait: the seq it waits after holds B now
    response = await waiting
    assert response.status_code == 410, (response.status_code, response.content)


async def test_a_fork_at_a_lost_offset_is_refused(client: httpx.AsyncClient, offsets_dsn: str) -> None:
    path, offsets = await make(client, b"a", b"b")
    await lose_events(offsets_dsn, path, from_seq=2)
    await append(client, path, b"B")
    fork_path = f"/v1/stream/f-{uuid.uuid4().hex[:10]}"
    refused = await client.put(
        fork_path, headers={"Stream-Forked-From": path, "Stream-Fork-Offset": offsets[1]}
    )
    assert refused.status_code == 400 and "failover" in refused.text
    assert (await client.head(fork_path)).status_code == 404  # nothing was created


async def test_a_live_sse_reader_whose_position_was_lost_ends_without_the_other_history(
    client: httpx.AsyncClient, offsets_dsn: str
) -> None:
    path, offsets = await make(client, b"a", b"b")
    frames: list[str] = []
    reached = asyncio.Event()

    async def read() -> None:
        async with client.stream("GET", path, params={"offset": "-1", "live": "sse"}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                frames.append(line)
                if '"upToDate":true' in line:
                    reached.set()

    reading = asyncio.ensure_future(read())
    await asyncio.wait_for(reached.wait(), 10)
    await lose_events(offsets_dsn, path, from_seq=2)
    await append(client, path, b"B")
    await append(client, path, b"C")
    await asyncio.wait_for(reading, 10)  # the server ended the response
    data = [line for line in frames if line.startswith("data:") and "streamNextOffset" not in line]
    assert data == ["data:ab"]  # the first read's, and nothing of the new history
    reconnect = await client.get(path, params={"offset": offsets[1], "live": "sse"})
    assert reconnect.status_code == 410
