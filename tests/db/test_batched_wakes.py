"""The append statements' batched wake-ups, end to end: several runs to a NOTIFY payload.

``append_runs_once`` (and ``append_one_event``) send their runs' wake-ups in
the batched form (the CTEs ``carried`` and ``sent`` of append_runs_once,
pgbridge/sql/events.sql), read by :func:`pgbridge.engine.listen.decode_wakes`:
this runs the statement on a real server and decodes what a LISTEN
connection receives, so the two cannot drift.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg

from pgbridge.engine.listen import Wake, decode_wakes
from pgbridge.sql.queries import Queries
from tests.support.sql_helpers import connected

QUERIES = Queries.for_schema()
CHANNEL = "pgbridge_test_batched"
#: Run ids a payload must carry exactly: spaces, quotes, a backslash, a newline, Unicode.
ODD_RUN_IDS = ['a run "quoted"', "back\\slash", "new\nline", "é-ünïcode", "=0/0 [not, json"]


async def _existing(conn: asyncpg.Connection, run_ids: list[str]) -> None:
    """Each run gets a first event through the function (append_runs_once takes runs that exist)."""
    n = len(run_ids)
    await conn.fetch(QUERIES.append_events, run_ids, ["hello"] * n, ["{}"] * n, [False] * n, ["active"] * n)


async def _batch_with_wakes(
    dsn: str, run_ids: list[str], datas: list[str]
) -> tuple[list[asyncpg.Record], list[str]]:
    """append_runs_once's rows for one event per run, and the payloads its commit sent."""
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(CHANNEL, lambda *args: received.put_nowait(args[-1]))
        async with connected(dsn) as conn:
            await _existing(conn, run_ids)
            n = len(run_ids)
            arrays = (run_ids, ["token"] * n, datas, [False] * n, ["active"] * n)
            rows = await conn.fetch(QUERIES.append_runs_once, *arrays, None, CHANNEL)
        woken = sum(1 for row in rows if row["notified"])
        payloads: list[str] = []
        wakes = 0
        while wakes < woken:
            payloads.append(await asyncio.wait_for(received.get(), 10))
            wakes += len(decode_wakes(payloads[-1]))
        await asyncio.sleep(0.1)
        assert received.empty()
    finally:
        await listener.close()
    return list(rows), payloads


async def test_a_batch_of_many_runs_wakes_them_in_a_few_payloads_carrying_every_event(dsn: str) -> None:
    run_ids = [f"run-{i:03d}" for i in range(60)]
    datas = [json.dumps({"i": i, "text": "token " * 30}) for i in range(60)]
    rows, payloads = await _batch_with_wakes(dsn, run_ids, datas)
    assert len(rows) == 60 and all(row["notified"] for row in rows)
    assert len(payloads) < 10
    assert all(len(payload.encode()) < 8000 for payload in payloads)
    wakes = [wake for payload in payloads for wake in decode_wakes(payload)]
    by_ord = {row["ord"]: row for row in rows}
    expected = [
        Wake(
            run_id,
            2,
            wakes[0].lsn,
            ((2, by_ord[i + 1]["created_ms"], "token", datas[i], False, by_ord[i + 1]["prev_ms"]),),
        )
        for i, run_id in enumerate(run_ids)
    ]
    assert [(w.run_id, w.seq, w.events) for w in wakes] == [(w.run_id, w.seq, w.events) for w in expected]


async def test_batched_payloads_carry_odd_run_ids_and_data_exactly(dsn: str) -> None:
    datas = [json.dumps({"text": 'é " \\ \n x'}), "[1, 2.5e3, true]", "null", '"a string"', "{}"]
    _, payloads = await _batch_with_wakes(dsn, ODD_RUN_IDS, datas)
    wakes = {wake.run_id: wake for payload in payloads for wake in decode_wakes(payload)}
    assert set(wakes) == set(ODD_RUN_IDS)
    for run_id, data in zip(ODD_RUN_IDS, datas, strict=True):
        assert wakes[run_id].events[0][3] == data


async def test_an_event_too_big_for_a_payload_is_left_out_and_the_others_still_fit(dsn: str) -> None:
    big = json.dumps({"text": "x" * 7_900})
    large = json.dumps({"text": "y" * 5_000})
    run_ids = ["a-big", "b-large", "c-small", "d-small"]
    rows, payloads = await _batch_with_wakes(dsn, run_ids, [big, large, "{}", "{}"])
    notified = {run_ids[row["ord"] - 1]: row["notified"] for row in rows}
    assert notified == {"a-big": False, "b-large": True, "c-small": True, "d-small": True}
    assert all(len(payload.encode()) < 8000 for payload in payloads)
    woken = sorted(wake.run_id for payload in payloads for wake in decode_wakes(payload))
    assert woken == ["b-large", "c-small", "d-small"]
