"""Direct SQL the tests use to look at, or tamper with, the tables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection of the test's own, beside the bridge's."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def evict_prefix(dsn: str, run_id: str, keep_from_seq: int) -> None:
    """Delete a run's events before *keep_from_seq* with retention's own SQL,
    wake-up of its readers included."""
    from pgbridge.sql.queries import Queries, notify_channel

    queries = Queries.for_schema()
    sql = queries.retention
    async with connected(dsn) as conn:
        async with conn.transaction():
            (row,) = await conn.fetch(sql.lock_runs, [run_id])
            through = min(keep_from_seq - 1, row["last_seq"])
            if through >= row["first_seq"]:
                await conn.execute(sql.trim_run_prefixes, [run_id], [row["first_seq"]], [through])
        await conn.execute(queries.notify_runs, notify_channel("public"), [None], [run_id], [None])


async def append_without_notify(dsn: str, run_id: str, event: str, data_json: str) -> str:
    """Append an event as a publisher would, but send no NOTIFY (a lost wake-up)."""
    from pgbridge.sql.queries import Queries

    async with connected(dsn) as conn:
        row = await conn.fetchrow(
            Queries.for_schema().append_events, [run_id], [event], [data_json], [False], ["active"]
        )
    return f"{row['created_ms']}-{row['seq']}"


async def terminate_backends(dsn: str) -> int:
    """pg_terminate_backend every other connection to this test's database."""
    async with connected(dsn) as conn:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


async def connection_count(dsn: str) -> int:
    """Connections to this test's database, not counting the one asking."""
    async with connected(dsn) as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


async def find_event(dsn: str, run_id: str, data_text: str) -> str | None:
    """The ID of *run_id*'s event whose stored data is *data_text*, if any."""
    async with connected(dsn) as conn:
        row = await conn.fetchrow(
            "SELECT created_ms, seq FROM run_events WHERE run_id = $1 AND data::text = $2", run_id, data_text
        )
    return None if row is None else f"{row['created_ms']}-{row['seq']}"


async def run_head(dsn: str, run_id: str) -> asyncpg.Record | None:
    """A run's head (last_seq, last_ms, last_hash) as pgbridge reads it: its newest event, which
    appends no longer write into its row on every event (pgbridge_run_head, revision 0012)."""
    async with connected(dsn) as conn:
        return await conn.fetchrow(
            "SELECT h.* FROM run_streams AS r CROSS JOIN LATERAL "
            "pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h WHERE r.run_id = $1",
            run_id,
        )


async def run_row(dsn: str, run_id: str) -> asyncpg.Record | None:
    async with connected(dsn) as conn:
        return await conn.fetchrow("SELECT * FROM run_streams WHERE run_id = $1", run_id)


async def deletion_rows(dsn: str, run_id: str) -> list[asyncpg.Record]:
    """The records of *run_id*'s deletions (run_deletions, revision 0009), oldest first."""
    async with connected(dsn) as conn:
        return await conn.fetch("SELECT * FROM run_deletions WHERE run_id = $1 ORDER BY deleted_at", run_id)


async def count_runs(dsn: str) -> int:
    async with connected(dsn) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM run_streams"))


async def event_rows(dsn: str, run_id: str) -> list[asyncpg.Record]:
    async with connected(dsn) as conn:
        return await conn.fetch(
            "SELECT seq, created_ms, event, data::text AS data, terminal FROM run_events "
            "WHERE run_id = $1 ORDER BY seq",
            run_id,
        )


