"""The fragment ``event_ms``: ``pgbridge_event_ms()`` written out, with the same rule.

The plain append statements stamp events with the fragment, not the schema's
function, because a call to that VOLATILE SQL function is planned anew by
every statement that makes it (pgbridge/sql/fragments.sql). Both must give an
event time the timeline's parity (docs/behaviour.md §6: a cursor naming an
event a failover lost resolves unknown).
"""

from __future__ import annotations

import asyncio

from pgbridge.sql import FRAGMENTS_FILE, statements_of
from tests.support.sql_helpers import connected

EVENT_MS = {fragment.name: fragment.text for fragment in statements_of(FRAGMENTS_FILE)}["event_ms"]
TIMELINE_PARITY = (
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int % 2"
)
CLOCK_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


async def test_event_ms_takes_the_timeline_parity_as_the_function_does(dsn: str) -> None:
    async with connected(dsn) as conn:
        parity = await conn.fetchval(TIMELINE_PARITY)
        for _ in range(20):  # across millisecond boundaries: a stamp without the rule is either
            row = await conn.fetchrow(f"SELECT {EVENT_MS} AS written_out, pgbridge_event_ms() AS called")
            assert row is not None
            assert (row["written_out"] % 2, row["called"] % 2) == (parity, parity)
            await asyncio.sleep(0.0015)


async def test_event_ms_is_the_clock_in_milliseconds(dsn: str) -> None:
    async with connected(dsn) as conn:
        row = await conn.fetchrow(f"SELECT {CLOCK_MS} AS before, {EVENT_MS} AS stamp, {CLOCK_MS} AS after")
    assert row is not None
    assert row["before"] <= row["stamp"] <= row["after"] + 1  # the parity rule adds at most 1
