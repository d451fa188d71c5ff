"""Replay throughput: a finished 100,000-event run read through ``bridge.subscribe`` from its start.

    python benchmarks/replay.py                        # embedded PostgreSQL, a scratch database
    python benchmarks/replay.py --dsn URI              # another server (a scratch database is made on it)
    python benchmarks/replay.py --database URI         # a database of your own (migrated; the run is
                                                       # published once and kept, so other code can
                                                       # replay the very same rows: see below)
    python benchmarks/replay.py --profile out.html     # and a pyinstrument profile of one replay

Workload (d) of ``pgbridge bench`` on its own: the run is published with
``publish_many`` in batches of 1,000 (the token payload of the benchmark),
then each round opens a fresh bridge and times ``async for event in
bridge.subscribe(run)`` until the terminal event. Prints events/s per round
and the median.

To compare two versions of the code on a shared, noisy machine, point both
at the same ``--database`` and alternate processes, e.g. with the other
version's tree first on ``PYTHONPATH``: the rows are the same, only the
reading code differs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

from pgbridge import PostgresStreamBridge
from pgbridge.bench.payload import token_payload
from pgbridge.bench.servers import embedded_server, scratch_database
from pgbridge.migrate import migrate

RUN = "replay-100k"


async def fill(dsn: str, events: int, batch: int) -> None:
    """Publish the run once (a run that already ended is left as it is)."""
    async with PostgresStreamBridge(dsn) as bridge:
        info = await bridge.run_info(RUN)
        if info is not None and info.terminal_event_id is not None:
            return
        for first in range(0, events, batch):
            last = min(first + batch, events)
            await bridge.publish_many(RUN, [("token", token_payload(i)) for i in range(first, last)])
        await bridge.publish_end(RUN)


async def replay_once(dsn: str) -> tuple[int, float, float]:
    """Events received, seconds, and seconds of this process's CPU."""
    async with PostgresStreamBridge(dsn) as bridge:
        received = 0
        cpu = time.process_time()
        started = time.perf_counter()
        async for item in bridge.subscribe(RUN, last_event_id=None):
            received += 1
            _ = item.data  # what a consumer uses: decoded data
            if item.event == "end" or item.event.startswith("__"):
                break
        return received, time.perf_counter() - started, time.process_time() - cpu


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    if args.database:
        await migrate(args.database)
        yield args.database
        return
    if args.dsn:
        async with scratch_database(args.dsn) as dsn:
            yield dsn
        return
    with embedded_server() as admin:
        async with scratch_database(admin) as dsn:
            yield dsn


async def main(args: argparse.Namespace) -> None:
    async with database(args) as dsn:
        await fill(dsn, args.events, args.batch)
        rates, cpu_rates = [], []
        for _ in range(args.rounds):
            received, seconds, cpu = await replay_once(dsn)
            rates.append(received / seconds)
            cpu_rates.append(received / cpu)
            print(
                f"{received} events in {seconds:.3f} s: {received / seconds:,.0f} events/s "
                f"({received / cpu:,.0f} per CPU second of this process)",
                flush=True,
            )
        print(
            f"median {statistics.median(rates):,.0f} events/s "
            f"({statistics.median(cpu_rates):,.0f} per CPU second) over {len(rates)} round(s)"
        )
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="enabled")
            with profiler:
                await replay_once(dsn)
            Path(args.profile).write_text(profiler.output_html(), encoding="utf-8")  # noqa: ASYNC240
            print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="a server to make a scratch database on")
    parser.add_argument("--database", help="a database of your own to use (kept)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", help="write a pyinstrument profile of one more replay here (HTML)")
    asyncio.run(main(parser.parse_args()))
