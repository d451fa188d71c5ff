"""A subscriber in its own OS process that reports how its subscription ends.

Usage: python -m tests.support.processes.follow_run DSN RUN [--cursor ID]

Prints ``resume <status> <next_offset>`` once it resolved its cursor, then one
line per item: ``ev <id> <data as JSON>`` for an event, ``gap <data as JSON>``
for a gap marker; and how it ended: ``end`` after the terminal event (or
``END_SENTINEL``), ``changed <message>`` when the run's history changed under
it (RunHistoryChangedError, exit 3), ``error <message>`` on any other
StreamBridgeError (exit 4). Heartbeats are not printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from pgbridge import (
    END_SENTINEL,
    GAP_EVENT,
    HEARTBEAT_SENTINEL,
    PostgresStreamBridge,
    RunHistoryChangedError,
    StreamBridgeError,
)


async def follow(dsn: str, run_id: str, cursor: str | None) -> int:
    async with PostgresStreamBridge(dsn, poll_interval=0.5, connect_timeout=30) as bridge:
        resume = await bridge.resolve(run_id, cursor)
        print(f"resume {resume.status} {resume.next_offset}", flush=True)
        try:
            async for item in bridge.subscribe(run_id, last_event_id=cursor, heartbeat_interval=1.0):
                if item is HEARTBEAT_SENTINEL:
                    continue
                if item is END_SENTINEL:
                    break
                if item.event == GAP_EVENT:
                    print(f"gap {json.dumps(item.data)}", flush=True)
                    continue
                print(f"ev {item.id} {json.dumps(item.data)}", flush=True)
                if item.event in ("end", "cancel", "error"):
                    break
        except RunHistoryChangedError as exc:
            print(f"changed {exc}", flush=True)
            return 3
        except StreamBridgeError as exc:
            print(f"error {exc}", flush=True)
            return 4
    print("end", flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("run_id")
    parser.add_argument("--cursor")
    args = parser.parse_args()
    sys.exit(asyncio.run(follow(args.dsn, args.run_id, args.cursor)))


main()
