"""A pinned xmin horizon: what publishing, delivery and table sizes do while one is held, and after.

    python benchmarks/xmin_horizon.py                  # embedded PostgreSQL, a scratch database
    python benchmarks/xmin_horizon.py --dsn URI        # another server (a scratch database is made on it)
    python benchmarks/xmin_horizon.py --hold 600 --json docs/figures/xmin-horizon.json

Workload: ``--runs`` runs, each published at ``--rate`` events/s by its own
task (one ``publish`` at a time, so every event is a statement and a run-row
update), each followed live by a subscriber on another bridge (woken by
NOTIFY, as in another process), and a retention pass every
``--retention-every`` seconds keeping the newest ``--keep`` events of each
run. After ``--warmup`` seconds a session elsewhere opens a ``REPEATABLE
READ`` transaction and takes its snapshot (what an analytics query, a
forgotten ``BEGIN`` in psql or a stale replication slot does to the
database's xmin horizon), holds it ``--hold`` seconds, then commits; the
workload goes on ``--recover`` seconds more.

Every ``--sample`` seconds it prints and records: publish latency (p50, p99,
max) and delivery latency (publish call to the subscriber's yield, p50, p99)
over the window, the heap and index sizes of ``run_streams`` and
``run_events``, their dead tuples (``pg_stat_user_tables``), the share of
run-row updates that were HOT, and the age of the oldest snapshot. The
phase of each sample (``warmup``, ``pinned``, ``released``) is in the
figures. Nothing is asserted: tests/db/test_xmin_horizon.py holds the
correctness and the bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from pgbridge import PostgresStreamBridge, RetentionPolicy
from pgbridge.bench.servers import describe_pgbridge, describe_postgres, embedded_server, scratch_database

#: Sizes and counters of one sample; the tables of pgbridge that a pinned horizon grows.
SIZES_SQL = """
SELECT c.relname AS name,
       pg_relation_size(c.oid) AS heap_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       s.n_live_tup, s.n_dead_tup, s.n_tup_upd, s.n_tup_hot_upd
FROM pg_class AS c
JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.relname IN ('run_streams', 'run_events') AND c.relnamespace = 'public'::regnamespace
"""

#: How old the oldest snapshot of the database is (what holds its horizon back).
HORIZON_SQL = """
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0) AS oldest_transaction_s,
       coalesce(max(age(backend_xmin)), 0) AS oldest_xmin_age
FROM pg_stat_activity
WHERE datname = current_database() AND backend_xmin IS NOT NULL
"""


@dataclass
class Window:
    """Latencies recorded since the last sample."""

    publish_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)

    def take(self) -> Window:
        taken = Window(self.publish_ms, self.delivery_ms)
        self.publish_ms, self.delivery_ms = [], []
        return taken


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


@dataclass
class Sample:
    at_s: float
    phase: str
    published: int
    publish_p50_ms: float | None
    publish_p99_ms: float | None
    publish_max_ms: float | None
    delivery_p50_ms: float | None
    delivery_p99_ms: float | None
    tables: dict[str, dict[str, int]]
    hot_share: float | None
    oldest_transaction_s: float

    def line(self) -> str:
        streams, events = self.tables["run_streams"], self.tables["run_events"]
        hot = "-" if self.hot_share is None else f"{self.hot_share:.0%}"
        return (
            f"{self.at_s:6.0f}s {self.phase:8} {self.published:6} pub  "
            f"publish p50 {self.publish_p50_ms} p99 {self.publish_p99_ms} max {self.publish_max_ms} ms  "
            f"delivery p50 {self.delivery_p50_ms} p99 {self.delivery_p99_ms} ms  "
            f"run_streams {streams['heap_bytes'] // 1024} kB + idx {streams['index_bytes'] // 1024} kB "
            f"dead {streams['n_dead_tup']} hot {hot}  "
            f"run_events {events['heap_bytes'] // 1024} kB + idx {events['index_bytes'] // 1024} kB "
            f"dead {events['n_dead_tup']}  oldest xact {self.oldest_transaction_s:.0f}s"
        )


class Workload:
    """Publishers, subscribers and retention on one database, with their latencies."""

    def __init__(self, dsn: str, args: argparse.Namespace) -> None:
        self.dsn = dsn
        self.args = args
        self.window = Window()
        self.published = 0
        self.delivered = 0
        self.stopping = asyncio.Event()

    async def publisher(self, bridge: PostgresStreamBridge, run_id: str) -> None:
        interval = 1.0 / self.args.rate
        next_at = time.perf_counter()
        while not self.stopping.is_set():
            started = time.perf_counter()
            await bridge.publish(run_id, "token", {"t": time.time(), "text": "x" * self.args.payload})
            self.window.publish_ms.append((time.perf_counter() - started) * 1000)
            self.published += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def subscriber(self, bridge: PostgresStreamBridge, run_id: str) -> None:
        async for event in bridge.subscribe(run_id, heartbeat_interval=1.0):
            if self.stopping.is_set():
                return
            if isinstance(event.data, dict) and "t" in event.data:
                self.window.delivery_ms.append((time.time() - float(event.data["t"])) * 1000)
                self.delivered += 1

    async def retention(self, bridge: PostgresStreamBridge) -> None:
        if not self.args.keep:
            return
        policy = RetentionPolicy(max_events_per_run=self.args.keep, ended_run_ttl=None, tombstone_ttl=None)
        while not self.stopping.is_set():
            await bridge.run_retention(policy)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.args.retention_every)


async def table_figures(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(SIZES_SQL)
    return {row["name"]: {k: int(v) for k, v in dict(row).items() if k != "name"} for row in rows}


@contextlib.asynccontextmanager
async def pinned_horizon(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A REPEATABLE READ transaction with its snapshot taken, held until the block ends."""
    conn = await asyncpg.connect(dsn)
    try:
        transaction = conn.transaction(isolation="repeatable_read")
        await transaction.start()
        await conn.fetchval("SELECT count(*) FROM run_streams")  # takes the snapshot
        try:
            yield conn
        finally:
            await transaction.commit()
    finally:
        await conn.close()


