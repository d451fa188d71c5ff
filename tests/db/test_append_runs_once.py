"""``append_runs_once``: a busy moment's batch of runs that exist, one event each, set-based.

It must store exactly what ``pgbridge_append_batch`` stores (seqs, run rows,
hash chains), and all of a batch or nothing, so that a batch with a run the
function would treat otherwise goes the function's way whole
(pgbridge/sql/events.sql, pgbridge/store/events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from pgbridge import PostgresStreamBridge
from pgbridge.connector import Database
from pgbridge.engine.listen import Wake, decode_wakes
from pgbridge.sql.queries import Queries
from pgbridge.store.events import EventStore
from tests.support.sql_helpers import assert_chained, connected, stored_events, wait_until_blocked

QUERIES = Queries.for_schema()
RUN_ROW = (
    "SELECT last_seq, first_seq, status, terminal_seq, first_ms IS NOT NULL AS has_first_ms, "
    "ended_at IS NOT NULL AS ended, awaiting_input_since FROM run_streams WHERE run_id = $1"
)
#: A run's head as pgbridge reads it (its row lags its newest event: revision 0012).
HEAD = (
    "SELECT h.last_seq, h.last_ms FROM run_streams AS r CROSS JOIN LATERAL "
    "pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h WHERE r.run_id = $1"
)
#: The parity event times take on this server's timeline (pgbridge_event_ms).
TIMELINE_PARITY = (
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int % 2"
)


#: What makes a run one the function would treat otherwise (append_runs_once and
#: append_one_event then store nothing), given a row 'refuses' that takes events.
REFUSALS = [
    "DELETE FROM run_streams WHERE run_id = 'refuses'",  # a run the function would create
    "UPDATE run_streams SET terminal_seq = last_seq, status = 'ended', ended_at = now() "
    "WHERE run_id = 'refuses'",
    "UPDATE run_streams SET content_type = 'text/plain' WHERE run_id = 'refuses'",
    "UPDATE run_streams SET stream_deleted_at = now() WHERE run_id = 'refuses'",
    "UPDATE run_streams SET stream_ttl_seconds = 60, stream_touched_at = now() WHERE run_id = 'refuses'",
]
REFUSAL_IDS = ["no-row", "ended", "content-type", "deleted", "ttl"]


def arrays(
    batch: list[tuple[str, str, bool]],
) -> tuple[list[str], list[str], list[str], list[bool], list[str]]:
    """(run id, data, terminal) per event: the statements' five arrays."""
    return (
        [run_id for run_id, _, _ in batch],
        ["token"] * len(batch),
        [data for _, data, _ in batch],
        [terminal for _, _, terminal in batch],
        ["ended" if terminal else "active" for _, _, terminal in batch],
    )


async def runs_once(
    conn: asyncpg.Connection,
    batch: list[tuple[str, str, bool]],
    bound: str | None = None,
    channel: str | None = None,
) -> list[asyncpg.Record]:
    rows = await conn.fetch(QUERIES.append_runs_once, *arrays(batch), bound, channel)
    return sorted(rows, key=lambda row: row["ord"])


async def each_alone(
    conn: asyncpg.Connection,
    batch: list[tuple[str, str, bool]],
    bound: str | None = None,
    channel: str | None = None,
) -> list[dict[str, object]]:
    """Each event of *batch* in turn as a lone publish is sent: append_one_event, then the
    function where that stored nothing (an event that writes its run's row), as
    EventStore.append_batch does; rows numbered as append_runs_once numbers a batch's."""
    rows = []
    for place, (run_id, data, terminal) in enumerate(batch, start=1):
        status = "ended" if terminal else "active"
        found = await conn.fetch(
            QUERIES.append_one_event, run_id, "token", data, terminal, status, bound, channel
        )
        if not found:
            one = ([run_id], ["token"], [data], [terminal], [status])
            if channel is not None:
                found = await conn.fetch(QUERIES.append_events_notifying, *one, channel, bound)
            else:
                found = await conn.fetch(QUERIES.append_events, *one)
        (row,) = found
        rows.append({**dict(row), "ord": place})
    return rows


Send = Callable[..., Awaitable[Sequence[Mapping[str, Any]]]]


@pytest.fixture(params=["append_runs_once", "append_one_event"])
def send(request: pytest.FixtureRequest) -> Send:
    """A batch through append_runs_once, or each of its events through append_one_event:
    the same rules, so the same results."""
    return runs_once if request.param == "append_runs_once" else each_alone


