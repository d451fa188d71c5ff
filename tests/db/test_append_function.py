"""``pgbridge_append_batch`` itself, called as the publisher calls it.

The bridge's group commit retries a batch PostgreSQL rolls back as a deadlock
victim, which would hide a broken lock order; these tests call the function
on connections of their own, so a deadlock fails them.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg

from pgbridge.audit.chain import GENESIS, link_hash
from pgbridge.sql.queries import Queries
from tests.support.sql_helpers import connected

APPEND = Queries.for_schema().append_events


async def append(
    conn: asyncpg.Connection, run_ids: list[str], terminal_at: int | None = None
) -> list[asyncpg.Record]:
    n = len(run_ids)
    terminals = [i == terminal_at for i in range(n)]
    statuses = ["ended" if t else "active" for t in terminals]
    return await conn.fetch(APPEND, run_ids, ["token"] * n, ['{"i": 1}'] * n, terminals, statuses)


async def test_overlapping_batches_in_any_order_never_deadlock_and_keep_seqs_gapless(dsn: str) -> None:
    runs = [f"run-{i}" for i in range(12)]  # none exists yet: each batch also creates rows
    rng = random.Random(7)
    written: dict[str, int] = dict.fromkeys(runs, 0)

    async def writer() -> None:
        async with connected(dsn) as conn:
            for _ in range(25):
                batch = rng.sample(runs, 6) * 2
                rng.shuffle(batch)
                async with conn.transaction():
                    rows = await append(conn, batch)
                for run_id, row in zip(batch, rows, strict=True):
                    assert row["seq"] is not None
                    written[run_id] += 1

    await asyncio.gather(*(writer() for _ in range(6)))  # a deadlock raises DeadlockDetectedError here
    async with connected(dsn) as conn:
        for run_id in runs:
            seqs = [
                r["seq"]
                for r in await conn.fetch("SELECT seq FROM run_events WHERE run_id = $1 ORDER BY seq", run_id)
            ]
            assert seqs == list(range(1, written[run_id] + 1))
            row_seq, head_seq = await conn.fetchrow(
                "SELECT r.last_seq, h.last_seq FROM run_streams AS r CROSS JOIN LATERAL "
                "pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h WHERE r.run_id = $1",
                run_id,
            )
            assert head_seq == written[run_id]
            assert 0 <= head_seq - row_seq < 256  # the row stays fewer than 256 events behind


async def test_each_run_of_a_batch_is_numbered_from_its_own_last_seq_in_the_batchs_order(dsn: str) -> None:
    async with connected(dsn) as conn:
        await append(conn, ["b", "b"])
        rows = await append(conn, ["a", "b", "a", "c", "b"])
    assert [(r["ord"], r["seq"]) for r in rows] == [(1, 1), (2, 3), (3, 2), (4, 1), (5, 4)]


async def test_a_runs_events_after_its_first_terminal_in_the_batch_are_refused_and_others_go_on(
    dsn: str,
) -> None:
    async with connected(dsn) as conn:
        rows = await append(conn, ["a", "b", "a", "a", "b"], terminal_at=2)
        assert [(r["seq"], r["refused"]) for r in rows] == [
            (1, None),
            (1, None),
            (2, None),
            (None, "terminal"),
            (2, None),
        ]
        run = await conn.fetchrow(
            "SELECT status, last_seq, terminal_seq, ended_at FROM run_streams WHERE run_id = 'a'"
        )
        assert (run["status"], run["last_seq"], run["terminal_seq"]) == ("ended", 2, 2)
        assert run["ended_at"] is not None
        again = await append(conn, ["a"])
        assert (again[0]["seq"], again[0]["refused"]) == (None, "terminal")


async def test_one_existing_run_takes_its_events_in_place_order_up_to_its_first_terminal(dsn: str) -> None:
    """The short way of revision 0011 (one run whose row exists) keeps the rules of the general
    way: seqs from the run's last, the first terminal ends it, later events are refused."""
    async with connected(dsn) as conn:
        await append(conn, ["a"])
        rows = await append(conn, ["a", "a", "a"], terminal_at=1)
        assert [(r["ord"], r["seq"], r["refused"]) for r in rows] == [
            (1, 2, None),
            (2, 3, None),
            (3, None, "terminal"),
        ]
        run = await conn.fetchrow("SELECT status, last_seq, terminal_seq FROM run_streams WHERE run_id = 'a'")
        assert (run["status"], run["last_seq"], run["terminal_seq"]) == ("ended", 3, 3)


