"""What the PostgreSQL server itself can do, with plain asyncpg: the ceilings.

pgbridge cannot write faster than the server absorbs rows, nor wake a reader
faster than a NOTIFY travels, so these figures, taken on the same server and
with the same ~200-byte payloads, say how much of the room pgbridge uses:

* batched INSERT: multi-row inserts built from arrays with ``unnest``, into
  a scratch table shaped like ``run_events`` (same columns and primary key),
  one transaction per batch, from several connections at once;
* COPY: ``copy_records_to_table`` into the same table;
* a single-row INSERT and its commit, one at a time: the floor under a
  durable publish's latency; back to back, and paced like workload (a)
  (one every 5 ms), which is slower on the same server: between commits
  the backend and the client sleep, and each commit starts by waking them;
* a NOTIFY round trip: LISTEN on one connection, NOTIFY from another;
* the append statement's cost: PostgreSQL time per event inside
  ``pgbridge_append_batch`` for 100 runs x 1 event and 1 run x 100 events,
  next to a plain multi-row INSERT of the same rows
  (:mod:`pgbridge.bench.append_cost`: round trip and parameter transfer
  subtracted), so every change to the append statement is measured.

The hash column gets a constant 32 bytes: these ceilings store rows, they
do not compute pgbridge's hash chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from pgbridge.bench.append_cost import ShapeCost, measure_append_cost
from pgbridge.bench.payload import token_payload
from pgbridge.bench.stats import Summary, summarize
from pgbridge.sql.queries import Queries

TABLE = "bench_ceiling_events"
COLUMNS = ["run_id", "seq", "created_ms", "event", "data", "terminal", "hash"]
INSERT_BATCH = 1000
COPY_BATCH = 5000
_HASH = bytes(32)
_INSERT_UNNEST = f"""
    INSERT INTO {TABLE} (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT run_id, seq, created_ms, event, data::json, terminal, hash
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::boolean[], $7::bytea[])
        AS u(run_id, seq, created_ms, event, data, terminal, hash)
"""
_INSERT_ONE = f"""
    INSERT INTO {TABLE} (run_id, seq, created_ms, event, data, terminal, hash)
    VALUES ($1, $2, $3, 'token', $4::json, false, $5)
"""


@dataclass(frozen=True, slots=True)
class Ceilings:
    writers: int
    insert_batch_rows: int
    batched_insert_rows_per_s: float
    copy_batch_rows: int
    copy_rows_per_s: float
    single_insert_commit: Summary
    notify_round_trip: Summary
    #: The same single-row INSERTs sent one every ``paced_interval`` seconds, as (a) publishes.
    paced_insert_commit: Summary | None = None
    paced_interval: float = 0.0
    #: Calls measured per batch shape (after a warm-up) for ``append_cost``.
    append_cost_samples: int = 0
    #: By shape (``100x1``, ``1x100``): the append's and a plain INSERT's PostgreSQL µs per row.
    append_cost: dict[str, ShapeCost] = field(default_factory=dict)


def default_writers() -> int:
    """Connections writing at once: twice the cores, enough to keep a small server busy."""
    return min(8, 2 * (os.cpu_count() or 1))


async def measure_ceilings(
    dsn: str, *, seconds: float, round_trips: int, append_samples: int = 40, paced_interval: float = 0.005
) -> Ceilings:
    """Every ceiling, one after the other, on the database *dsn*.

    Ends with a CHECKPOINT (where the role may run one): the bulk rows written here leave
    dirty pages and WAL whose flushing would otherwise land in the workloads measured next.
    """
    writers = default_writers()
    pool = await asyncpg.create_pool(dsn, min_size=writers, max_size=writers)
    try:
        await pool.execute(f"CREATE TABLE {TABLE} (LIKE run_events INCLUDING DEFAULTS INCLUDING INDEXES)")
        texts = [json.dumps(token_payload(i), separators=(",", ":")) for i in range(COPY_BATCH)]
        inserted = await _for_seconds(pool, writers, seconds, lambda c, r, s: _insert_batch(c, r, s, texts))
        copied = await _for_seconds(pool, writers, seconds, lambda c, r, s: _copy_batch(c, r, s, texts))
        async with pool.acquire() as conn:
            commits = await _single_inserts(conn, round_trips, texts[0])
            paced = await _single_inserts(conn, round_trips // 2, texts[0], interval=paced_interval)
        notifies = await _notify_round_trips(dsn, pool, round_trips)
        async with pool.acquire() as conn:
            await conn.execute(f"TRUNCATE {TABLE}")
            queries = Queries.for_schema()
            append_cost = await measure_append_cost(
                conn,
                queries.append_events,
                TABLE,
                append_samples,
                tag=f"{time.monotonic_ns()}",
                runs_once=queries.append_runs_once,
            )
        await pool.execute(f"DROP TABLE {TABLE}")
        await _checkpoint(pool)
    finally:
        await pool.close()
    return Ceilings(
        writers=writers,
        insert_batch_rows=INSERT_BATCH,
        batched_insert_rows_per_s=inserted,
        copy_batch_rows=COPY_BATCH,
        copy_rows_per_s=copied,
        single_insert_commit=summarize(commits),
        notify_round_trip=summarize(notifies),
        paced_insert_commit=summarize(paced),
        paced_interval=paced_interval,
        append_cost_samples=append_samples,
        append_cost=append_cost,
    )


#: Writes one batch of rows of a run from a seq on; returns how many.
BatchWriter = Callable[[asyncpg.Connection, str, int], Awaitable[int]]


async def _for_seconds(pool: asyncpg.Pool, writers: int, seconds: float, write: BatchWriter) -> float:
    """Rows per second that *writers* connections sustain calling *write* for *seconds*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    counts = [0] * writers
    tag = f"{time.monotonic_ns()}"

    async def writer(index: int) -> None:
        run_id = f"ceiling-{tag}-{index}"
        async with pool.acquire() as conn:
            while loop.time() < deadline:
                counts[index] += await write(conn, run_id, counts[index] + 1)

    started = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    return sum(counts) / (time.perf_counter() - started)