async def through_the_function(
    conn: asyncpg.Connection, batch: list[tuple[str, str, bool]]
) -> list[asyncpg.Record]:
    return await conn.fetch(QUERIES.append_events, *arrays(batch))


async def test_it_stores_what_the_function_stores_row_for_row_and_hash_for_hash(dsn: str, send: Send) -> None:
    async with connected(dsn) as conn:
        await through_the_function(
            conn, [(f"{way}-{i}", "{}", False) for way in ("f", "s") for i in range(3)]
        )
        for step in range(3):
            last = step == 2
            batch = [(str(i), json.dumps({"step": step, "run": i}), last and i == 1) for i in range(3)]
            await through_the_function(conn, [(f"f-{run}", data, terminal) for run, data, terminal in batch])
            rows = await send(conn, [(f"s-{run}", data, terminal) for run, data, terminal in batch])
            assert [(row["ord"], row["seq"], row["refused"]) for row in rows] == [
                (1, step + 2, None),
                (2, step + 2, None),
                (3, step + 2, None),
            ]
        for i in range(3):
            by_function, by_statement = (
                await stored_events(conn, f"f-{i}"),
                await stored_events(conn, f"s-{i}"),
            )
            assert [(r["seq"], r["data"], r["terminal"]) for r in by_statement] == [
                (r["seq"], r["data"], r["terminal"]) for r in by_function
            ]
            assert_chained(f"s-{i}", by_statement)
            assert dict(await conn.fetchrow(RUN_ROW, f"s-{i}")) == dict(
                await conn.fetchrow(RUN_ROW, f"f-{i}")
            )
        assert (await conn.fetchrow(RUN_ROW, "s-1"))["terminal_seq"] == 4


async def test_it_writes_a_run_row_exactly_when_the_function_does_and_answers_prev_ms(
    dsn: str, send: Send
) -> None:
    """The function's rules of revision 0012: a run's row is written for its first event, a
    status change, a terminal event, or a head 256 events past the row's; the head is read from
    run_events; event times take the timeline's parity; each event says its predecessor's time."""
    parity = None
    async with connected(dsn) as conn:
        parity = await conn.fetchval(TIMELINE_PARITY)
        for way in ("f", "s"):  # rows at seq 1, heads at 255 (the short way leaves the row alone)
            await through_the_function(conn, [(f"{way}-{i}", "{}", False) for i in range(3)])
            for i in range(3):
                await through_the_function(conn, [(f"{way}-{i}", "{}", False)] * 254)
        for way in ("f", "s"):
            await conn.execute(QUERIES.mark_awaiting_input, f"{way}-2")  # a status change at 256
        for step, expected_rows in (
            (256, [1, 1, 256]),  # 255 past the row: left alone (but the status change writes it)
            (257, [257, 257, 256]),  # 256 past the row: written
            (258, [257, 257, 258]),  # the last one ends its run
        ):
            batch = [(str(i), json.dumps({"seq": step}), step == 258 and i == 2) for i in range(3)]
            heads = {
                f"{way}-{i}": await conn.fetchrow(HEAD, f"{way}-{i}") for way in ("f", "s") for i in range(3)
            }
            by_function = await through_the_function(conn, [(f"f-{r}", d, t) for r, d, t in batch])
            by_statement = await send(conn, [(f"s-{r}", d, t) for r, d, t in batch])
            for way, rows in (("f", by_function), ("s", by_statement)):
                assert [(row["ord"], row["seq"]) for row in rows] == [(1, step), (2, step), (3, step)]
                for i, row in enumerate(rows):
                    assert row["prev_ms"] == heads[f"{way}-{i}"]["last_ms"]
                    assert row["created_ms"] % 2 == parity
            for i in range(3):
                assert dict(await conn.fetchrow(RUN_ROW, f"s-{i}")) == dict(
                    await conn.fetchrow(RUN_ROW, f"f-{i}")
                ), (step, i)
            assert [(await conn.fetchrow(RUN_ROW, f"s-{i}"))["last_seq"] for i in range(3)] == expected_rows
        for i in range(3):
            stored = await stored_events(conn, f"s-{i}")
            assert [r["seq"] for r in stored] == list(range(1, 259))
            assert_chained(f"s-{i}", stored)
            assert (await conn.fetchrow(HEAD, f"s-{i}"))["last_seq"] == 258


@dataclass(frozen=True)
class Event:
    """A NewEvent, as the publisher's AppendRequest is one."""

    run_id: str
    data_text: str = "{}"
    event: str = "token"
    terminal: bool = False
    status: str = "active"


