"""Eight OS processes through PgBouncer with a small server pool: exact accounting, bounded connections.

Four publishers (25 runs each), three subscribers (every run; one reads
from the hot standby) and one ``pgbridge serve`` whose SSE streams the test
reads for every run. All pools go through PgBouncer in transaction mode
(``statement_cache_size=0``); each process's listener connects directly.
While it runs, the test samples ``pg_stat_activity`` on the primary: the
client connections to the database never exceed PgBouncer's server pool
plus one listener per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

import asyncpg
import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.support.helpers import seq_of
from tests.support.http_server import ServerProcess
from tests.support.topology import ScaleDatabase, Topology

#: These tests start PostgreSQL servers of their own (.ci/run skips them in its second pass).
pytestmark = pytest.mark.own_server

RUNS = [f"run-{i:03d}" for i in range(100)]
EVENTS = 20  # per run, then its terminal
PUBLISHERS = 4
SUBSCRIBERS = 3
PROCESSES = PUBLISHERS + SUBSCRIBERS + 1  # and the SSE server


async def _start_worker(args: list[str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.processes.scale_worker",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    return process


async def _result_of(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    out = await process.stdout.read()
    assert await process.wait() == 0
    parsed: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return parsed


async def _sse_ids(client: httpx.AsyncClient, run: str) -> list[str]:
    ids: list[str] = []
    async with aconnect_sse(client, "GET", f"/runs/{run}/stream") as source:
        async for sse in source.aiter_sse():
            # Only event frames: httpx-sse also reports each heartbeat comment as an
            # empty "message" carrying the last ID (the spec keeps the last event ID).
            if sse.event in ("token", "end"):
                ids.append(sse.id)
    return ids


async def _sample_connections(primary: str, database: str, samples: list[int], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(primary)
    try:
        while not stop.is_set():
            samples.append(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    database,
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        await conn.close()


async def test_eight_processes_through_pgbouncer_lose_and_repeat_nothing_within_the_connection_budget(
    scale_db: ScaleDatabase, topology: Topology
) -> None:
    samples: list[int] = []
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(
        _sample_connections(topology.primary(), scale_db.name, samples, stop_sampling)
    )
    direct = ["--listen-dsn", scale_db.primary]
    server = ServerProcess(
        scale_db.bouncer,
        extra_args=("--listen-dsn", scale_db.primary, "--statement-cache-size", "0", "--pool-max-size", "4"),
    )
    workers: list[asyncio.subprocess.Process] = []

    async def start(args: list[str]) -> asyncio.subprocess.Process:
        process = await _start_worker(args)
        workers.append(process)
        return process

    await server.start()
    try:
        replica = ["--replica-dsn", scale_db.standby]
        subscribers = await asyncio.gather(
            *(
                start(["subscribe", scale_db.bouncer, *RUNS, *direct, *(replica if k == 0 else [])])
                for k in range(SUBSCRIBERS)
            )
        )
        limits = httpx.Limits(max_connections=len(RUNS) + 10, max_keepalive_connections=len(RUNS) + 10)
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.auth, timeout=100, limits=limits
        ) as client:
            sse_streams = [asyncio.create_task(_sse_ids(client, run)) for run in RUNS]
            publishers = await asyncio.gather(
                *(
                    start(
                        ["publish", scale_db.bouncer, *RUNS[k::PUBLISHERS], "--events", str(EVENTS), *direct]
                    )
                    for k in range(PUBLISHERS)
                )
            )
            published = [await _result_of(p) for p in publishers]
            subscribed = [await _result_of(s) for s in subscribers]
            sse = dict(zip(RUNS, await asyncio.wait_for(asyncio.gather(*sse_streams), 100), strict=True))
    finally:
        for process in workers:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await server.stop()
        stop_sampling.set()
        await sampler

    acknowledged: dict[str, list[str]] = {}
    for result in published:
        acknowledged.update(result["result"])
    assert sorted(acknowledged) == RUNS
    for run, ids in acknowledged.items():
        assert [seq_of(i) for i in ids] == list(range(1, EVENTS + 2)), run

    lost = duplicated = out_of_order = 0
    readers = [s["result"] for s in subscribed] + [{run: [[i] for i in ids] for run, ids in sse.items()}]
    for reader in readers:
        for run in RUNS:
            got = [item[0] for item in reader[run]]
            lost += len(set(acknowledged[run]) - set(got))
            duplicated += len(got) - len(set(got))
            out_of_order += got != sorted(got, key=seq_of)
            assert got == acknowledged[run], run
    for reader in subscribed:
        for run in RUNS:
            data = [item[2] for item in reader["result"][run]]
            assert data == [{"run": run, "i": i} for i in range(EVENTS)] + [{"events": EVENTS}]

    conn = await asyncpg.connect(scale_db.primary)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM run_events")
    finally:
        await conn.close()
    peak = max(samples)
    deliveries = sum(len(ids) for ids in acknowledged.values()) * len(readers)
    print(
        f"\n8 processes, {len(RUNS)} runs: {stored} events stored, {deliveries} deliveries checked, "
        f"lost={lost} duplicated={duplicated} out_of_order={out_of_order}; primary client connections: "
        f"peak {peak} over {len(samples)} samples (budget {topology.pool_size} PgBouncer servers "
        f"+ {PROCESSES} listeners = {topology.pool_size + PROCESSES}); standby reads by the replica "
        f"subscriber: {subscribed[0]['stats']['reads_from_replica']}"
    )
    assert stored == len(RUNS) * (EVENTS + 1)
    assert (lost, duplicated, out_of_order) == (0, 0, 0)
    assert peak <= topology.pool_size + PROCESSES
