"""``append_one_notifying``: a lone publish's one event in one plain statement.

It must store exactly what ``pgbridge_append_batch`` would (same seqs, run
row, hash chain), and store nothing wherever the function would take another
way or refuse, so the caller's fall-back to the function answers those
(pgbridge/sql/events.sql; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from pgbridge.engine.listen import decode_wake
from pgbridge.sql.queries import Queries
from tests.support.sql_helpers import assert_chained, connected, stored_events

QUERIES = Queries.for_schema()
CHANNEL = "pgbridge-test-append-one"
#: The run row's columns an append moves (timestamps compared for being set, not their value).
RUN_COLUMNS = (
    "SELECT last_seq, first_seq, status, terminal_seq, first_ms IS NOT NULL AS has_first_ms, "
    "last_ms IS NOT NULL AS has_last_ms, ended_at IS NOT NULL AS ended, awaiting_input_since, "
    "last_hash FROM run_streams WHERE run_id = $1"
)


async def one(
    conn: asyncpg.Connection,
    run_id: str,
    event: str = "token",
    data: str = '{"i": 1}',
    *,
    terminal: bool = False,
    bound: str | None = None,
) -> asyncpg.Record | None:
    status = "ended" if terminal else "active"
    row: asyncpg.Record | None = await conn.fetchrow(
        QUERIES.append_one_notifying, run_id, event, data, terminal, status, CHANNEL, bound
    )
    return row


async def through_the_function(
    conn: asyncpg.Connection,
    run_id: str,
    event: str = "token",
    data: str = '{"i": 1}',
    *,
    terminal: bool = False,
) -> asyncpg.Record:
    status = "ended" if terminal else "active"
    (row,) = await conn.fetch(
        QUERIES.append_events_notifying, [run_id], [event], [data], [terminal], [status], CHANNEL, None
    )
    return row


async def test_it_stores_what_the_function_stores_row_for_row_and_hash_for_hash(dsn: str) -> None:
    steps = [("token", '{"i": 1}', False), ("values", '{"a": [1, 2]}', False), ("end", "{}", True)]
    async with connected(dsn) as conn:
        for run_id in ("by-function", "by-statement"):
            await through_the_function(conn, run_id, "created", "{}")  # the row exists from here
        for event, data, terminal in steps:
            await through_the_function(conn, "by-function", event, data, terminal=terminal)
            assert await one(conn, "by-statement", event, data, terminal=terminal) is not None
        by_function, by_statement = (
            await stored_events(conn, "by-function"),
            await stored_events(conn, "by-statement"),
        )
        assert [(r["seq"], r["event"], r["data"], r["terminal"]) for r in by_statement] == [
            (r["seq"], r["event"], r["data"], r["terminal"]) for r in by_function
        ]
        assert_chained("by-statement", by_statement)
        function_run = dict(await conn.fetchrow(RUN_COLUMNS, "by-function"))
        statement_run = dict(await conn.fetchrow(RUN_COLUMNS, "by-statement"))
        assert bytes(statement_run.pop("last_hash")) == bytes(by_statement[-1]["hash"])
        function_run.pop("last_hash")
        assert statement_run == function_run
        assert statement_run["terminal_seq"] == 4 and statement_run["status"] == "ended"
        first_ms = await conn.fetchval("SELECT first_ms FROM run_streams WHERE run_id = 'by-statement'")
        assert first_ms == by_statement[0]["created_ms"]  # kept from the run's first event


async def test_it_answers_the_seq_and_created_ms_it_stored(dsn: str) -> None:
    async with connected(dsn) as conn:
        await through_the_function(conn, "run")
        row = await one(conn, "run")
        assert row is not None
        stored = await stored_events(conn, "run")
        assert (
            (row["seq"], row["created_ms"])
            == (stored[-1]["seq"], stored[-1]["created_ms"])
            == (2, row["created_ms"])
        )


async def test_a_run_that_held_no_event_gets_its_first_ms_from_the_event(dsn: str) -> None:
    async with connected(dsn) as conn:
        await conn.execute("INSERT INTO run_streams (run_id, status, last_seq) VALUES ('empty', 'active', 0)")
        row = await one(conn, "empty")
        assert row is not None and row["seq"] == 1
        assert (
            await conn.fetchval("SELECT first_ms FROM run_streams WHERE run_id = 'empty'")
            == row["created_ms"]
        )


@pytest.mark.parametrize(
    "make_special",
    [
        "UPDATE run_streams SET content_type = 'text/plain' WHERE run_id = 'run'",
        "UPDATE run_streams SET stream_deleted_at = now() WHERE run_id = 'run'",
        "UPDATE run_streams SET stream_ttl_seconds = 3600, stream_touched_at = now() WHERE run_id = 'run'",
        "UPDATE run_streams SET stream_expires_at = now() + interval '1 hour' WHERE run_id = 'run'",
    ],
    ids=["content-type", "deleted", "ttl", "expires-at"],
)
async def test_a_durable_stream_the_function_checks_further_is_left_to_it(
    dsn: str, make_special: str
) -> None:
    async with connected(dsn) as conn:
        await through_the_function(conn, "run")
        await conn.execute(make_special)
        before = dict(await conn.fetchrow(RUN_COLUMNS, "run"))
        assert await one(conn, "run") is None
        assert len(await stored_events(conn, "run")) == 1
        assert dict(await conn.fetchrow(RUN_COLUMNS, "run")) == before


async def test_a_run_with_no_row_is_left_to_the_function_which_creates_it(dsn: str) -> None:
    async with connected(dsn) as conn:
        assert await one(conn, "new") is None
        assert await conn.fetchval("SELECT count(*) FROM run_streams WHERE run_id = 'new'") == 0
        assert await conn.fetchval("SELECT count(*) FROM run_events WHERE run_id = 'new'") == 0


async def test_a_run_with_its_terminal_event_is_left_to_the_function_which_refuses(dsn: str) -> None:
    async with connected(dsn) as conn:
        await through_the_function(conn, "run", "end", "{}", terminal=True)
        assert await one(conn, "run") is None
        assert (await through_the_function(conn, "run"))["refused"] == "terminal"
        assert len(await stored_events(conn, "run")) == 1


async def test_its_notify_carries_the_event_and_is_sent_by_the_commit(dsn: str) -> None:
    heard: list[str] = []
    async with connected(dsn) as listener, connected(dsn) as conn:
        await listener.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
        await through_the_function(conn, "run a b")  # a run id with spaces: the length prefix
        await asyncio.sleep(0.2)
        heard.clear()
        row = await one(conn, "run a b", "token", '{"x": "y"}')
        assert row is not None and row["notified"] is True
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.02)
    (payload,) = heard
    wake = decode_wake(payload)
    assert (wake.run_id, wake.seq) == ("run a b", 2)
    assert wake.events == ((2, row["created_ms"], "token", '{"x": "y"}', False),)


async def test_an_event_too_big_for_a_notify_is_stored_and_reported_not_notified(dsn: str) -> None:
    big = json.dumps({"text": "x" * 9000})
    async with connected(dsn) as conn:
        await through_the_function(conn, "run")
        row = await one(conn, "run", "token", big)
        assert row is not None and row["notified"] is False
        assert (await stored_events(conn, "run"))[-1]["data"] == big


async def test_a_held_row_fails_it_after_the_bound_having_stored_nothing(dsn: str) -> None:
    async with connected(dsn) as holder, connected(dsn) as conn:
        await through_the_function(conn, "run")
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM run_streams WHERE run_id = 'run' FOR UPDATE")
            with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                await one(conn, "run", bound="50ms")
        assert len(await stored_events(conn, "run")) == 1
        assert await conn.fetchval("SHOW lock_timeout") == "0"  # the bound lasted its statement


async def test_concurrent_appends_to_one_run_keep_seqs_gapless_and_the_chain_whole(dsn: str) -> None:
    async with connected(dsn) as conn:
        await through_the_function(conn, "run")

    async def writer(index: int) -> None:
        async with connected(dsn) as conn:
            for i in range(30):
                assert await one(conn, "run", "token", json.dumps({"w": index, "i": i})) is not None

    await asyncio.gather(*(writer(i) for i in range(4)))
    async with connected(dsn) as conn:
        rows = await stored_events(conn, "run")
        assert [r["seq"] for r in rows] == list(range(1, 122))
        assert_chained("run", rows)
        assert await conn.fetchval("SELECT last_seq FROM run_streams WHERE run_id = 'run'") == 121