@contextlib.asynccontextmanager
async def held_by_an_append_that_writes_no_row(dsn: str, run_id: str) -> AsyncIterator[asyncpg.Connection]:
    """*run_id*'s row locked by a transaction that appended two events without writing the row
    (revision 0012) and commits when the block ends, after something has waited for the row."""
    async with connected(dsn) as holder, holder.transaction():
        await through_the_function(holder, [(run_id, '{"held": 1}', False), (run_id, '{"held": 2}', False)])
        yield holder


async def test_a_batch_that_waited_behind_an_append_that_wrote_no_row_fails_having_stored_nothing(
    dsn: str,
) -> None:
    """The statement reads heads in its own snapshot, taken before it waited for the lock: the
    held append's events are not in it, so its INSERT meets their seqs (pgbridge/sql/events.sql)."""
    async with connected(dsn) as conn:
        await through_the_function(conn, [("a", "{}", False), ("b", "{}", False)])
        waiting = None
        async with held_by_an_append_that_writes_no_row(dsn, "a"):
            waiting = asyncio.create_task(
                runs_once(conn, [("a", '{"w": 1}', False), ("b", '{"w": 1}', False)])
            )
            await wait_until_blocked(dsn, conn.get_server_pid())
        with pytest.raises(asyncpg.UniqueViolationError):
            await waiting
        assert [r["seq"] for r in await stored_events(conn, "a")] == [1, 2, 3]
        assert [r["seq"] for r in await stored_events(conn, "b")] == [1]


async def test_the_store_sends_such_a_batch_the_functions_way_numbered_after_the_held_append(
    db: Database, dsn: str
) -> None:
    store = EventStore(db)
    async with db.connection() as conn:
        await store.append_batch(conn, [Event("a"), Event("b")])  # the store now knows both runs
        async with held_by_an_append_that_writes_no_row(dsn, "a"):
            waiting = asyncio.create_task(store.append_batch(conn, [Event("a"), Event("b")]))
            await wait_until_blocked(dsn, conn.get_server_pid())
        outcomes = await waiting
        assert [o.appended.seq for o in outcomes if o.appended] == [4, 2]
        stored = await stored_events(conn, "a")
        assert [r["seq"] for r in stored] == [1, 2, 3, 4]
        assert_chained("a", stored)


#: Text only append_runs_once has (its verdict CTE), and only append_one_event.
RUNS_ONCE, ONE_EVENT = "%verdict AS MATERIALIZED%", "%AS c) AS ms) AS c%"


async def runs_of(conn: asyncpg.Connection, pattern: str) -> int:
    """How many times this connection ran the prepared statement whose text is like *pattern*."""
    runs: int = await conn.fetchval(
        "SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements "
        "WHERE statement LIKE $1 AND statement NOT LIKE '%pg_prepared_statements%'",
        pattern,
    )
    return runs


async def runs_of_append_runs_once(conn: asyncpg.Connection) -> int:
    return await runs_of(conn, RUNS_ONCE)


async def test_a_lone_event_of_a_known_run_is_sent_as_append_one_event(db: Database) -> None:
    store = EventStore(db)
    async with db.connection() as conn:
        await store.append_batch(conn, [Event("a")])  # a new run: the function creates it
        before, runs_before = db.statements, await runs_of(conn, ONE_EVENT)
        (outcome,) = await store.append_batch(conn, [Event("a")])
        assert outcome.appended is not None and outcome.appended.seq == 2
        assert db.statements == before  # one statement, no fallback
        assert await runs_of(conn, ONE_EVENT) == runs_before + 1


async def test_a_lone_terminal_event_goes_the_functions_way_at_once(db: Database) -> None:
    store = EventStore(db)
    async with db.connection() as conn:
        await store.append_batch(conn, [Event("a")])
        before, runs_before = db.statements, await runs_of(conn, ONE_EVENT)
        (outcome,) = await store.append_batch(conn, [Event("a", terminal=True, status="ended")])
        assert outcome.appended is not None and outcome.appended.seq == 2
        assert db.statements == before  # the function's statement alone
        assert await runs_of(conn, ONE_EVENT) == runs_before


async def test_a_lone_event_that_writes_its_runs_row_is_stored_the_functions_way(db: Database) -> None:
    store = EventStore(db)
    async with db.connection() as conn:
        await store.append_batch(conn, [Event("a")])
        await conn.execute(QUERIES.mark_awaiting_input, "a")
        before = db.statements
        (outcome,) = await store.append_batch(conn, [Event("a")])
        assert outcome.appended is not None and outcome.appended.seq == 2
        assert db.statements == before + 1  # append_one_event stored nothing, then the function
        assert (await conn.fetchrow(RUN_ROW, "a"))["status"] == "active"


