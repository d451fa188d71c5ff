"""``stream_append_simple``: a batch of simple Durable Streams appends, set-based.

It must store exactly what ``pgbridge_stream_append`` stores (seqs, messages,
the stream's row, the hash chain), and store all of a batch or nothing, so that
a batch with one refusing stream is answered, request by request, by the
general statement (pgbridge/sql/streams.sql, pgbridge/store/streams.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgbridge import PostgresStreamBridge
from pgbridge.connector import Database
from pgbridge.durable_streams.streams import Producer, StreamConfig
from pgbridge.sql.queries import Queries
from pgbridge.store.streams import StreamAppend, StreamStore, _all_simple
from tests.support.sql_helpers import assert_chained, connected, stored_events, wait_until_blocked

JSON = "application/json"
STREAMS = Queries.for_schema().streams
#: The stream row's columns an append moves (times compared for being set).
ROW = (
    "SELECT last_seq, status, terminal_seq, first_ms IS NOT NULL AS has_first_ms, "
    "stream_touched_at IS NOT NULL AS touched, stream_writer_seq, awaiting_input_since, "
    "closed_by_producer_id, closed_by_epoch, closed_by_seq FROM run_streams WHERE run_id = $1"
)
#: A stream's head as pgbridge reads it (its row lags its newest event: revision 0012).
HEAD = (
    "SELECT h.last_seq, h.last_ms FROM run_streams AS r CROSS JOIN LATERAL "
    "pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h WHERE r.run_id = $1"
)
#: The parity event times take on this server's timeline (pgbridge_event_ms).
TIMELINE_PARITY = (
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int % 2"
)


async def simple(
    conn: asyncpg.Connection, appends: list[tuple[str, str | None, str]]
) -> list[asyncpg.Record]:
    """stream_append_simple for (run id, content type, data text) requests, rows in request order."""
    rows = await conn.fetch(
        STREAMS.stream_append_simple,
        [run_id for run_id, _, _ in appends],
        [content_type for _, content_type, _ in appends],
        ["message"] * len(appends),
        [data for _, _, data in appends],
    )
    return sorted(rows, key=lambda row: row["ord"])


async def general(conn: asyncpg.Connection, run_id: str, data: str) -> asyncpg.Record:
    (row,) = await conn.fetch(
        STREAMS.stream_append_many,
        [run_id], [JSON], [1], [1], [False], [None], [None], [None], [None], ["message"], [data],
    )  # fmt: skip
    return row


async def streams(bridge: PostgresStreamBridge, *names: str, content_type: str = JSON) -> None:
    for name in names:
        created, _ = await bridge.streams.create(name, StreamConfig(content_type))
        assert created


async def test_it_stores_what_the_function_stores_message_for_message(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await streams(bridge, "by-function", "by-statement")
    texts = ['{"i": 1}', '{"i": 2}', '"three"']
    async with connected(dsn) as conn:
        for text in texts:
            by_function = await general(conn, "by-function", text)
            (by_statement,) = await simple(conn, [("by-statement", JSON, text)])
            for column in ("outcome", "last_seq", "closed", "producer_epoch", "producer_seq", "event_seq"):
                assert by_statement[column] == by_function[column], column
            assert by_statement["event_ms"] == by_statement["last_ms"]
        stored = await stored_events(conn, "by-statement")
        assert [(r["seq"], r["data"]) for r in stored] == [
            (r["seq"], r["data"]) for r in await stored_events(conn, "by-function")
        ]
        assert_chained("by-statement", stored)
        assert dict(await conn.fetchrow(ROW, "by-statement")) == dict(await conn.fetchrow(ROW, "by-function"))


async def many(conn: asyncpg.Connection, run_id: str, count: int) -> None:
    """*count* messages in one request, through the function."""
    await conn.fetch(
        STREAMS.stream_append_many,
        [run_id], [JSON], [1], [count], [False], [None], [None], [None], [None],
        ["message"] * count, [str(i) for i in range(count)],
    )  # fmt: skip


async def test_it_writes_a_stream_row_exactly_when_the_function_does(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    """pgbridge_stream_append's rules of revision 0012: the row is written for the stream's first
    event, a status other than active, a stream with a TTL, or a head 256 events past the row's;
    the head is read from run_events; event times take the timeline's parity."""
    pairs = [("f-plain", "s-plain"), ("f-waiting", "s-waiting"), ("f-ttl", "s-ttl")]
    await streams(bridge, *(name for pair in pairs for name in pair))
    async with connected(dsn) as conn:
        parity = await conn.fetchval(TIMELINE_PARITY)
        for pair in pairs:
            for name in pair:  # the row at seq 1, the head at 255
                await general(conn, name, "0")
                await many(conn, name, 254)
        for name in ("f-waiting", "s-waiting"):
            await conn.execute(Queries.for_schema().mark_awaiting_input, name)
        for name in ("f-ttl", "s-ttl"):
            await conn.execute(
                "UPDATE run_streams SET stream_ttl_seconds = 3600, "
                "stream_touched_at = now() - interval '1 minute' WHERE run_id = $1",
                name,
            )
        for step, expected_rows in ((256, [1, 256, 256]), (257, [257, 256, 257]), (258, [257, 256, 258])):
            by_statement = await simple(conn, [(s_name, JSON, str(step)) for _, s_name in pairs])
            for (f_name, s_name), row in zip(pairs, by_statement, strict=True):
                by_function = await general(conn, f_name, str(step))
                for column in ("outcome", "last_seq", "closed", "event_seq"):
                    assert row[column] == by_function[column] == (step if "seq" in column else row[column])
                assert row["event_ms"] % 2 == by_function["event_ms"] % 2 == parity
                assert dict(await conn.fetchrow(ROW, s_name)) == dict(await conn.fetchrow(ROW, f_name)), (
                    step,
                    s_name,
                )
            assert [(await conn.fetchrow(ROW, s))["last_seq"] for _, s in pairs] == expected_rows
        for _, s_name in pairs:
            stored = await stored_events(conn, s_name)
            assert [r["seq"] for r in stored] == list(range(1, 259))
            assert_chained(s_name, stored)
            assert (await conn.fetchrow(HEAD, s_name))["last_seq"] == 258
        touched = (
            "SELECT stream_touched_at > now() - interval '10 seconds' FROM run_streams WHERE run_id = $1"
        )
        assert await conn.fetchval(touched, "s-ttl") and await conn.fetchval(touched, "f-ttl")
        assert (await conn.fetchrow(ROW, "s-waiting"))["status"] == "active"


