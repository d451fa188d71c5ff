"""An application process: one tool call's row and event in one transaction (examples/tool_calls).

Usage: python -m tests.support.processes.tool_call_in_transaction DSN RUN CALL_ID [--hold]

Prints ``written <event id>`` once the row and the event are written in the
open transaction; then commits and prints ``committed <event id>``, or, with
``--hold``, waits there forever (for the test to SIGKILL it before the commit).
"""

from __future__ import annotations

import argparse
import asyncio

from examples.tool_calls.__main__ import sqlalchemy_engine
from examples.tool_calls.store import metadata, record_tool_call
from pgbridge import PostgresStreamBridge


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("run_id")
    parser.add_argument("call_id")
    parser.add_argument("--hold", action="store_true", help="never commit: wait to be killed")
    args = parser.parse_args()
    engine = sqlalchemy_engine(args.dsn)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with PostgresStreamBridge(args.dsn) as bridge, engine.begin() as conn:
        event_id = await record_tool_call(conn, bridge, args.run_id, args.call_id, "search", {"hits": 3})
        print(f"written {event_id}", flush=True)
        if args.hold:
            await asyncio.Event().wait()
    print(f"committed {event_id}", flush=True)
    await engine.dispose()


asyncio.run(main())