async def test_inside_a_callers_transaction_the_function_is_used(db: Database) -> None:
    store = EventStore(db)
    async with db.connection() as conn:
        await store.append_batch(conn, [Event("a"), Event("b")])
        runs_before = await runs_of_append_runs_once(conn)
        async with conn.transaction():
            outcomes = await store.append_batch(conn, [Event("a"), Event("b")])
        assert [o.appended.seq for o in outcomes if o.appended] == [2, 2]
        assert await runs_of_append_runs_once(conn) == runs_before  # its failure would abort the transaction


@pytest.mark.parametrize("make_it_refuse", REFUSALS, ids=REFUSAL_IDS)
async def test_one_run_the_function_would_treat_otherwise_makes_the_batch_store_nothing(
    dsn: str, make_it_refuse: str
) -> None:
    async with connected(dsn) as conn:
        await through_the_function(conn, [("takes", "{}", False)])
        await conn.execute(
            "INSERT INTO run_streams (run_id, status, last_seq) VALUES ('refuses', 'active', 0)"
        )
        await conn.execute(make_it_refuse)
        assert await runs_once(conn, [("takes", "{}", False), ("refuses", "{}", False)]) == []
        assert len(await stored_events(conn, "takes")) == 1
        assert (await conn.fetchrow(RUN_ROW, "takes"))["last_seq"] == 1


async def test_a_held_row_fails_it_after_the_bound_having_stored_nothing(dsn: str) -> None:
    async with connected(dsn) as holder, connected(dsn) as conn:
        await through_the_function(conn, [("a", "{}", False), ("b", "{}", False)])
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM run_streams WHERE run_id = 'b' FOR UPDATE")
            with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                await runs_once(conn, [("a", "{}", False), ("b", "{}", False)], bound="50ms")
        assert len(await stored_events(conn, "a")) == 1


async def test_concurrent_batches_keep_seqs_gapless_and_chains_whole(dsn: str) -> None:
    runs = [f"r{i}" for i in range(6)]
    async with connected(dsn) as conn:
        await through_the_function(conn, [(run, "{}", False) for run in runs])

    async def writer(index: int) -> None:
        async with connected(dsn) as conn:
            for i in range(20):
                picked = runs[(index + i) % 6 :] + runs[: (index + i) % 6]
                batch = [(run, json.dumps({"w": index, "i": i}), False) for run in picked[:4]]
                while True:  # as the store does, but sending the same statement again
                    try:
                        rows = await runs_once(conn, batch)
                        break
                    except asyncpg.UniqueViolationError:  # waited behind a batch that wrote no row
                        continue
                assert len(rows) == 4

    await asyncio.gather(*(writer(i) for i in range(4)))  # a deadlock raises here
    async with connected(dsn) as conn:
        for run in runs:
            stored = await stored_events(conn, run)
            assert [r["seq"] for r in stored] == list(range(1, len(stored) + 1))
            assert_chained(run, stored)
            assert (await conn.fetchrow(HEAD, run))["last_seq"] == len(stored)


async def test_a_busy_bridge_stores_every_event_of_known_and_new_runs_in_order(
    make_bridge: object,
) -> None:
    # 100 publishers: batches of 50 overlap, so after each run's first event (the function's
    # way, which creates the run) they go through append_runs_once.
    bridge: PostgresStreamBridge = await make_bridge()  # type: ignore[operator]
    runs = [f"busy-{i}" for i in range(100)]

    async def publisher(run_id: str) -> list[str]:
        return [await bridge.publish(run_id, "token", {"i": i}) for i in range(15)]

    ids = await asyncio.gather(*(publisher(run) for run in runs))
    for run, sent in zip(runs, ids, strict=True):
        assert [int(event_id.split("-")[1]) for event_id in sent] == list(range(1, 16))
        stored = [e async for e in _events(bridge, run)]
        assert [e["i"] for e in stored] == list(range(15))


async def _events(bridge: PostgresStreamBridge, run_id: str):  # type: ignore[no-untyped-def]
    await bridge.publish_end(run_id)
    async for event in bridge.subscribe(run_id):
        if event.event == "token":
            assert isinstance(event.data, dict)
            yield event.data
        if getattr(event, "event", None) == "end":
            return


