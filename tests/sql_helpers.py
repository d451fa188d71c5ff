"""Direct SQL the tests use to look at, or tamper with, the tables."""

from __future__ import annotations

import asyncpg


async def evict_prefix(dsn: str, run_id: str, keep_from_seq: int) -> None:
    """Delete a run's events before *keep_from_seq* the way retention does,
    wake-up of its readers included."""
    from pgbridge.listener import encode_wake
    from pgbridge.queries import notify_channel

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM run_events WHERE run_id = $1 AND seq < $2", run_id, keep_from_seq)
            await conn.execute(
                "UPDATE run_streams SET first_seq = GREATEST(first_seq, $2) WHERE run_id = $1",
                run_id,
                keep_from_seq,
            )
        await conn.execute("SELECT pg_notify($1, $2)", notify_channel("public"), encode_wake(run_id, None))
    finally:
        await conn.close()


async def append_without_notify(dsn: str, run_id: str, event: str, data_json: str) -> str:
    """Append an event as a publisher would, but send no NOTIFY (a lost wake-up)."""
    from pgbridge.queries import Queries

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            Queries.for_schema().append_event, run_id, event, data_json, False, "active"
        )
    finally:
        await conn.close()
    return f"{row['created_ms']}-{row['seq']}"


async def terminate_backends(dsn: str) -> int:
    """pg_terminate_backend every other connection to this test's database."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def connection_count(dsn: str) -> int:
    """Connections to this test's database, not counting the one asking."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def find_event(dsn: str, run_id: str, data_text: str) -> str | None:
    """The ID of *run_id*'s event whose stored data is *data_text*, if any."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT created_ms, seq FROM run_events WHERE run_id = $1 AND data::text = $2", run_id, data_text
        )
    finally:
        await conn.close()
    return None if row is None else f"{row['created_ms']}-{row['seq']}"


async def run_row(dsn: str, run_id: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT * FROM run_streams WHERE run_id = $1", run_id)
    finally:
        await conn.close()


async def count_runs(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM run_streams"))
    finally:
        await conn.close()


async def event_rows(dsn: str, run_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT seq, created_ms, event, data::text AS data, terminal FROM run_events "
            "WHERE run_id = $1 ORDER BY seq",
            run_id,
        )
    finally:
        await conn.close()


async def table_contents(dsn: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Every row of both tables, in a stable order."""
    conn = await asyncpg.connect(dsn)
    try:
        runs = await conn.fetch("SELECT * FROM run_streams ORDER BY run_id")
        events = await conn.fetch(
            "SELECT run_id, seq, created_ms, event, data::text AS data, terminal "
            "FROM run_events ORDER BY run_id, seq"
        )
    finally:
        await conn.close()
    return runs, events