async def _insert_batch(conn: asyncpg.Connection, run_id: str, first: int, texts: list[str]) -> int:
    rows = texts[:INSERT_BATCH]
    now_ms = int(time.time() * 1000)
    await conn.execute(
        _INSERT_UNNEST,
        [run_id] * len(rows),
        list(range(first, first + len(rows))),
        [now_ms] * len(rows),
        ["token"] * len(rows),
        rows,
        [False] * len(rows),
        [_HASH] * len(rows),
    )
    return len(rows)


async def _copy_batch(conn: asyncpg.Connection, run_id: str, first: int, texts: list[str]) -> int:
    now_ms = int(time.time() * 1000)
    records = [(run_id, first + i, now_ms, "token", text, False, _HASH) for i, text in enumerate(texts)]
    await conn.copy_records_to_table(TABLE, records=records, columns=COLUMNS)
    return len(records)


async def _single_inserts(
    conn: asyncpg.Connection, count: int, text: str, *, interval: float = 0.0
) -> list[float]:
    """Seconds per one-row INSERT, each its own committed transaction; one every *interval*
    seconds when given (as workload (a) paces its publishes), else back to back."""
    run_id, now_ms, took = f"ceiling-single-{time.monotonic_ns()}", int(time.time() * 1000), []
    for seq in range(1, count + 1):
        started = time.perf_counter()
        await conn.execute(_INSERT_ONE, run_id, seq, now_ms, text, _HASH)
        took.append(time.perf_counter() - started)
        if interval:
            await asyncio.sleep(max(0.0, interval - took[-1]))
    return took


async def _checkpoint(pool: asyncpg.Pool) -> None:
    """CHECKPOINT, if this role may (superuser, or pg_checkpoint from PostgreSQL 15 on)."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await pool.execute("CHECKPOINT")


async def _notify_round_trips(dsn: str, pool: asyncpg.Pool, count: int) -> list[float]:
    """Seconds from sending a NOTIFY on one connection to its arrival on another."""
    channel = f"bench_ceiling_{os.getpid()}"
    listener = await asyncpg.connect(dsn)
    arrived: asyncio.Queue[float] = asyncio.Queue()
    await listener.add_listener(channel, lambda *_: arrived.put_nowait(time.perf_counter()))
    took: list[float] = []
    try:
        async with pool.acquire() as sender:
            for index in range(count + 10):
                started = time.perf_counter()
                await sender.execute(f"NOTIFY {channel}, 'x'")
                async with asyncio.timeout(10):
                    received = await arrived.get()
                if index >= 10:  # the first few warm the connections up
                    took.append(received - started)
    finally:
        await listener.close()
    return took