@contextlib.asynccontextmanager
async def held_by_an_append_that_writes_no_row(dsn: str, run_id: str) -> AsyncIterator[None]:
    """*run_id*'s row locked by a transaction that appended two messages without writing the
    row (revision 0012) and commits when the block ends, after something has waited for it."""
    async with connected(dsn) as holder, holder.transaction():
        await many(holder, run_id, 2)
        yield


async def test_a_batch_that_waited_behind_an_append_that_wrote_no_row_fails_having_stored_nothing(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    """Its heads are read in its own snapshot, taken before the lock wait: the held append's
    messages are not in it, so its INSERT meets their seqs (pgbridge/sql/streams.sql)."""
    await streams(bridge, "a", "b")
    async with connected(dsn) as conn:
        await simple(conn, [("a", JSON, "0"), ("b", JSON, "0")])
        async with held_by_an_append_that_writes_no_row(dsn, "a"):
            waiting = asyncio.create_task(simple(conn, [("a", JSON, "1"), ("b", JSON, "1")]))
            await wait_until_blocked(dsn, conn.get_server_pid())
        with pytest.raises(asyncpg.UniqueViolationError):
            await waiting
        assert [r["seq"] for r in await stored_events(conn, "a")] == [1, 2, 3]
        assert [r["seq"] for r in await stored_events(conn, "b")] == [1]


async def test_the_store_sends_such_a_batch_through_the_function_numbered_after_the_held_append(
    bridge: PostgresStreamBridge, db: Database, dsn: str
) -> None:
    await streams(bridge, "a", "b")
    store = StreamStore(db, appends_in_flight=4)
    try:
        await store.append_many([request("a"), request("b")])
        async with held_by_an_append_that_writes_no_row(dsn, "a"):
            waiting = asyncio.create_task(store.append_many([request("a"), request("b")]))
            async with connected(dsn) as watcher:
                for _ in range(500):  # the store's own connection is the one that waits
                    if await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ):
                        break
                    await asyncio.sleep(0.01)
        outcomes = await waiting
        assert [(o.kind, o.event_seq) for o in outcomes] == [("appended", 4), ("appended", 2)]
        async with connected(dsn) as conn:
            stored = await stored_events(conn, "a")
        assert [r["seq"] for r in stored] == [1, 2, 3, 4]
        assert_chained("a", stored)
    finally:
        await store.close()


