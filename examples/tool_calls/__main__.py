"""``python -m examples.tool_calls [--dsn DSN]``: tool-call rows and their events, committed together.

A run makes three tool calls. Each one's result row (the application's
``tool_calls`` table) and its ``tool_result`` event are written in one
transaction with ``bridge.publish_in``; the second tool fails after its row
was written, so its transaction rolls back and neither its row nor its event
exists, nor any trace of it in the run's seqs. The run's ``end`` event
commits with the last update. A subscriber prints what it is sent, which is
only ever what committed; at the end, one SQL query joins each row with its
event.

Uses ``--dsn``, ``PGBRIDGE_DSN`` or ``DATABASE_URL``, else pgbridge's embedded
PostgreSQL (``pip install -e '.[examples]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from examples.tool_calls.store import metadata, record_tool_call, rows_with_their_events
from pgbridge import HEARTBEAT_SENTINEL, PostgresStreamBridge, StreamStatus, migrate
from pgbridge.embedded import dsn_from_environment, start_embedded


class ToolFailed(Exception):
    """The fake tool failed after the application had written its row."""


def sqlalchemy_engine(dsn: str) -> AsyncEngine:
    """A SQLAlchemy engine on the asyncpg driver for *dsn* (any DSN asyncpg takes, the
    embedded server's socket one included). An app would write ``postgresql+asyncpg://...``."""
    return create_async_engine("postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(dsn))


async def print_events(bridge: PostgresStreamBridge, run_id: str) -> None:
    """A reader: it only ever sees committed events."""
    async for event in bridge.subscribe(run_id):
        if event != HEARTBEAT_SENTINEL:
            print(f"  subscriber got {event.id} {event.event} {event.data}", flush=True)


async def run_tools(engine: AsyncEngine, bridge: PostgresStreamBridge, run_id: str) -> None:
    calls = [("search", {"hits": 3}), ("flaky", None), ("summarise", {"words": 42})]
    for number, (tool, result) in enumerate(calls, start=1):
        call_id = f"{run_id}-call-{number}"
        try:
            async with engine.begin() as conn:  # one transaction: the row and the event
                if result is None:
                    await record_tool_call(conn, bridge, run_id, call_id, tool, {"partial": True})
                    raise ToolFailed(f"{tool} failed after its row was written")
                event_id = await record_tool_call(conn, bridge, run_id, call_id, tool, result)
            print(f"{call_id}: committed, row and event {event_id}", flush=True)
        except ToolFailed as exc:
            print(f"{call_id}: rolled back ({exc}): no row, no event, no seq used", flush=True)
    async with engine.begin() as conn:
        end_id = await bridge.publish_terminal_in(conn, run_id, StreamStatus.ENDED, {"tool_calls": 2})
    print(f"{run_id}: ended with {end_id}", flush=True)


async def main(dsn: str) -> None:
    await migrate(dsn)  # for the example's convenience: in production, once per deploy
    engine = sqlalchemy_engine(dsn)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)  # the application's own table
        async with PostgresStreamBridge(dsn) as bridge:
            run_id = f"run-{uuid.uuid4().hex[:8]}"
            reader = asyncio.create_task(print_events(bridge, run_id))
            await run_tools(engine, bridge, run_id)
            await asyncio.wait_for(reader, 10)  # it stops at the end event
            async with engine.connect() as conn:
                print("each row beside its event (one SQL query over both tables):")
                for row in await rows_with_their_events(conn, run_id):
                    print(f"  {row.call_id:<24} {row.tool:<10} {row.event_id}")
    finally:
        await engine.dispose()


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.tool_calls", description=__doc__)
    parser.add_argument("--dsn", default=dsn_from_environment(), help="PostgreSQL URI (default: embedded)")
    args = parser.parse_args(argv)
    asyncio.run(main(args.dsn or start_embedded()))


if __name__ == "__main__":
    cli()
