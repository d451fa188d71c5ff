"""What synchronous replication costs a publish: asynchronous against synchronous, on loopback.

    python benchmarks/replication_cost.py                   # 400 publishes, 8 publishers, each mode
    python benchmarks/replication_cost.py --json out.json

Builds a primary and a streaming standby from the machine's PostgreSQL server
binaries (tests/support/topology.py: ``pg_config --bindir``, servers run as the
``postgres`` user when run as root; fsync off on both, as in the tests), then
for each replication mode publishes through one bridge on the primary:

* ``async``: ``synchronous_standby_names`` empty: a commit is answered once it
  is in the primary's WAL; an asynchronous failover can lose what the standby
  had not received (docs/reliability.md);
* ``sync``: ``synchronous_standby_names = '*'``, ``synchronous_commit = on``:
  answered once the standby has written and flushed it: a failover loses no
  acknowledged event;
* ``remote_apply``: answered once the standby has replayed it (a read there
  sees it at once).

Per mode: the latency of ``--events`` lone publishes one after another (p50,
p99), and the throughput of ``--publishers`` concurrent publishers (each its
own run, group commit batching what piles up) for ``--seconds``. Loopback and
fsync off leave only the extra round trip and the standby's work: with real
disks and a network between the servers add the standby's flush and the
network's round trip to every commit. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgbridge import PostgresStreamBridge, migrate
from tests.support.topology import running_topology, wait_for_standby

MODES = {
    "async": ("", "on"),
    "sync": ("*", "on"),
    "remote_apply": ("*", "remote_apply"),
}


async def configure(primary: str, names: str, commit: str) -> None:
    conn = await asyncpg.connect(primary)
    try:
        await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        await conn.execute(f"ALTER SYSTEM SET synchronous_commit = '{commit}'")
        await conn.execute("SELECT pg_reload_conf()")
        want = "sync" if names else "async"
        query = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = $1"
        deadline = time.monotonic() + 30
        while await conn.fetchval(query, want) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby never became {want}")
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


async def measure(dsn: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    async with PostgresStreamBridge(dsn) as bridge:
        for _ in range(20):  # warm the pool and the plans
            await bridge.publish(f"{mode}-warm", "token", {"i": 0})
        latencies = []
        for i in range(args.events):
            started = time.perf_counter()
            await bridge.publish(f"{mode}-lone", "token", {"i": i})
            latencies.append((time.perf_counter() - started) * 1000)
        stop_at = time.perf_counter() + args.seconds
        counts = [0] * args.publishers

        async def publisher(n: int) -> None:
            while time.perf_counter() < stop_at:
                await bridge.publish(f"{mode}-busy-{n}", "token", {"i": counts[n]})
                counts[n] += 1

        started = time.perf_counter()
        await asyncio.gather(*(publisher(n) for n in range(args.publishers)))
        elapsed = time.perf_counter() - started
    return {
        "mode": mode,
        "lone_p50_ms": percentile(latencies, 0.5),
        "lone_p99_ms": percentile(latencies, 0.99),
        "lone_mean_ms": round(statistics.fmean(latencies), 3),
        "concurrent_events_per_s": round(sum(counts) / elapsed),
    }


async def main(args: argparse.Namespace) -> None:
    results = []
    with running_topology(bouncer=False) as topology:
        conn = await asyncpg.connect(topology.primary())
        try:
            await conn.execute('CREATE DATABASE "bench"')
        finally:
            await conn.close()
        dsn = topology.primary("bench")
        await migrate(dsn)
        await wait_for_standby(topology)
        for _ in range(args.rounds):
            for mode, (names, commit) in MODES.items():
                await configure(topology.primary(), names, commit)
                result = await measure(dsn, mode, args)
                results.append(result)
                print(
                    f"{mode:13} lone publish p50 {result['lone_p50_ms']} ms, p99 {result['lone_p99_ms']} ms; "
                    f"{args.publishers} publishers: {result['concurrent_events_per_s']} events/s",
                    flush=True,
                )
    if args.json:
        report = json.dumps({"workload": vars(args), "results": results}, indent=1) + "\n"
        Path(args.json).write_text(report)  # noqa: ASYNC240 (once, at the end)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=400, help="lone publishes per mode")
    parser.add_argument("--publishers", type=int, default=8, help="concurrent publishers per mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the concurrent ones run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the modes (noise)")
    parser.add_argument("--json", help="write the figures here")
    asyncio.run(main(parser.parse_args()))