async def test_a_batch_appends_to_each_of_its_streams(bridge: PostgresStreamBridge, dsn: str) -> None:
    await streams(bridge, "a", "b", "c")
    async with connected(dsn) as conn:
        await simple(conn, [("b", JSON, "1")])
        rows = await simple(conn, [("c", None, "1"), ("a", JSON, "1"), ("b", JSON, "2")])
        assert [(row["ord"], row["outcome"], row["last_seq"]) for row in rows] == [
            (1, "appended", 1),
            (2, "appended", 1),
            (3, "appended", 2),
        ]
        assert len({row["last_ms"] for row in rows}) == 1  # one created_ms for the statement


@pytest.mark.parametrize(
    "make_it_refuse",
    [
        "UPDATE run_streams SET stream_deleted_at = now() WHERE run_id = 'refuses'",
        "UPDATE run_streams SET stream_expires_at = now() - interval '1 second' WHERE run_id = 'refuses'",
        "UPDATE run_streams SET stream_ttl_seconds = 1, stream_touched_at = now() - interval '1 hour' "
        "WHERE run_id = 'refuses'",
        "UPDATE run_streams SET terminal_seq = last_seq, status = 'ended', ended_at = now() "
        "WHERE run_id = 'refuses'",
        "UPDATE run_streams SET content_type = 'text/plain' WHERE run_id = 'refuses'",
        "DELETE FROM run_streams WHERE run_id = 'refuses'",
    ],
    ids=["deleted", "expired", "ttl-expired", "closed", "content-type", "no-such-stream"],
)
async def test_one_stream_that_would_refuse_makes_the_whole_batch_store_nothing(
    bridge: PostgresStreamBridge, dsn: str, make_it_refuse: str
) -> None:
    await streams(bridge, "takes", "refuses")
    async with connected(dsn) as conn:
        await conn.execute(make_it_refuse)
        assert await simple(conn, [("refuses", JSON, "1"), ("takes", JSON, "1")]) == []
        assert await stored_events(conn, "takes") == []
        assert (await conn.fetchrow(ROW, "takes"))["last_seq"] == 0


async def test_a_batch_with_a_refusing_stream_is_answered_request_by_request(
    bridge: PostgresStreamBridge,
) -> None:
    await streams(bridge, "open", "closed")
    assert (await bridge.streams.append("closed", None, [], close=True)).kind == "closed_now"
    outcomes = await asyncio.gather(
        bridge.streams.append("open", JSON, [("message", '{"i": 1}')]),
        bridge.streams.append("closed", JSON, [("message", '{"i": 1}')]),
    )
    assert [o.kind for o in outcomes] == ["appended", "closed"]


async def test_concurrent_batches_on_the_same_streams_keep_seqs_gapless_and_chains_whole(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    names = [f"s{i}" for i in range(6)]
    await streams(bridge, *names)

    async def writer(index: int) -> None:
        async with connected(dsn) as conn:
            for i in range(20):
                picked = sorted(names[(index + i) % 6 :] + names[: (index + i) % 6][:2])
                batch = [(name, JSON, json.dumps({"w": index, "i": i})) for name in picked]
                while True:  # as the store does, but sending the same statement again
                    try:
                        rows = await simple(conn, batch)
                        break
                    except asyncpg.UniqueViolationError:  # waited behind a batch that wrote no row
                        continue
                assert len(rows) == len(picked)

    await asyncio.gather(*(writer(i) for i in range(4)))  # a deadlock raises here
    async with connected(dsn) as conn:
        for name in names:
            stored = await stored_events(conn, name)
            assert [r["seq"] for r in stored] == list(range(1, len(stored) + 1))
            assert_chained(name, stored)
            assert (await conn.fetchrow(HEAD, name))["last_seq"] == len(stored)
            assert (await conn.fetchrow(ROW, name))["last_seq"] == 1  # written for the first event only


def request(run_id: str = "s", **changes: object) -> StreamAppend:
    fields: dict[str, object] = {"run_id": run_id, "content_type": JSON, "events": [("message", "1")]}
    fields.update(changes)
    return StreamAppend(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("batch", "simple_batch"),
    [
        ([request("a"), request("b")], True),
        ([], False),
        ([request("a"), request("a")], False),
        ([request(events=[("message", "1"), ("message", "2")])], False),
        ([request(events=[])], False),
        ([request(close=True)], False),
        ([request(stream_seq="7")], False),
        ([request(producer=Producer("p", 0, 0))], False),
    ],
    ids=[
        "one-message-each",
        "empty",
        "a-stream-twice",
        "two-messages",
        "no-message",
        "close",
        "stream-seq",
        "producer",
    ],
)
def test_only_batches_of_one_message_per_stream_with_no_producer_seq_or_close_are_simple(
    batch: list[StreamAppend], simple_batch: bool
) -> None:
    assert _all_simple(batch) is simple_batch