async def test_one_run_and_many_runs_chain_their_events_alike(dsn: str) -> None:
    """Every stored hash is the chain's link over the event and the previous hash, whether the
    event came alone, with its run's others (the short way) or with other runs' (the general way)."""

    async def append_distinct(conn: asyncpg.Connection, run_ids: list[str]) -> None:
        n = len(run_ids)
        datas = [f'{{"i": {i}, "n": {n}}}' for i in range(n)]
        await conn.fetch(APPEND, run_ids, [f"e{i}" for i in range(n)], datas, [False] * n, ["active"] * n)

    async with connected(dsn) as conn:
        await append_distinct(conn, ["a", "b"])  # new runs: the general way
        await append_distinct(conn, ["a", "a", "a"])  # one existing run: the short way
        await append_distinct(conn, ["b", "a", "b"])  # several runs: the general way
        for run_id in ("a", "b"):
            rows = await conn.fetch(
                "SELECT seq, created_ms, event, data::text AS data, hash FROM run_events "
                "WHERE run_id = $1 ORDER BY seq",
                run_id,
            )
            previous = GENESIS
            for row in rows:
                expected = link_hash(
                    previous, run_id, row["seq"], row["created_ms"], row["event"], row["data"]
                )
                assert row["hash"] == expected, (run_id, row["seq"])
                previous = expected
            assert (  # the run's head as pgbridge reads it (its row lags: revision 0012)
                await conn.fetchval(
                    "SELECT h.last_hash FROM run_streams AS r CROSS JOIN LATERAL pgbridge_run_head("
                    "r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h WHERE r.run_id = $1",
                    run_id,
                )
                == previous
            )


async def test_first_ms_is_set_by_the_first_event_of_a_run_that_held_none(dsn: str) -> None:
    async with connected(dsn) as conn:
        rows = await append(conn, ["a", "a"])
        first_ms = await conn.fetchval("SELECT first_ms FROM run_streams WHERE run_id = 'a'")
        assert first_ms == rows[0]["created_ms"]
        await append(conn, ["a"])
        assert await conn.fetchval("SELECT first_ms FROM run_streams WHERE run_id = 'a'") == first_ms


async def test_appends_to_a_run_that_holds_events_write_its_run_row_once_per_256_events_in_place(
    dsn: str,
) -> None:
    """An append leaves its run's row alone (revision 0012: the head is read from run_events)
    until the row would fall 256 events behind; then it writes it, and the update is HOT
    (revision 0010: no index covers a column it changes, and pages keep room)."""
    counters = (
        "SELECT pg_stat_get_xact_tuples_updated('run_streams'::regclass) AS updated,"
        " pg_stat_get_xact_tuples_hot_updated('run_streams'::regclass) AS hot"
    )
    async with connected(dsn) as conn:
        await append(conn, ["hot"])  # the run's first event also sets its first_ms (indexed)
        async with conn.transaction():  # counters read in one transaction: not flushed between
            before = await conn.fetchrow(counters)
            for _ in range(300):  # seqs 2..601: the row moves at 257 and at 513
                await append(conn, ["hot", "hot"])
            after = await conn.fetchrow(counters)
        row_seq = await conn.fetchval("SELECT last_seq FROM run_streams WHERE run_id = 'hot'")
    assert (after["updated"] - before["updated"], after["hot"] - before["hot"]) == (2, 2)
    assert row_seq == 513