async def measure(dsn: str, args: argparse.Namespace) -> list[Sample]:
    workload = Workload(dsn, args)
    runs = [f"horizon-{i}" for i in range(args.runs)]
    samples: list[Sample] = []
    async with (
        PostgresStreamBridge(dsn) as writer,
        PostgresStreamBridge(dsn) as reader,
        PostgresStreamBridge(dsn, pool_max_size=2) as janitor,
    ):
        monitor = await asyncpg.connect(dsn)
        tasks = [asyncio.create_task(workload.subscriber(reader, run)) for run in runs]
        await asyncio.sleep(0.5)
        tasks += [asyncio.create_task(workload.publisher(writer, run)) for run in runs]
        tasks.append(asyncio.create_task(workload.retention(janitor)))
        started = time.perf_counter()
        previous = await table_figures(monitor)
        phases = [("warmup", args.warmup), ("pinned", args.hold), ("released", args.recover)]
        horizon: contextlib.AbstractAsyncContextManager[asyncpg.Connection] | None = None
        try:
            for phase, seconds in phases:
                if phase == "pinned":
                    horizon = pinned_horizon(dsn)
                    await horizon.__aenter__()
                elif horizon is not None:
                    await horizon.__aexit__(None, None, None)
                    horizon = None
                phase_end = time.perf_counter() + seconds
                while time.perf_counter() < phase_end - 1e-3:
                    await asyncio.sleep(min(args.sample, phase_end - time.perf_counter()))
                    window = workload.window.take()
                    tables = await table_figures(monitor)
                    horizon_row = await monitor.fetchrow(HORIZON_SQL)
                    updates = tables["run_streams"]["n_tup_upd"] - previous["run_streams"]["n_tup_upd"]
                    hot = tables["run_streams"]["n_tup_hot_upd"] - previous["run_streams"]["n_tup_hot_upd"]
                    previous = tables
                    sample = Sample(
                        at_s=round(time.perf_counter() - started, 1),
                        phase=phase,
                        published=len(window.publish_ms),
                        publish_p50_ms=percentile(window.publish_ms, 0.5),
                        publish_p99_ms=percentile(window.publish_ms, 0.99),
                        publish_max_ms=percentile(window.publish_ms, 1.0),
                        delivery_p50_ms=percentile(window.delivery_ms, 0.5),
                        delivery_p99_ms=percentile(window.delivery_ms, 0.99),
                        tables=tables,
                        hot_share=round(hot / updates, 3) if updates > 0 else None,
                        oldest_transaction_s=float(horizon_row["oldest_transaction_s"]),
                    )
                    samples.append(sample)
                    print(sample.line(), flush=True)
        finally:
            if horizon is not None:
                await horizon.__aexit__(None, None, None)
            workload.stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await monitor.close()
    return samples


def summary(samples: list[Sample]) -> dict[str, Any]:
    """Per phase: the median of the windows' p50 and p99 publish and delivery latencies, and the
    sizes at the phase's end."""
    out: dict[str, Any] = {}
    for phase in ("warmup", "pinned", "released"):
        chosen = [s for s in samples if s.phase == phase]
        if not chosen:
            continue

        def median(name: str, of: list[Sample] = chosen) -> float | None:
            values = [getattr(s, name) for s in of if getattr(s, name) is not None]
            return round(statistics.median(values), 2) if values else None

        out[phase] = {
            "publish_p50_ms": median("publish_p50_ms"),
            "publish_p99_ms": median("publish_p99_ms"),
            "delivery_p50_ms": median("delivery_p50_ms"),
            "delivery_p99_ms": median("delivery_p99_ms"),
            "end_tables": chosen[-1].tables,
        }
    return out


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    if args.dsn:
        async with scratch_database(args.dsn) as dsn:
            yield dsn
        return
    with embedded_server() as admin:
        async with scratch_database(admin) as dsn:
            yield dsn


async def main(args: argparse.Namespace) -> None:
    async with database(args) as dsn:
        if args.candidate:
            conn = await asyncpg.connect(dsn)
            try:
                text = Path(args.candidate).read_text(encoding="utf-8")  # noqa: ASYNC240
                await conn.execute(text.replace("__SCHEMA__", '"public"'))
            finally:
                await conn.close()
        samples = await measure(dsn, args)
        report = {
            "workload": {k: v for k, v in vars(args).items() if k not in ("dsn", "json")},
            "postgres": await describe_postgres(dsn),
            "pgbridge": describe_pgbridge(),
            "summary": summary(samples),
            "samples": [asdict(s) for s in samples],
        }
    print(json.dumps(report["summary"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")  # noqa: ASYNC240


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="a server to make a scratch database on (default: an embedded one)")
    parser.add_argument("--runs", type=int, default=10, help="runs published at once (default 10)")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s per run (default 50)")
    parser.add_argument("--payload", type=int, default=40, help="characters of text per event (default 40)")
    parser.add_argument(
        "--keep", type=int, default=500, help="retention keeps this many events a run (0: none)"
    )
    parser.add_argument("--retention-every", type=float, default=2.0, help="seconds between passes")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the horizon is pinned")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the horizon is held")
    parser.add_argument("--recover", type=float, default=30.0, help="seconds measured after its release")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds per sample")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--candidate", help="SQL run after migrating (__SCHEMA__: the schema), a design to compare"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