async def table_contents(dsn: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Every row of both tables, in a stable order."""
    async with connected(dsn) as conn:
        runs = await conn.fetch("SELECT * FROM run_streams ORDER BY run_id")
        events = await conn.fetch(
            "SELECT run_id, seq, created_ms, event, data::text AS data, terminal "
            "FROM run_events ORDER BY run_id, seq"
        )
    return runs, events


@asynccontextmanager
async def guard_lifted(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction in which the append-only guard of run_events is off.

    Only the table's owner can do this (the tests connect as the owner):
    what an auditor's tampering scenarios, and tests that fake the passing
    of time, need.
    """
    async with conn.transaction():
        await conn.execute("ALTER TABLE run_events DISABLE TRIGGER run_events_append_only")
        yield
        await conn.execute("ALTER TABLE run_events ENABLE TRIGGER run_events_append_only")


async def backdate_events(dsn: str, run_id: str, through_seq: int, seconds: float) -> None:
    """Make a run's events up to *through_seq* look *seconds* older (created_ms, first_ms).

    Their hashes are not recomputed: the chain of a backdated run no longer verifies."""
    shift = int(seconds * 1000)
    async with connected(dsn) as conn, guard_lifted(conn):
        await conn.execute(
            "UPDATE run_events SET created_ms = created_ms - $3 WHERE run_id = $1 AND seq <= $2",
            run_id,
            through_seq,
            shift,
        )
        await conn.execute(
            "UPDATE run_streams SET first_ms = first_ms - $3 "
            "WHERE run_id = $1 AND first_seq <= $2 AND first_seq <= last_seq",
            run_id,
            through_seq,
            shift,
        )
        await conn.execute(
            "UPDATE run_streams SET last_ms = last_ms - $3 WHERE run_id = $1 AND last_seq <= $2",
            run_id,
            through_seq,
            shift,
        )


async def backdate_run(dsn: str, run_id: str, seconds: float) -> None:
    """Make a run's last activity, and its end if it ended, *seconds* older.

    An ended run's row says when it ended and last changed: those move. An open
    run's last activity is also its newest event's time (appends leave its row
    alone, revision 0012), so its events' times move too, and their hashes are
    chained again over the new times (from the last deleted event's hash): the
    chain still verifies, but their IDs change with their times."""
    from pgbridge.audit.chain import GENESIS, link_hash

    shift = int(seconds * 1000)
    async with connected(dsn) as conn, guard_lifted(conn):
        row = await conn.fetchrow(
            "UPDATE run_streams SET updated_at = updated_at - make_interval(secs => $2), "
            "ended_at = ended_at - make_interval(secs => $2) WHERE run_id = $1 "
            "RETURNING terminal_seq, last_seq, trimmed_hash",
            run_id,
            float(seconds),
        )
        if row is None or row["terminal_seq"] is not None:
            return
        await conn.execute(
            "UPDATE run_streams SET first_ms = first_ms - $2, last_ms = last_ms - $2, "
            "trimmed_ms = trimmed_ms - $2 WHERE run_id = $1",
            run_id,
            shift,
        )
        events = await conn.fetch(
            "UPDATE run_events SET created_ms = created_ms - $2 WHERE run_id = $1 "
            "RETURNING seq, created_ms, event, data::text AS data",
            run_id,
            shift,
        )
        chain = row["trimmed_hash"] or GENESIS
        hashes: dict[int, bytes] = {}
        for event in sorted(events, key=lambda e: e["seq"]):
            chain = link_hash(chain, run_id, event["seq"], event["created_ms"], event["event"], event["data"])
            hashes[event["seq"]] = chain
        await conn.executemany(
            "UPDATE run_events SET hash = $3 WHERE run_id = $1 AND seq = $2",
            [(run_id, seq, digest) for seq, digest in hashes.items()],
        )
        if row["last_seq"] in hashes:
            await conn.execute(
                "UPDATE run_streams SET last_hash = $2 WHERE run_id = $1", run_id, hashes[row["last_seq"]]
            )


async def hold_retention_lock(conn: asyncpg.Connection, schema: str = "public") -> bool:
    """Take the retention pass lock on *conn*, as a pass in another process would."""
    from pgbridge.sql.queries import Queries

    return bool(await conn.fetchval(Queries.for_schema(schema).retention.try_lock, schema))


async def stream_row(dsn: str, run_id: str) -> asyncpg.Record | None:
    """A run's row, with ``events``: how many of its events run_events holds."""
    async with connected(dsn) as conn:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT r.*, (SELECT count(*) FROM run_events AS e WHERE e.run_id = r.run_id) AS events "
            "FROM run_streams AS r WHERE r.run_id = $1",
            run_id,
        )
    return row


async def stored_events(conn: asyncpg.Connection, run_id: str) -> list[asyncpg.Record]:
    """*run_id*'s rows in ``run_events`` as stored, in seq order (data as its JSON text)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, created_ms, event, data::text AS data, terminal, hash FROM run_events "
        "WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    return rows


def assert_chained(run_id: str, rows: list[asyncpg.Record]) -> None:
    """Every stored hash is the audit chain's link over its event and the previous hash."""
    from pgbridge.audit.chain import GENESIS, link_hash

    previous = GENESIS
    for row in rows:
        previous = link_hash(previous, run_id, row["seq"], row["created_ms"], row["event"], row["data"])
        assert bytes(row["hash"]) == previous, f"{run_id} seq {row['seq']}"


async def wait_until_blocked(dsn: str, pid: int) -> None:
    """Wait until the backend *pid* waits for a lock (a row another transaction holds)."""
    async with connected(dsn) as watcher:
        for _ in range(500):
            if await watcher.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
            ):
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")
