"""A publisher in its own OS process: publish COUNT events to RUN, print each ID.

Usage: python -m tests.support.processes.publish_events DSN RUN COUNT [--end] [--delay S]
"""

from __future__ import annotations

import argparse
import asyncio

from pgbridge import PostgresStreamBridge


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("run_id")
    parser.add_argument("count", type=int)
    parser.add_argument("--end", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--tag", default="p")
    args = parser.parse_args()
    async with PostgresStreamBridge(args.dsn) as bridge:
        for index in range(args.count):
            event_id = await bridge.publish(args.run_id, "token", {"from": args.tag, "i": index})
            print(event_id, flush=True)
            if args.delay:
                await asyncio.sleep(args.delay)
        if args.end:
            print(await bridge.publish_end(args.run_id), flush=True)


asyncio.run(main())