async def test_no_index_of_run_streams_covers_a_column_every_append_changes(dsn: str) -> None:
    """Any such index, in its key, expression or predicate, makes every append's update of its
    run row a non-HOT one: new entries in every index of the table."""
    changed_by_every_append = {"last_seq", "last_ms", "last_hash", "updated_at", "awaiting_input_since"}
    async with connected(dsn) as conn:
        rows = await conn.fetch(
            "SELECT c.relname, a.attname FROM pg_index AS i"
            " JOIN pg_class AS c ON c.oid = i.indexrelid"
            " JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum > 0"
            " WHERE i.indrelid = 'run_streams'::regclass AND (a.attnum = ANY (i.indkey)"
            "   OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\\m' || a.attname || '\\M')"
            "   OR pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M'))"
        )
    covered = {(r["relname"], r["attname"]) for r in rows}
    assert {(index, column) for index, column in covered if column in changed_by_every_append} == set()
    assert ("run_streams_pkey", "run_id") in covered  # the query does see indexes and columns


#: The run row's columns an append moves (times compared for being set).
RUN_ROW = (
    "SELECT last_seq, first_seq, status, terminal_seq, first_ms IS NOT NULL AS has_first_ms, "
    "ended_at IS NOT NULL AS ended, awaiting_input_since FROM run_streams WHERE run_id = $1"
)
EVENTS = (
    "SELECT seq, event, data::text AS data, terminal, hash FROM run_events WHERE run_id = $1 ORDER BY seq"
)


async def test_a_batch_of_distinct_runs_is_stored_alike_set_based_and_by_the_loop(dsn: str) -> None:
    """Revision 0013: several runs, each once, in a read committed transaction, are numbered,
    chained and stored by one statement; in a caller's REPEATABLE READ transaction the function
    takes them one by one in its loop (revision 0012's way). Both store the same: seqs, data,
    hash chains (each from its own run id, so compared by their links), run rows written by the
    same rules (a first event, a status change, a terminal event, 256 events past the row)."""
    ways = {"set": "s", "loop": "l"}
    async with connected(dsn) as conn:
        for prefix in ways.values():  # run 2 holds 254 events: the batches below cross 256
            await append(conn, [f"{prefix}-{i}" for i in range(4)])
            for _ in range(253):
                await append(conn, [f"{prefix}-2"])
            await conn.execute(Queries.for_schema().mark_awaiting_input, f"{prefix}-1")
        for step in range(4):
            for way, prefix in ways.items():
                runs = [f"{prefix}-{i}" for i in (3, 0, 2, 1, 4)]  # run 4 is new at step 0
                terminal_at = 1 if step == 3 else None  # run 0 ends at the last step
                if way == "set":
                    rows = await append(conn, runs, terminal_at)
                else:
                    async with conn.transaction(isolation="repeatable_read"):
                        rows = await append(conn, runs, terminal_at)
                assert [(r["ord"], r["refused"]) for r in rows] == [(i, None) for i in range(1, 6)]
        for i in range(5):
            by_set, by_loop = (
                await conn.fetch(EVENTS, f"s-{i}"),
                await conn.fetch(EVENTS, f"l-{i}"),
            )
            assert [(r["seq"], r["data"], r["terminal"]) for r in by_set] == [
                (r["seq"], r["data"], r["terminal"]) for r in by_loop
            ]
            chain = GENESIS
            for r in by_set:  # the set-based way chains each event from the one before it
                stored = await conn.fetchrow(
                    "SELECT created_ms FROM run_events WHERE run_id = $1 AND seq = $2", f"s-{i}", r["seq"]
                )
                chain = link_hash(chain, f"s-{i}", r["seq"], stored["created_ms"], r["event"], r["data"])
                assert bytes(r["hash"]) == chain
            assert dict(await conn.fetchrow(RUN_ROW, f"s-{i}")) == dict(
                await conn.fetchrow(RUN_ROW, f"l-{i}")
            ), i
        assert (await conn.fetchrow(RUN_ROW, "s-2"))["last_seq"] == 257  # written once, 256 past the row
        assert (await conn.fetchrow(RUN_ROW, "s-0"))["terminal_seq"] == 5
