"""The wake payload, end to end: what ``notify_runs`` sends is what the listener decodes.

The payload is written in SQL only (pgbridge/sql/events.sql) and read in
Python only (:func:`pgbridge.engine.listen.decode_wake`): this runs the
statement on a real server, through the store function the notifier uses,
and decodes what a LISTEN connection receives, so the two cannot drift.
"""

from __future__ import annotations

import asyncio

import asyncpg

from pgbridge.connector import Database
from pgbridge.engine.listen import CarriedEvent, decode_wake, encode_carried
from pgbridge.lsn import parse_lsn
from pgbridge.sql.queries import Queries
from pgbridge.store import wakeups

HEADS: dict[str, int | None] = {
    "run-1": 7,
    "run with spaces": 7,
    "r": None,
    "an @odd * run id": 2**62,
    "é-ünïcode": 1,
}


async def test_every_payload_notify_runs_sends_decodes_to_its_run_seq_and_a_wal_position(dsn: str) -> None:
    channel = "pgbridge_test_wake"
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    db = Database(
        dsn,
        Queries.for_schema(),
        min_size=1,
        max_size=1,
        connect_timeout=10,
        command_timeout=10,
        statement_cache_size=10,
    )
    await db.open()
    try:
        await listener.add_listener(channel, lambda *args: received.put_nowait(args[-1]))
        before = parse_lsn(await listener.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
        await wakeups.notify_runs(db, channel, HEADS)
        after = parse_lsn(await listener.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
        payloads = [await asyncio.wait_for(received.get(), timeout=10) for _ in HEADS]
    finally:
        await db.close()
        await listener.close()

    decoded = [decode_wake(payload) for payload in payloads]
    assert [(wake.run_id, wake.seq) for wake in decoded] == list(HEADS.items())
    for wake in decoded:
        assert wake.lsn is not None and before <= wake.lsn <= after
        assert wake.events == ()


CARRIED: dict[str, tuple[CarriedEvent, ...]] = {
    "run with spaces": (
        (6, 1700000000000, "token", '{"text": "é \\" \\\\ x"}', False, 1699999999999),
        (7, 1700000000001, "end", "null", True, 1700000000000),
    ),
    "an @odd * run id\n": ((1, 1700000000002, "token", "[1, 2.5e3, true]", False, None),),
    "too big": (
        (3, 1700000000003, "token", '"' + "é" * 4_000 + '"', False, 1700000000002),
    ),  # over 8,000 bytes
}


async def test_a_wake_up_given_its_events_carries_them_exactly_when_they_fit(dsn: str) -> None:
    channel = "pgbridge_test_wake_carried"
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    db = Database(
        dsn,
        Queries.for_schema(),
        min_size=1,
        max_size=1,
        connect_timeout=10,
        command_timeout=10,
        statement_cache_size=10,
    )
    await db.open()
    try:
        await listener.add_listener(channel, lambda *args: received.put_nowait(args[-1]))
        heads = {run_id: events[-1][0] for run_id, events in CARRIED.items()}
        carried = {run_id: encode_carried(events) for run_id, events in CARRIED.items()}
        await wakeups.notify_runs(db, channel, heads, carried)
        payloads = [await asyncio.wait_for(received.get(), timeout=10) for _ in CARRIED]
    finally:
        await db.close()
        await listener.close()

    decoded = {wake.run_id: wake for wake in map(decode_wake, payloads)}
    assert decoded["run with spaces"].events == CARRIED["run with spaces"]
    assert decoded["an @odd * run id\n"].events == CARRIED["an @odd * run id\n"]
    assert decoded["too big"].events == ()  # woken all the same, to read
    assert {run_id: wake.seq for run_id, wake in decoded.items()} == heads
