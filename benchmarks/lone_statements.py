"""Where a lone append's time goes: each statement it could be, interleaved in one session.

    python benchmarks/lone_statements.py             # a lone publish, paced as workload (a)
    python benchmarks/lone_statements.py --streams   # a batch of Durable Streams appends
    python benchmarks/lone_statements.py --dsn URI   # another server (a scratch database is made on it)

A lone publish (workload (a) of ``pgbridge bench``: one event every 5 ms):
the variants take turns, each on a connection of its own (a connection used
more often is served faster), and each call is one statement and its commit:

* ``plain``: a single-row INSERT into a table shaped like ``run_events`` (the floor);
* ``function``: ``append_events`` (``pgbridge_append_batch``), no NOTIFY;
* ``function+notify``: ``append_events_notifying``, what a lone batch of a new run sends;
* ``one_event``: ``append_one_event`` with its wake-up, what a lone publish of a known run sends
  (one event in 256, which writes its run's row, it leaves to ``append_events_notifying``, as the
  bridge does);
* ``one_event, clock called``: the same statement stamping its event with a call to the
  schema's ``pgbridge_event_ms()`` instead of the fragment ``event_ms`` (as it did before
  session 11): what that call costs (PostgreSQL plans the function's body in every statement);
* ``bridge.publish``: the whole publish through the bridge (group commit, pool, answer).

With ``--streams``: 25 one-message appends on 25 streams per call, as a
busy ``pgbridge serve`` batches them: ``stream_append_many`` (the function per
request), ``stream_append_simple`` (set-based) and a plain INSERT of the same
rows; per request, with a ``SELECT 1`` round trip subtracted, commit included.
Figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg

from pgbridge import PostgresStreamBridge
from pgbridge.bench.payload import token_payload
from pgbridge.bench.servers import scratch_database_on
from pgbridge.sql import FRAGMENTS_FILE, statements_of
from pgbridge.sql.queries import Queries, notify_channel
from pgbridge.store.streams import StreamConfig

QUERIES = Queries.for_schema()
CHANNEL = notify_channel("public")
PLAIN = (
    "INSERT INTO plain_events (run_id, seq, created_ms, event, data, terminal, hash) "
    "SELECT $1, s, 1, 'token', $3::json, false, '\\x00' FROM unnest($2::bigint[]) AS s"
)
Call = Callable[[], Awaitable[object]]
#: append_one_event as it was before session 11: its event time from a call to the function.
EVENT_MS = next(f.text for f in statements_of(FRAGMENTS_FILE) if f.name == "event_ms")
ONE_EVENT_CLOCK_CALLED = QUERIES.append_one_event.replace(EVENT_MS, '"public".pgbridge_event_ms()')


async def interleaved(variants: dict[str, Call], rounds: int, pause: float) -> dict[str, list[float]]:
    """Milliseconds per call of each variant, taking turns (after a warm-up of 20 calls each)."""
    for call in variants.values():
        for _ in range(20):
            await call()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            if pause:
                await asyncio.sleep(pause)
            started = time.perf_counter()
            await call()
            times[name].append((time.perf_counter() - started) * 1000)
    return times


async def one_event(conn: asyncpg.Connection, statement: str, run_id: str, data: str) -> None:
    """A lone publish of a known run as the bridge sends it: *statement* (append_one_event or a
    variant), then the function where it stored nothing (an event that writes its run's row)."""
    if not await conn.fetch(statement, run_id, "token", data, False, "active", "100ms", CHANNEL):
        await conn.fetch(
            QUERIES.append_events_notifying,
            [run_id],
            ["token"],
            [data],
            [False],
            ["active"],
            CHANNEL,
            "100ms",
        )


async def lone_publish(dsn: str, rounds: int) -> None:
    conns = [await asyncpg.connect(dsn) for _ in range(5)]
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(CHANNEL, lambda *args: None)  # a NOTIFY has someone to wake
    await conns[0].execute("CREATE TABLE plain_events (LIKE run_events INCLUDING DEFAULTS INCLUDING INDEXES)")
    data = json.dumps(token_payload(1), separators=(",", ":"))
    seq = iter(range(1, 10**9))
    async with PostgresStreamBridge(dsn) as bridge:
        for run_id in ("function", "notifying", "one", "called", "bridge"):
            await bridge.publish(run_id, "token", token_payload(0))
        single = (["token"], [data], [False], ["active"])
        variants: dict[str, Call] = {
            "plain INSERT + commit": lambda: conns[0].execute(PLAIN, "plain", [next(seq)], data),
            "function": lambda: conns[1].fetch(QUERIES.append_events, ["function"], *single),
            "function+notify": lambda: conns[2].fetch(
                QUERIES.append_events_notifying, ["notifying"], *single, CHANNEL, "100ms"
            ),
            "one_event": lambda: one_event(conns[3], QUERIES.append_one_event, "one", data),
            "one_event, clock called": lambda: one_event(conns[4], ONE_EVENT_CLOCK_CALLED, "called", data),
            "bridge.publish": lambda: bridge.publish("bridge", "token", token_payload(1)),
        }
        times = await interleaved(variants, rounds, pause=0.005)
    for conn in (*conns, listener):
        await conn.close()
    print("a lone publish, one every 5 ms, variants taking turns:")
    for name, found in times.items():
        found.sort()
        print(
            f"  {name:24s} p50 {statistics.median(found):.3f} ms  p99 {found[int(len(found) * 0.99)]:.3f} ms"
        )


async def stream_batches(dsn: str, rounds: int) -> None:
    runs = [f"stream-{i}" for i in range(25)]
    async with PostgresStreamBridge(dsn) as bridge:
        for run_id in runs:
            await bridge.streams.create(run_id, StreamConfig("application/json"))
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE plain_events (LIKE run_events INCLUDING DEFAULTS INCLUDING INDEXES)")
    data = json.dumps({"type": "token", "text": "x" * 150})
    n, seq = len(runs), iter(range(1, 10**9))
    places = list(range(1, n + 1))
    variants: dict[str, Call] = {
        "stream_append_many": lambda: conn.fetch(
            QUERIES.streams.stream_append_many,
            runs,
            [None] * n,
            places,
            places,
            [False] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            ["message"] * n,
            [data] * n,
        ),
        "stream_append_simple": lambda: conn.fetch(
            QUERIES.streams.stream_append_simple, runs, [None] * n, ["message"] * n, [data] * n
        ),
        "plain INSERT": lambda: conn.execute(PLAIN, "plain", [next(seq) for _ in range(n)], data),
        "SELECT 1": lambda: conn.fetchval("SELECT 1"),
    }
    times = await interleaved(variants, rounds, pause=0.0)
    await conn.close()
    round_trip = statistics.median(times.pop("SELECT 1"))
    print(f"{n} one-message appends on {n} streams per call, per request (round trip subtracted):")
    for name, found in times.items():
        print(f"  {name:24s} {1000 * (statistics.median(found) - round_trip) / n:.1f} µs")


async def main(args: argparse.Namespace) -> None:
    async with scratch_database_on(args.dsn) as dsn:
        if args.streams:
            await stream_batches(dsn, args.rounds)
        else:
            await lone_publish(dsn, args.rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="a server where a scratch database can be created")
    parser.add_argument("--streams", action="store_true", help="Durable Streams append batches instead")
    parser.add_argument("--rounds", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
