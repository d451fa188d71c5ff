"""What ``pgbridge_append_batch`` costs PostgreSQL per event, next to a plain INSERT of the same rows.

Shared by ``pgbridge bench`` (a row of its PostgreSQL ceilings) and
``benchmarks/append_cost.py`` (the same figures, and a candidate function
beside the head one). The method:

* one sample is one call of the statement inside a transaction, preceded
  in the same transaction by a *baseline* statement that receives the same
  arrays and does nothing with them; the sample is the call's time minus the
  baseline's, so the round trip and the transfer of the parameters are not
  counted, and the commit is not counted either;
* the figure is the median sample after a warm-up of a few calls (the
  function's plans are cached by then), divided by the rows of one call.

Batch shapes are (runs, events per run): 100 runs x 1 event (many
publishers at once, the group-commit batch of workload (b)) and 1 run x 100
events (a burst into one run). The same runs every call, so each call
appends to runs that exist, as in steady state. The plain INSERT puts the
same rows (run id, seq, time, event name, the same JSON texts, a constant
32-byte hash) into a table shaped like ``run_events``: no run rows, no
locks, no hash chain, no checks: the floor a row costs.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import asyncpg

from pgbridge.bench.payload import token_payload

#: (runs, events per run) of a batch, by the key the figures are stored under.
SHAPES: dict[str, tuple[int, int]] = {"100x1": (100, 1), "1x100": (1, 100)}
#: Calls not counted before the samples: the function's plans are cached after a few.
WARM_UP = 5

#: Receives the same five arrays as the append and does nothing with them: its baseline.
BASELINE = (
    "SELECT cardinality($1::text[]) + cardinality($2::text[]) + cardinality($3::text[])"
    " + cardinality($4::boolean[]) + cardinality($5::text[])"
)
#: The same for the seven arrays of the plain INSERT.
INSERT_BASELINE = (
    "SELECT cardinality($1::text[]) + cardinality($2::bigint[]) + cardinality($3::bigint[])"
    " + cardinality($4::text[]) + cardinality($5::text[]) + cardinality($6::boolean[])"
    " + cardinality($7::bytea[])"
)
_INSERT = """
    INSERT INTO {table} (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT run_id, seq, created_ms, event, data::json, terminal, hash
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::boolean[], $7::bytea[])
        AS u(run_id, seq, created_ms, event, data, terminal, hash)
"""
_HASH = bytes(32)

Arrays = tuple[list[str], list[str], list[str], list[bool], list[str]]


def _texts(count: int) -> list[str]:
    return [json.dumps(token_payload(i), separators=(",", ":")) for i in range(count)]


def batch(runs: int, per_run: int, prefix: str = "run-") -> Arrays:
    """The five arrays of one append call: *runs* runs (``prefix0`` ...) x *per_run* events."""
    run_ids = [f"{prefix}{r}" for r in range(runs) for _ in range(per_run)]
    n = len(run_ids)
    return run_ids, ["token"] * n, _texts(n), [False] * n, ["active"] * n


async def _sample_us(
    conn: asyncpg.Connection,
    baseline: str,
    statement: str,
    args: tuple[object, ...],
    rows: int,
    extra: tuple[object, ...] = (),
    *,
    answers_rows: bool = False,
) -> float:
    """Server µs per row of one call of *statement* (given *args* and then *extra*), less
    *baseline* on *args*. With *answers_rows*, the statement must answer one row per row
    it was given (an append that stored nothing would be measured doing nothing)."""
    async with conn.transaction():
        started = time.perf_counter()
        await conn.fetchval(baseline, *args)
        between = time.perf_counter()
        stored = await conn.fetch(statement, *args, *extra)
        done = time.perf_counter()
    if answers_rows and len(stored) != rows:
        raise RuntimeError(f"the statement answered {len(stored)} rows for {rows}: it did not append")
    return ((done - between) - (between - started)) / rows * 1e6


async def per_event_us(
    conn: asyncpg.Connection,
    append: str,
    shape: tuple[int, int],
    samples: int,
    *,
    prefix: str = "run-",
    extra: tuple[object, ...] = (),
) -> float:
    """Median server µs per event of the append statement *append* (its five arrays, then
    *extra*) for one batch *shape*."""
    runs, per_run = shape
    found: list[float] = []
    for round_ in range(samples + WARM_UP):
        args = batch(runs, per_run, prefix)
        figure = await _sample_us(conn, BASELINE, append, args, runs * per_run, extra, answers_rows=True)
        if round_ >= WARM_UP:
            found.append(figure)
    return statistics.median(found)


async def insert_per_row_us(
    conn: asyncpg.Connection, table: str, shape: tuple[int, int], samples: int, *, prefix: str = "insert-"
) -> float:
    """Median server µs per row of a plain multi-row INSERT of the same rows into *table*
    (shaped like ``run_events``), each call the runs' next seqs."""
    runs, per_run = shape
    statement = _INSERT.format(table=table)
    texts = _texts(runs * per_run)
    found: list[float] = []
    for round_ in range(samples + WARM_UP):
        first = round_ * per_run + 1
        run_ids = [f"{prefix}{r}" for r in range(runs) for _ in range(per_run)]
        seqs = [first + i for _ in range(runs) for i in range(per_run)]
        n = len(run_ids)
        now_ms = int(time.time() * 1000)
        args = (run_ids, seqs, [now_ms] * n, ["token"] * n, texts, [False] * n, [_HASH] * n)
        figure = await _sample_us(conn, INSERT_BASELINE, statement, args, n)
        if round_ >= WARM_UP:
            found.append(figure)
    return statistics.median(found)


@dataclass(frozen=True, slots=True)
class ShapeCost:
    runs: int
    events_per_run: int
    #: PostgreSQL µs per event inside pgbridge_append_batch (one call of the whole batch).
    append_us_per_event: float
    #: PostgreSQL µs per row of a plain multi-row INSERT of the same rows.
    insert_us_per_row: float
    #: PostgreSQL µs per event of the statement a busy batch of this shape is sent as, when
    #: that is not the function: ``append_runs_once`` for runs that exist, one event each.
    sent_us_per_event: float | None = None


async def measure_append_cost(
    conn: asyncpg.Connection,
    append: str,
    table: str,
    samples: int,
    *,
    tag: str,
    runs_once: str | None = None,
) -> dict[str, ShapeCost]:
    """Both batch shapes, the append and the plain INSERT, on *conn* (one session).

    *append* is the ``append_events`` statement; *table* a scratch table shaped like
    ``run_events``; run ids start with ``append-cost-{tag}-`` and ``insert-cost-{tag}-``.
    *runs_once*, the ``append_runs_once`` statement, is measured too on the runs the
    append made (its lock bound and channel none) for the shape of one event per run.
    """
    costs: dict[str, ShapeCost] = {}
    for key, shape in SHAPES.items():
        prefix = f"append-cost-{tag}-{key}-"
        appended = await per_event_us(conn, append, shape, samples, prefix=prefix)
        sent = None
        if runs_once is not None and shape[1] == 1:
            no_bound_nor_channel = (None, None)
            sent_us = await per_event_us(
                conn, runs_once, shape, samples, prefix=prefix, extra=no_bound_nor_channel
            )
            sent = round(sent_us, 2)
        inserted = await insert_per_row_us(conn, table, shape, samples, prefix=f"insert-cost-{tag}-{key}-")
        costs[key] = ShapeCost(shape[0], shape[1], round(appended, 2), round(inserted, 2), sent)
    return costs
