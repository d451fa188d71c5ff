"""A publisher or a subscriber process of the many-process test (tests/acceptance/test_many_processes.py).

Usage:
  python -m tests.support.processes.scale_worker publish DSN RUN... --events N [bridge options]
  python -m tests.support.processes.scale_worker subscribe DSN RUN... [bridge options]

``publish`` publishes N token events then the terminal to each run, the runs
concurrently, and prints one JSON object: run id -> the acknowledged IDs.
``subscribe`` prints ``ready`` once it follows every run, then reads each run
from its start to its terminal and prints run id -> [[id, event, data], ...].
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from pgbridge import HEARTBEAT_SENTINEL, PostgresStreamBridge, StreamStatus


async def publish(bridge: PostgresStreamBridge, runs: list[str], events: int) -> dict[str, list[str]]:
    acknowledged: dict[str, list[str]] = {run: [] for run in runs}

    async def one_run(run: str) -> None:
        for i in range(events):
            acknowledged[run].append(await bridge.publish(run, "token", {"run": run, "i": i}))
        acknowledged[run].append(await bridge.publish_terminal(run, StreamStatus.ENDED, {"events": events}))

    await asyncio.gather(*(one_run(run) for run in runs))
    return acknowledged


async def subscribe(bridge: PostgresStreamBridge, runs: list[str]) -> dict[str, list[Any]]:
    received: dict[str, list[Any]] = {run: [] for run in runs}
    streams = {run: bridge.subscribe(run, heartbeat_interval=5) for run in runs}
    first_items = {run: asyncio.ensure_future(anext(stream)) for run, stream in streams.items()}
    await asyncio.sleep(0.5)  # every subscription registered and waiting (the runs do not exist yet)
    print("ready", flush=True)

    async def one_run(run: str) -> None:
        item = await first_items[run]
        async for later in _chain(item, streams[run]):
            if later is HEARTBEAT_SENTINEL:
                continue
            received[run].append([later.id, later.event, later.data])

    await asyncio.gather(*(one_run(run) for run in runs))
    return received


async def _chain(first: Any, rest: Any) -> Any:
    yield first
    async for item in rest:
        yield item


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["publish", "subscribe"])
    parser.add_argument("dsn")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--listen-dsn")
    parser.add_argument("--replica-dsn")
    parser.add_argument("--pool-max-size", type=int, default=4)
    args = parser.parse_args()
    options: dict[str, Any] = {
        "statement_cache_size": 0,
        "pool_min_size": 1,
        "pool_max_size": args.pool_max_size,
        "listen_dsn": args.listen_dsn,
        "replica_dsn": args.replica_dsn,
        "command_timeout": 110,
    }
    async with PostgresStreamBridge(args.dsn, **options) as bridge:
        if args.role == "publish":
            print("ready", flush=True)
            result: dict[str, Any] = await publish(bridge, args.runs, args.events)
        else:
            result = await subscribe(bridge, args.runs)
        stats = {"reads_from_primary": bridge.reads_from_primary}
        stats["reads_from_replica"] = bridge.reads_from_replica
    print(json.dumps({"result": result, "stats": stats}), flush=True)


asyncio.run(main())
