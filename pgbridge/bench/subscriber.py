"""Subscribers: in the publishing process, or in a process of their own.

Deployments read runs in other processes than the ones that publish them
(SSE servers apart from workers), so the workloads run pgbridge's and
Redis's subscribers here, as ``python -m pgbridge.bench.subscriber``:

* ``follow``: subscribe to every run of a set, *per_run* times each, and
  time every stamped event's arrival against the publisher's clock in its
  payload (same machine, same clock);
* ``idle``: publish one event to each of *runs* runs, then hold one idle
  subscription per run, and report the resident memory they added and the
  store calls they cost while nothing was published.

The process prints one JSON line when every subscription has received its
run's first event (so what follows is live, not replay), and its result as
the last JSON line. The store's DSN or URL comes in the environment
(:data:`TARGET_ENV`), never on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from pgbridge.bench.contenders import Contender, ProcessSpec, open_contender
from pgbridge.bench.payload import index_of, sent_at
from pgbridge.contract import JSONValue

TARGET_ENV = "PGBRIDGE_BENCH_TARGET"
#: The first event of every run: it proves a subscription is open and caught up.
HELLO: JSONValue = {"type": "hello"}


def run_ids(prefix: str, count: int) -> list[str]:
    """The run IDs a workload and its subscriber process agree on."""
    return [f"{prefix}{index}" for index in range(count)]


@dataclass
class Received:
    """What the subscribers of one process saw."""

    subscriptions: int
    #: Seconds from publish to receipt, one per (subscription, stamped event).
    latencies: list[float] = field(default_factory=list)
    #: Per (run, stamped event): the latency of the last subscription to get it.
    last_latencies: list[float] = field(default_factory=list)
    #: Every event received, the hello and end events included.
    events: int = 0
    #: Subscriptions that reached their run's end event.
    finished: int = 0
    store_calls_at_ready: int | None = None
    store_calls_at_end: int | None = None
    timed_out: bool = False
    error: str | None = None


class Countdown:
    """Calls *then* once, when :meth:`tick` has been called *count* times."""

    def __init__(self, count: int, then: Callable[[], None]) -> None:
        self.left = count
        self._then = then

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self._then()


async def follow(
    contender: Contender,
    runs: Sequence[str],
    per_run: int,
    *,
    on_ready: Callable[[], None],
    timeout: float,
) -> Received:
    """Subscribe *per_run* times to each run until its end event (or *timeout*)."""
    received = Received(subscriptions=len(runs) * per_run)
    #: Per run, by token number: the latency of the last subscription to get it. Floats in
    #: lists, not a dict keyed by (run, number): a tuple per event is an object the garbage
    #: collector tracks, and walking hundreds of thousands of them cost the process ~1.6 us a
    #: delivery, whichever contender it measured (docs/performance.md).
    worst: dict[str, list[float]] = {run_id: [] for run_id in runs}

    def ready() -> None:
        received.store_calls_at_ready = contender.store_calls
        on_ready()

    countdown = Countdown(received.subscriptions, ready)

    async def subscription(run_id: str) -> None:
        first = True
        latest = worst[run_id]
        async for delivery in contender.subscribe(run_id):
            now = time.time()
            received.events += 1
            if first:
                first = False
                countdown.tick()
            stamp = sent_at(delivery.data)
            if stamp is not None:
                latency = now - stamp
                received.latencies.append(latency)
                index = index_of(delivery.data)
                if index >= len(latest):
                    latest.extend([-math.inf] * (index + 1 - len(latest)))
                if index >= 0 and latency > latest[index]:
                    latest[index] = latency
        received.finished += 1

    tasks = [asyncio.create_task(subscription(run)) for run in runs for _ in range(per_run)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    received.timed_out = bool(pending)
    await _cancel(pending)
    failures = [task.exception() for task in done if task.exception() is not None]
    if failures:
        received.error = f"{len(failures)} subscription(s) failed, first: {failures[0]!r}"
    received.last_latencies = [
        latency for latest in worst.values() for latency in latest if latency != -math.inf
    ]
    received.store_calls_at_end = contender.store_calls
    return received


@dataclass
class IdleFigures:
    """Resident memory and store calls of idle subscriptions in one process."""

    subscriptions: int
    rss_before: int
    rss_after: int
    bytes_per_subscription: float
    window_seconds: float
    store_calls_per_second: float | None


async def hold_idle(
    contender: Contender, runs: Sequence[str], *, window: float, timeout: float
) -> IdleFigures:
    """One idle subscription per run: memory before and after opening them, calls while idle."""
    import psutil

    me = psutil.Process()
    for start in range(0, len(runs), 50):
        await asyncio.gather(*(contender.publish(run, "hello", HELLO) for run in runs[start : start + 50]))
    gc.collect()
    rss_before = me.memory_info().rss
    opened = asyncio.Event()
    countdown = Countdown(len(runs), opened.set)

    async def subscription(run_id: str) -> None:
        async for _ in contender.subscribe(run_id):
            countdown.tick()

    tasks = [asyncio.create_task(subscription(run)) for run in runs]
    try:
        await _until_set(opened, tasks, timeout)
        await asyncio.sleep(min(1.0, window))  # let the opening reads and allocations settle
        calls_before, started = contender.store_calls, time.perf_counter()
        await asyncio.sleep(window)
        calls_after, seconds = contender.store_calls, time.perf_counter() - started
        gc.collect()
        rss_after = me.memory_info().rss
    finally:
        await _cancel(tasks)
    calls_rate = None
    if calls_before is not None and calls_after is not None:
        calls_rate = (calls_after - calls_before) / seconds
    return IdleFigures(
        subscriptions=len(runs),
        rss_before=rss_before,
        rss_after=rss_after,
        bytes_per_subscription=(rss_after - rss_before) / len(runs),
        window_seconds=seconds,
        store_calls_per_second=calls_rate,
    )


async def _until_set(flag: asyncio.Event, tasks: Sequence[asyncio.Task[None]], timeout: float) -> None:
    """Wait for *flag*; fail at once if one of *tasks* ends first, or after *timeout*."""
    waiting = asyncio.create_task(flag.wait())
    await asyncio.wait([waiting, *tasks], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if flag.is_set():
        return
    ended = next((task for task in tasks if task.done()), None)
    if ended is not None and ended.exception() is not None:
        raise RuntimeError(f"a subscription failed: {ended.exception()!r}")
    raise TimeoutError(f"the subscriptions did not all open within {timeout:.0f} s")


async def _cancel(tasks: Sequence[asyncio.Task[None]] | set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the process ----------------------------------------------------------------------------


def _emit(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _raise_open_files_limit() -> None:
    """A thousand Redis subscribers hold a thousand sockets: lift the soft limit to the hard one."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(args: argparse.Namespace) -> dict[str, object]:
    spec = ProcessSpec(args.contender, os.environ.get(TARGET_ENV, ""), args.prefix)
    runs = run_ids(args.run_prefix, args.runs)
    contender = open_contender(spec, connections=len(runs) * args.per_run + 16)
    async with contender:
        if args.mode == "idle":
            return asdict(await hold_idle(contender, runs, window=args.window, timeout=args.timeout))
        received = await follow(
            contender,
            runs,
            args.per_run,
            on_ready=lambda: _emit({"ready": True, "store_calls": contender.store_calls}),
            timeout=args.timeout,
        )
        # Its fields as they are: asdict would copy the lists of latencies float by float.
        return dict(vars(received))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pgbridge.bench.subscriber", description=__doc__)
    parser.add_argument("mode", choices=["follow", "idle"])
    parser.add_argument("--contender", required=True, choices=["pgbridge", "redis", "inprocess"])
    parser.add_argument("--prefix", default="", help="key prefix of the store (Redis)")
    parser.add_argument("--run-prefix", required=True, help="run IDs are RUN_PREFIX0, RUN_PREFIX1, ...")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--per-run", type=int, default=1, help="subscriptions per run (follow)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds idle (idle)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _raise_open_files_limit()
    try:
        result = asyncio.run(_serve(args))
    except Exception as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
