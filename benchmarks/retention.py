"""Retention cost and table bloat, measured on a real PostgreSQL.

    python benchmarks/retention.py                 # embedded PostgreSQL, 1M events, 5,000 runs
    python benchmarks/retention.py --dsn URI       # another server (a scratch database is made on it)

What it does, in a scratch database it creates and drops:

1. fill: ``--events`` events across ``--runs`` active runs, with COPY;
2. cost: passes of ``max_events_per_run`` that delete 0, then more and more
   events, each timed, on the full table: a pass should cost in proportion
   to what it deletes, not to the size of the table;
3. churn: a publisher process (real ``PostgresStreamBridge.publish`` calls,
   ``--concurrency`` at a time, to random runs) runs for ``--seconds`` while
   this process runs a retention pass every ``--interval`` seconds that keeps
   the newest events of each run; after each pass it records the rows and
   bytes of both tables (heap and indexes), dead tuples and autovacuum runs.
   Under steady churn the sizes must level off, not grow with time.

It prints markdown tables (for docs/retention.md) and, with ``--json``,
writes every figure to a file. Figures from a shared machine are noisy:
compare the shape (time per deleted event, sizes over time), not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from pgbridge import PostgresStreamBridge, RetentionPolicy
from pgbridge.audit.chain import GENESIS, link_hash
from pgbridge.bench.servers import embedded_server, scratch_database
from pgbridge.embedded import dsn_from_environment

#: Every rule off except the one a phase switches on (no ended runs here).
NO_TIME_RULES = {"ended_run_ttl": None, "tombstone_ttl": None}


@dataclass
class PassFigure:
    phase: str
    at_seconds: float
    events_deleted: int
    seconds: float
    events_in_table: int


@dataclass
class SizeFigure:
    at_seconds: float
    events_live: int
    events_dead: int
    events_heap_bytes: int
    events_index_bytes: int
    runs_total_bytes: int
    autovacuums: int
    vacuums: int


def _run_rows(run: int, per_run: int, now_ms: int) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    """One run's row and its events, hash chain included, as the bridge would store them."""
    run_id, prev, events = f"run-{run}", GENESIS, []
    for seq in range(1, per_run + 1):
        ms, data = now_ms - per_run + seq, f'{{"text": "token {seq}"}}'
        prev = link_hash(prev, run_id, seq, ms, "token", data)
        events.append((run_id, seq, ms, "token", data, False, prev))
    return (run_id, "active", per_run, now_ms, 1, now_ms - per_run + 1, prev), events


async def fill(dsn: str, events: int, runs: int) -> None:
    """*events* events spread evenly over *runs* active runs, written with COPY."""
    per_run = events // runs
    now_ms = int(time.time() * 1000)
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, runs, 500):
            batch = [_run_rows(r, per_run, now_ms) for r in range(start, min(start + 500, runs))]
            await conn.copy_records_to_table(
                "run_streams",
                columns=["run_id", "status", "last_seq", "last_ms", "first_seq", "first_ms", "last_hash"],
                records=[run for run, _ in batch],
            )
            await conn.copy_records_to_table(
                "run_events",
                columns=["run_id", "seq", "created_ms", "event", "data", "terminal", "hash"],
                records=[event for _, run_events in batch for event in run_events],
            )
        await conn.execute("ANALYZE run_streams; ANALYZE run_events")
    finally:
        await conn.close()


