"""Per-process figures for the capacity model of docs/scaling.md, measured on a real PostgreSQL.

    python benchmarks/capacity.py                       # embedded PostgreSQL
    python benchmarks/capacity.py --dsn URI --json docs/figures/capacity.json

In a scratch database it creates and drops, from this one process:

1. connections: a bridge with default options and ``--subscribers`` idle
   subscriptions over ``--runs`` runs; its client connections counted in
   ``pg_stat_activity`` (they must not grow with subscribers);
2. memory: this process's RSS before and after opening those subscriptions,
   per subscription;
3. throughput: ``--publishers`` concurrent publishing tasks on as many runs
   for ``--seconds``, with a second bridge following every run (so each
   event costs its append, its NOTIFY and a read); events/s, the CPU this
   process used, and the whole machine's busy cores (PostgreSQL included),
   giving events/s per busy core;
4. NOTIFY queue: ``pg_notification_queue_usage()`` sampled during (3), and
   the NOTIFY payload bytes per event, to size how long a stuck listener
   may lag before the 8 GB queue fills and NOTIFYs fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from pgbridge import HEARTBEAT_SENTINEL, PostgresStreamBridge
from pgbridge.bench.servers import embedded_server, scratch_database
from pgbridge.embedded import dsn_from_environment

#: PostgreSQL's NOTIFY queue: 8 GB of SLRU pages (max_notify_queue_pages is fixed before PG 17).
NOTIFY_QUEUE_BYTES = 8 * 1024**3


async def client_connections(admin: asyncpg.Connection, database: str) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()",
        database,
    )
    return count


async def idle_subscriptions(
    dsn: str, admin: asyncpg.Connection, runs: int, subscribers: int, idle_seconds: float
) -> dict[str, Any]:
    database = dsn.rsplit("/", 1)[-1]
    process = psutil.Process()
    async with PostgresStreamBridge(dsn) as bridge:
        for run in range(runs):
            await bridge.publish(f"idle-{run}", "token", {"i": 0})
        connections_started = await client_connections(admin, database)
        rss_before = process.memory_info().rss
        streams = [bridge.subscribe(f"idle-{i % runs}", heartbeat_interval=3600) for i in range(subscribers)]
        firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
        await asyncio.gather(*firsts)
        await asyncio.sleep(2 * bridge.options.poll_interval)  # a few polls while idle
        rss_after = process.memory_info().rss
        connections_with_subscribers = await client_connections(admin, database)
        statements_before = bridge.statements_run
        await asyncio.sleep(idle_seconds)
        idle_statements_per_s = (bridge.statements_run - statements_before) / idle_seconds
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
    return {
        "runs": runs,
        "subscribers": subscribers,
        "pool_max_size": 10,
        "connections_after_start": connections_started,
        "connections_with_subscribers": connections_with_subscribers,
        "rss_per_subscriber_bytes": (rss_after - rss_before) / subscribers,
        "idle_statements_per_second": idle_statements_per_s,
    }


async def throughput(dsn: str, admin: asyncpg.Connection, publishers: int, seconds: float) -> dict[str, Any]:
    process = psutil.Process()
    runs = [f"load-{i}" for i in range(publishers)]
    usage: list[float] = []
    async with PostgresStreamBridge(dsn) as writer, PostgresStreamBridge(dsn) as reader:
        delivered = 0

        async def follow(run: str) -> None:
            nonlocal delivered
            async for item in reader.subscribe(run, heartbeat_interval=3600):
                if item is not HEARTBEAT_SENTINEL:
                    delivered += 1

        followers = [asyncio.create_task(follow(run)) for run in runs]
        stop = asyncio.Event()
        published = 0
        payload_bytes = 0

        async def publish(run: str) -> None:
            nonlocal published, payload_bytes
            while not stop.is_set():
                event_id = await writer.publish(run, "token", {"text": "x" * 150})
                published += 1
                # The NOTIFY payload: "<seq>@<lsn> <run_id>" (lsn about 10 characters).
                payload_bytes += len(event_id.split("-")[1]) + 12 + len(run)

        async def sample() -> None:
            while not stop.is_set():
                usage.append(await admin.fetchval("SELECT pg_notification_queue_usage()"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)

        psutil.cpu_percent(None)
        cpu_before = process.cpu_times()
        notifies_before = writer.statements_run
        started = time.perf_counter()
        tasks = [asyncio.create_task(publish(run)) for run in runs] + [asyncio.create_task(sample())]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        machine_busy = psutil.cpu_percent(None) / 100 * psutil.cpu_count()
        cpu_after = process.cpu_times()
        writer_statements = writer.statements_run - notifies_before
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    process_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    events_per_s = published / elapsed
    return {
        "publishers": publishers,
        "seconds": elapsed,
        "events": published,
        "events_per_second": events_per_s,
        "this_process_cpu_cores": process_cpu / elapsed,
        "machine_busy_cores": machine_busy,
        "events_per_second_per_busy_core": events_per_s / machine_busy if machine_busy else None,
        "writer_statements_per_event": writer_statements / published if published else None,
        "notify_payload_bytes_per_event": payload_bytes / published if published else None,
        "notify_queue_usage_max": max(usage) if usage else None,
        "notify_queue_usage_samples": len(usage),
    }


async def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    admin = await asyncpg.connect(dsn)
    try:
        server = await admin.fetchval("SHOW server_version")
        max_connections = int(await admin.fetchval("SHOW max_connections"))
        idle = await idle_subscriptions(dsn, admin, args.runs, args.subscribers, args.idle_seconds)
        load = await throughput(dsn, admin, args.publishers, args.seconds)
    finally:
        await admin.close()
    return {
        "machine": {
            "cpus": psutil.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgresql": server,
            "max_connections": max_connections,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        "idle": idle,
        "load": load,
        "notify_queue_bytes": NOTIFY_QUEUE_BYTES,
    }


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as servers:
        admin_dsn = args.dsn or dsn_from_environment() or servers.enter_context(embedded_server())
        async with scratch_database(admin_dsn) as dsn:
            return await measure(dsn, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing server (default: $PGBRIDGE_DSN, else an embedded one)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--publishers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="of publishing load")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="to count idle statements")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(benchmark(args))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
