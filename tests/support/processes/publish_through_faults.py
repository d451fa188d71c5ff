"""A publisher that keeps going through faults, reporting each publish's outcome.

Usage: python -m tests.support.processes.publish_through_faults DSN RUN COUNT --tag T [--delay S]

Prints one line per publish: ``ok <i> <id>`` (committed), ``unknown <i>``
(PublishOutcomeUnknownError: may or may not be stored) or ``failed <i>``
(any other error: not stored). The data of event i is {"from": T, "i": i},
so the test can look each one up in the table.
"""

from __future__ import annotations

import argparse
import asyncio

from pgbridge import PostgresStreamBridge, PublishOutcomeUnknownError, StreamBridgeError


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("run_id")
    parser.add_argument("count", type=int)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--delay", type=float, default=0.01)
    args = parser.parse_args()
    async with PostgresStreamBridge(args.dsn, publish_retry_timeout=20) as bridge:
        print("ready", flush=True)
        for index in range(args.count):
            try:
                event_id = await bridge.publish(args.run_id, "token", {"from": args.tag, "i": index})
            except PublishOutcomeUnknownError:
                print(f"unknown {index}", flush=True)
            except StreamBridgeError:
                print(f"failed {index}", flush=True)
            else:
                print(f"ok {index} {event_id}", flush=True)
            await asyncio.sleep(args.delay)


asyncio.run(main())