async def sizes(conn: asyncpg.Connection, started: float) -> SizeFigure:
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM run_events) AS live, n_dead_tup, autovacuum_count, vacuum_count,
               pg_relation_size('run_events') AS heap,
               pg_indexes_size('run_events') AS indexes,
               pg_total_relation_size('run_streams') AS runs
        FROM pg_stat_user_tables WHERE relname = 'run_events'
        """
    )
    assert row is not None
    return SizeFigure(
        at_seconds=round(time.perf_counter() - started, 1),
        events_live=row["live"],
        events_dead=row["n_dead_tup"],
        events_heap_bytes=row["heap"],
        events_index_bytes=row["indexes"],
        runs_total_bytes=row["runs"],
        autovacuums=row["autovacuum_count"],
        vacuums=row["vacuum_count"],
    )


async def count_events(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM run_events"))


# -- the phases ----------------------------------------------------------------------


async def cost_phase(
    bridge: PostgresStreamBridge, conn: asyncpg.Connection, per_run: int
) -> list[PassFigure]:
    """Passes that delete nothing, then ever more, from the full table."""
    figures = []
    started = time.perf_counter()
    for keep in sorted({per_run, per_run - 1, per_run - 5, per_run - 20, per_run * 3 // 5}, reverse=True):
        policy = RetentionPolicy(max_events_per_run=max(keep, 1), **NO_TIME_RULES)  # type: ignore[arg-type]
        before = time.perf_counter()
        report = await bridge.run_retention(policy)
        took = time.perf_counter() - before
        left = await count_events(conn)
        figures.append(PassFigure("cost", round(before - started, 1), report.events_deleted, took, left))
        print(f"  keep {keep:>4}/run: deleted {report.events_deleted:>8} in {took:7.3f} s", flush=True)
    return figures


async def churn_phase(
    bridge: PostgresStreamBridge,
    conn: asyncpg.Connection,
    dsn: str,
    args: argparse.Namespace,
    keep: int,
) -> tuple[list[PassFigure], list[SizeFigure], dict[str, Any]]:
    """Publishing continues in another process; a pass every interval keeps *keep* per run."""
    publisher = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "publish",
        "--dsn",
        dsn,
        "--runs",
        str(args.runs),
        "--seconds",
        str(args.seconds),
        "--concurrency",
        str(args.concurrency),
        stdout=asyncio.subprocess.PIPE,
    )
    policy = RetentionPolicy(max_events_per_run=keep, **NO_TIME_RULES)  # type: ignore[arg-type]
    passes: list[PassFigure] = []
    size_series = [await sizes(conn, time.perf_counter())]
    started = time.perf_counter()
    size_series[0].at_seconds = 0.0
    while publisher.returncode is None and time.perf_counter() - started < args.seconds + 30:
        before = time.perf_counter()
        report = await bridge.run_retention(policy)
        took = time.perf_counter() - before
        size = await sizes(conn, started)
        passes.append(PassFigure("churn", size.at_seconds, report.events_deleted, took, size.events_live))
        size_series.append(size)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(publisher.wait(), args.interval)
    out, _ = await publisher.communicate()
    published = json.loads(out.decode().strip().splitlines()[-1])
    return passes, size_series, published


# -- the publisher process -----------------------------------------------------------


async def publish_for(dsn: str, runs: int, seconds: float, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(bridge: PostgresStreamBridge) -> None:
        rng = random.Random()
        while time.perf_counter() < deadline:
            before = time.perf_counter()
            await bridge.publish(f"run-{rng.randrange(runs)}", "token", {"text": "churn"})
            latencies.append(time.perf_counter() - before)

    async with PostgresStreamBridge(dsn, pool_max_size=concurrency) as bridge:
        await asyncio.gather(*(worker(bridge) for _ in range(concurrency)))
    latencies.sort()
    return {
        "published": len(latencies),
        "per_second": round(len(latencies) / seconds),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        "max_ms": round(1000 * latencies[-1], 2),
    }


# -- reporting -----------------------------------------------------------------------


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def print_report(
    server: str,
    args: argparse.Namespace,
    cost: list[PassFigure],
    churn: list[PassFigure],
    size_series: list[SizeFigure],
    published: dict[str, Any],
) -> None:
    print(f"\n## Retention on {server}: {args.events:,} events, {args.runs:,} runs\n")
    print("### Pass cost against rows deleted (full table)\n")
    print("| events deleted | pass seconds | µs per deleted event | events left |")
    print("|---:|---:|---:|---:|")
    for p in cost:
        per = f"{1e6 * p.seconds / p.events_deleted:.1f}" if p.events_deleted else "-"
        print(f"| {p.events_deleted:,} | {p.seconds:.3f} | {per} | {p.events_in_table:,} |")
    print(f"\n### Steady churn: {args.seconds:.0f} s of publishing, a pass every {args.interval:g} s\n")
    print(
        f"publisher: {published['published']:,} events, {published['per_second']:,}/s, "
        f"publish latency p50 {published['p50_ms']} ms, p99 {published['p99_ms']} ms, "
        f"max {published['max_ms']} ms\n"
    )
    deleted = [p.events_deleted for p in churn]
    seconds = [p.seconds for p in churn]
    if churn:
        print(
            f"passes: {len(churn)}, events deleted per pass: median {statistics.median(deleted):,.0f}, "
            f"pass seconds: median {statistics.median(seconds):.3f}, max {max(seconds):.3f}\n"
        )
    print(
        "| t (s) | live events | dead tuples | run_events heap MiB | indexes MiB | run_streams MiB "
        "| vacuums (auto + by retention) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    step = max(1, len(size_series) // 12)
    shown = size_series[::step] + ([size_series[-1]] if (len(size_series) - 1) % step else [])
    for s in shown:
        print(
            f"| {s.at_seconds:.0f} | {s.events_live:,} | {s.events_dead:,} | {mib(s.events_heap_bytes)} | "
            f"{mib(s.events_index_bytes)} | {mib(s.runs_total_bytes)} | {s.autovacuums} + {s.vacuums} |"
        )


async def benchmark(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as servers:
        admin_dsn = args.dsn or dsn_from_environment() or servers.enter_context(embedded_server())
        async with scratch_database(admin_dsn) as dsn:
            await measure(dsn, args)
    return 0


async def measure(dsn: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(dsn)
    server = f"PostgreSQL {conn.get_server_version().major}"
    per_run = args.events // args.runs
    print(f"filling {per_run * args.runs:,} events across {args.runs:,} runs on {server}", flush=True)
    before = time.perf_counter()
    await fill(dsn, args.events, args.runs)
    print(f"  filled in {time.perf_counter() - before:.1f} s", flush=True)
    async with PostgresStreamBridge(dsn) as bridge:
        print("cost: passes deleting more and more from the full table", flush=True)
        cost = await cost_phase(bridge, conn, per_run)
        keep = max(1, per_run * 3 // 5)
        print(f"churn: publishing for {args.seconds:g} s, keeping {keep} events per run", flush=True)
        churn, size_series, published = await churn_phase(bridge, conn, dsn, args, keep)
    await conn.close()
    print_report(server, args, cost, churn, size_series, published)
    if args.json:
        figures = {
            "server": server,
            "events": args.events,
            "runs": args.runs,
            "cost": [asdict(p) for p in cost],
            "churn": [asdict(p) for p in churn],
            "sizes": [asdict(s) for s in size_series],
            "publisher": published,
        }
        Path(args.json).write_text(json.dumps(figures, indent=1))  # noqa: ASYNC240 - once, at the end


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "publish"])
    parser.add_argument("--dsn", help="an existing server (default: $PGBRIDGE_DSN, else an embedded one)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the churn phase")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between churn passes")
    parser.add_argument("--concurrency", type=int, default=8, help="publishes in flight")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    if args.mode == "publish":
        print(json.dumps(asyncio.run(publish_for(args.dsn, args.runs, args.seconds, args.concurrency))))
        return 0
    return asyncio.run(benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