async def test_with_a_channel_each_run_is_woken_by_its_commit_carrying_its_event(
    dsn: str, send: Send
) -> None:
    """What append_events_notifying sends for the same batch: a wake-up per run (here in one
    payload), carrying the stored event and the time of the one before it; nothing before the
    commit."""
    listener = await asyncpg.connect(dsn)
    received: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("wakes", lambda *args: received.put_nowait(args[-1]))
        async with connected(dsn) as conn:
            first = await through_the_function(conn, [("a", "{}", False), ("b", "{}", False)])
            async with conn.transaction():
                rows = await send(conn, [("a", '{"x": 1}', False), ("b", '{"y": 2}', True)], channel="wakes")
                await asyncio.sleep(0.2)
                assert received.empty()
        wakes: list[Wake] = []
        while len(wakes) < len(rows):
            wakes.extend(decode_wakes(await asyncio.wait_for(received.get(), 10)))
    finally:
        await listener.close()
    assert [row["notified"] for row in rows] == [True, True]
    assert [(wake.run_id, wake.seq, wake.events) for wake in wakes] == [
        ("a", 2, ((2, rows[0]["created_ms"], "token", '{"x": 1}', False, first[0]["created_ms"]),)),
        ("b", 2, ((2, rows[1]["created_ms"], "token", '{"y": 2}', True, first[1]["created_ms"]),)),
    ]


async def test_an_event_too_big_for_a_payload_is_stored_and_left_to_the_notifier(
    dsn: str, send: Send
) -> None:
    big = json.dumps({"text": "x" * 8_000})
    async with connected(dsn) as conn:
        await through_the_function(conn, [("a", "{}", False), ("b", "{}", False)])
        rows = await send(conn, [("a", big, False), ("b", "{}", False)], channel="wakes")
    assert [(row["seq"], row["notified"]) for row in rows] == [(2, False), (2, True)]


# -- append_one_event on its own ------------------------------------------------------------------


@pytest.mark.parametrize("make_it_refuse", REFUSALS, ids=REFUSAL_IDS)
async def test_one_event_of_a_run_the_function_would_treat_otherwise_is_not_stored(
    dsn: str, make_it_refuse: str
) -> None:
    async with connected(dsn) as conn:
        await conn.execute(
            "INSERT INTO run_streams (run_id, status, last_seq) VALUES ('refuses', 'active', 0)"
        )
        await conn.execute(make_it_refuse)
        rows = await conn.fetch(
            QUERIES.append_one_event, "refuses", "token", "{}", False, "active", None, None
        )
        assert rows == []
        assert await stored_events(conn, "refuses") == []


@pytest.mark.parametrize("writes_its_row", ["terminal", "status change", "256 past the row"])
async def test_one_event_that_would_write_its_runs_row_is_not_stored(dsn: str, writes_its_row: str) -> None:
    """The function writes the run's row for it: append_one_event leaves such an event alone."""
    async with connected(dsn) as conn:
        await through_the_function(conn, [("a", "{}", False)])
        terminal, status = writes_its_row == "terminal", "ended" if writes_its_row == "terminal" else "active"
        if writes_its_row == "status change":
            await conn.execute(QUERIES.mark_awaiting_input, "a")
        if writes_its_row == "256 past the row":
            for _ in range(255):
                assert await conn.fetch(
                    QUERIES.append_one_event, "a", "token", "{}", False, "active", None, None
                )
        stored_before = await stored_events(conn, "a")
        rows = await conn.fetch(QUERIES.append_one_event, "a", "token", "{}", terminal, status, None, None)
        assert rows == []
        assert await stored_events(conn, "a") == stored_before


async def test_one_event_that_waited_behind_an_append_that_wrote_no_row_fails_having_stored_nothing(
    dsn: str,
) -> None:
    async with connected(dsn) as conn:
        await through_the_function(conn, [("a", "{}", False)])
        async with held_by_an_append_that_writes_no_row(dsn, "a"):
            waiting = asyncio.create_task(each_alone(conn, [("a", '{"w": 1}', False)]))
            await wait_until_blocked(dsn, conn.get_server_pid())
        with pytest.raises(asyncpg.UniqueViolationError):
            await waiting
        assert [r["seq"] for r in await stored_events(conn, "a")] == [1, 2, 3]


async def test_one_event_of_a_held_row_fails_after_the_bound_having_stored_nothing(dsn: str) -> None:
    async with connected(dsn) as holder, connected(dsn) as conn:
        await through_the_function(conn, [("a", "{}", False)])
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM run_streams WHERE run_id = 'a' FOR UPDATE")
            with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                await each_alone(conn, [("a", "{}", False)], bound="50ms")
        assert len(await stored_events(conn, "a")) == 1
