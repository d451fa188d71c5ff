"""CPU per delivery of a subscribing process's live path, without the noise of a whole workload.

    python benchmarks/subscriber_path.py                    # embedded PostgreSQL, a scratch database
    python benchmarks/subscriber_path.py --dsn URI          # another server (a scratch database)
    python benchmarks/subscriber_path.py --consumer bench   # consume as pgbridge bench's (b) does

Workload (b)'s subscribing process, in isolation: one bridge, 100 runs with
two subscriptions each, every run caught up on its first event. Then each
round hands the listener's notification callback the wake-ups one append
statement of 100 runs x 1 event would send (the batched payload of
``append_runs_once``: about 13 events a payload, token data of the
benchmark's size) and waits until every subscription has yielded its run's
event. Prints the process's CPU per delivery (``time.process_time``) and the
garbage collector's share of it. What is left out: the socket and asyncpg's
parsing of the notifications (their cost per payload, not per delivery).

The consumers: ``plain`` counts what ``bridge.subscribe`` yields; ``bench``
is ``pgbridge bench``'s own (``pgbridge.bench.subscriber.follow``: the
Delivery wrapper, a latency per event, each run's worst latency per token).
Nothing is stored: the runs' feeds hold events no table has, so the poll is
set off (a poll would find their history changed and restart them).
Figures in docs/performance.md (session 12).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import uuid
from collections.abc import Callable

import orjson

from pgbridge.bench.contenders import PgBridgeContender
from pgbridge.bench.payload import token_payload
from pgbridge.bench.servers import scratch_database_on
from pgbridge.bench.subscriber import Countdown, follow
from pgbridge.bridge import PostgresStreamBridge

RUNS, PER_RUN, PER_PAYLOAD = 100, 2, 13


class GcTimer:
    """CPU seconds the garbage collector took, from its callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started


def payloads(runs: list[str], seq: int, ms: int) -> list[str]:
    """The batched wake-ups of one statement that appended event *seq* (from 2) to each of
    *runs*, timed *ms* + seq. The first says no time for the event before it: that is the
    runs' hello event, stored at its own time."""
    data = orjson.dumps(token_payload(seq)).decode()
    prev_ms = ms + seq - 1 if seq > 2 else None
    items = [[run, seq, ms + seq, "token", data, False, prev_ms] for run in runs]
    chunks = [items[i : i + PER_PAYLOAD] for i in range(0, len(items), PER_PAYLOAD)]
    return ["=0/1 " + orjson.dumps(chunk).decode() for chunk in chunks]


async def open_plain(
    bridge: PostgresStreamBridge, runs: list[str], delivered: list[int]
) -> list[asyncio.Task[None]]:
    opened = asyncio.Event()
    countdown = Countdown(len(runs) * PER_RUN, opened.set)

    async def subscription(run_id: str) -> None:
        first = True
        async for _ in bridge.subscribe(run_id):
            delivered[0] += 1
            if first:
                first = False
                countdown.tick()

    tasks = [asyncio.create_task(subscription(run)) for run in runs for _ in range(PER_RUN)]
    await opened.wait()
    return tasks


async def open_bench(
    contender: PgBridgeContender, runs: list[str], delivered: list[int]
) -> list[asyncio.Task[None]]:
    opened = asyncio.Event()
    subscribe = contender.subscribe

    def counting(run_id: str):  # type: ignore[no-untyped-def]
        async def deliveries():  # type: ignore[no-untyped-def]
            async for delivery in subscribe(run_id):
                delivered[0] += 1
                yield delivery

        return deliveries()

    contender.subscribe = counting  # type: ignore[method-assign]
    task = asyncio.create_task(follow(contender, runs, PER_RUN, on_ready=opened.set, timeout=3600))
    await opened.wait()
    return [task]


async def main(args: argparse.Namespace) -> None:
    async with scratch_database_on(args.dsn) as dsn:
        contender = PgBridgeContender(dsn)
        contender.bridge = PostgresStreamBridge(dsn, poll_interval=3600)
        async with contender:
            bridge = contender.bridge
            runs = [f"path-{uuid.uuid4().hex[:6]}-{i}" for i in range(RUNS)]
            for run in runs:
                await bridge.publish(run, "hello", {"type": "hello"})
            delivered = [0]
            opener: Callable[..., object] = open_bench if args.consumer == "bench" else open_plain
            tasks = await opener(contender if args.consumer == "bench" else bridge, runs, delivered)  # type: ignore[operator]
            notify = bridge._listener._on_notification  # the listener's callback, as asyncpg calls it
            ms, start = int(time.time() * 1000), delivered[0]
            timer = GcTimer()
            gc.callbacks.append(timer)
            cpu = 0.0
            for round_number in range(args.rounds):
                batch = payloads(runs, round_number + 2, ms)  # made outside the timed part
                target = start + (round_number + 1) * RUNS * PER_RUN
                started = time.process_time()
                for payload in batch:
                    notify(None, 0, "pgbridge", payload)
                while delivered[0] < target:  # noqa: ASYNC110 - spun: an Event would add its own wake-up
                    await asyncio.sleep(0)
                cpu += time.process_time() - started
            gc.callbacks.remove(timer)
            count = delivered[0] - start
            print(
                f"{args.consumer} consumer: {count} deliveries, {cpu * 1e6 / count:.2f} us of CPU a "
                f"delivery, the garbage collector {timer.seconds * 1e6 / count:.2f} of it"
            )
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="a server where databases can be created (default: an embedded one)")
    parser.add_argument("--rounds", type=int, default=1000, help="statements' wake-ups handed over")
    parser.add_argument("--consumer", choices=["plain", "bench"], default="plain")
    asyncio.run(main(parser.parse_args()))
