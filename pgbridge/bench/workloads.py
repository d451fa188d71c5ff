"""The five workloads, each written once against the :class:`Contender` interface.

(a) ``latency``: one run, one publisher paced like a fast model, one
    subscriber in another process: publish latency and publish-to-receive
    latency;
(b) ``concurrent``: many runs at once, each with one publisher publishing as
    fast as it is acknowledged and two subscribers in another process:
    acknowledged events per second and end-to-end latency;
(c) ``fanout``: one run with one subscriber, then with many, in another
    process: publish-to-last-subscriber latency and store calls per event
    (constant means fan-out is free for the database);
(d) ``replay``: a long finished run read from its first event by a cold
    reader: events per second;
(e) ``idle``: resident memory and store calls of idle subscriptions, one per
    run, in a process of their own.

Subscribers of pgbridge and Redis run in a separate process (as SSE servers
do); the in-process reference can only subscribe in the publishing process.
Every run starts with a ``hello`` event, and measuring starts only once
every subscription has received it, so replay never counts as live latency.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pgbridge
from pgbridge.bench.contenders import Contender
from pgbridge.bench.payload import token_payload
from pgbridge.bench.stats import CpuMeter, Summary, summarize
from pgbridge.bench.subscriber import HELLO, TARGET_ENV, IdleFigures, Received, follow, run_ids
from pgbridge.exceptions import BenchError


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is: the defaults are the full run's sizes; quick mode keeps
    the shapes and the pacing and shrinks the counts."""

    latency_events: int = 2000
    #: Seconds between publishes: 200 tokens/s, a fast model's pace.
    latency_interval: float = 0.005
    concurrent_runs: int = 100
    concurrent_seconds: float = 10.0
    fanout_subscribers: int = 1000
    fanout_events: int = 200
    fanout_interval: float = 0.02
    replay_events: int = 100_000
    replay_batch: int = 1000
    idle_subscribers: int = 1000
    idle_window: float = 3.0
    ceiling_seconds: float = 5.0
    round_trips: int = 2000
    #: Calls of the append statement measured per batch shape (pgbridge/bench/append_cost.py).
    append_cost_samples: int = 40

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            latency_events=200,
            concurrent_runs=10,
            concurrent_seconds=2.0,
            fanout_subscribers=100,
            fanout_events=40,
            replay_events=10_000,
            idle_subscribers=100,
            idle_window=1.0,
            ceiling_seconds=1.0,
            round_trips=200,
            append_cost_samples=5,
        )


# -- where subscribers run --------------------------------------------------------------------


class SubscriberHost(abc.ABC):
    """Subscribers following a set of runs, here or in another process."""

    #: Whether the subscribers run in a process of their own.
    separate_process: bool

    @abc.abstractmethod
    async def start(self, runs: Sequence[str], run_prefix: str, per_run: int) -> None: ...

    @abc.abstractmethod
    async def ready(self, timeout: float) -> int | None:
        """Wait until every subscription has its run's first event; the host's store calls then."""

    @abc.abstractmethod
    async def finish(self, timeout: float) -> Received:
        """Wait until every subscription has seen its end event."""

    @abc.abstractmethod
    async def abort(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.abort()


class InProcessHost(SubscriberHost):
    """Subscribers as tasks of this process, on the publishing contender itself."""

    separate_process = False

    def __init__(self, contender: Contender, timeout: float) -> None:
        self._contender = contender
        self._timeout = timeout
        self._ready = asyncio.Event()
        self._task: asyncio.Task[Received] | None = None

    async def start(self, runs: Sequence[str], run_prefix: str, per_run: int) -> None:
        coroutine = follow(self._contender, runs, per_run, on_ready=self._ready.set, timeout=self._timeout)
        self._task = asyncio.create_task(coroutine)

    async def ready(self, timeout: float) -> int | None:
        assert self._task is not None
        waiting = asyncio.create_task(self._ready.wait())
        await asyncio.wait({waiting, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not self._ready.is_set():
            failure = self._task.exception() if self._task.done() else None
            raise BenchError(f"the subscribers did not all receive their first event in time ({failure!r})")
        return None  # they share the publisher's counters

    async def finish(self, timeout: float) -> Received:
        assert self._task is not None
        async with asyncio.timeout(timeout):
            received = await asyncio.shield(self._task)
        received.store_calls_at_ready = received.store_calls_at_end = None
        return _checked(received)

    async def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class ProcessHost(SubscriberHost):
    """Subscribers in ``python -m pgbridge.bench.subscriber``, talking JSON lines on stdout."""

    separate_process = True

    def __init__(self, contender: Contender, mode: str = "follow", extra: Sequence[str] = ()) -> None:
        self._spec = contender.process_spec()
        self._mode = mode
        self._extra = list(extra)
        self._process: asyncio.subprocess.Process | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._drain: asyncio.Task[None] | None = None

    async def start(self, runs: Sequence[str], run_prefix: str, per_run: int) -> None:
        args = [
            *("-m", "pgbridge.bench.subscriber", self._mode, "--contender", self._spec.name),
            *("--prefix", self._spec.prefix, "--run-prefix", run_prefix),
            *("--runs", str(len(runs)), "--per-run", str(per_run), *self._extra),
        ]
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_child_environment(self._spec.target),
            limit=1 << 28,  # the result line holds every latency sample
        )
        self._drain = asyncio.create_task(self._keep_stderr())

    async def _keep_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for line in self._process.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    async def _message(self, timeout: float) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self._process.stdout.readline()
        except TimeoutError:
            raise BenchError(f"the subscriber process did not answer within {timeout:.0f} s") from None
        if not line:
            await self._process.wait()
            raise BenchError(
                f"the subscriber process exited ({self._process.returncode}): {self.stderr_tail()}"
            )
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise BenchError(f"the subscriber process failed: {message['error']} {self.stderr_tail()}")
        return message

    def stderr_tail(self) -> str:
        return " | ".join(list(self._stderr)[-5:])

    async def ready(self, timeout: float) -> int | None:
        message = await self._message(timeout)
        if not message.get("ready"):
            raise BenchError(f"the subscriber process finished before it was ready: {str(message)[:300]}")
        calls = message.get("store_calls")
        return calls if isinstance(calls, int) else None

    async def result(self, timeout: float) -> dict[str, Any]:
        """The process's last line, once it exits."""
        message = await self._message(timeout)
        assert self._process is not None
        async with asyncio.timeout(30):
            await self._process.wait()
        result: dict[str, Any] = message["result"]
        return result

    async def finish(self, timeout: float) -> Received:
        return _checked(Received(**await self.result(timeout)))

    async def abort(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)


def _child_environment(target: str) -> dict[str, str]:
    """This process's environment, the store's address, and pgbridge importable from a checkout."""
    package_root = str(Path(pgbridge.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, TARGET_ENV: target, "PYTHONPATH": path}


def _checked(received: Received) -> Received:
    if received.error:
        raise BenchError(f"subscribers failed: {received.error}")
    if received.timed_out:
        raise BenchError(f"{received.subscriptions - received.finished} subscription(s) never saw their end")
    return received


def host_for(contender: Contender, timeout: float) -> SubscriberHost:
    """Subscribers in another process, unless the contender only works in this one."""
    if contender.in_process_only:
        return InProcessHost(contender, timeout)
    return ProcessHost(contender, extra=["--timeout", str(timeout)])


# -- helpers -------------------------------------------------------------------------------------

#: Seconds any subscriber set gets to open before a workload gives up.
READY_TIMEOUT = 120.0


async def _open_subscribers(
    contender: Contender, host: SubscriberHost, runs: Sequence[str], run_prefix: str, per_run: int
) -> int | None:
    """Start *host*'s subscribers, publish each run's hello, wait until all have it."""
    await host.start(runs, run_prefix, per_run)
    await asyncio.gather(*(contender.publish(run, "hello", HELLO) for run in runs))
    return await host.ready(READY_TIMEOUT)


async def _paced(contender: Contender, run_id: str, events: int, interval: float) -> list[float]:
    """Publish *events* stamped tokens, one every *interval* seconds; seconds each publish took."""
    loop = asyncio.get_running_loop()
    took, next_at = [], loop.time()
    for index in range(events):
        data = token_payload(index)
        started = time.perf_counter()
        await contender.publish(run_id, "token", data)
        took.append(time.perf_counter() - started)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return took


def _calls_per_event(
    publisher: tuple[int | None, int | None], subscribers: tuple[int | None, int | None], events: int
) -> float | None:
    """Store calls per event: the publisher's, plus the subscriber process's when there is one.

    None when the publisher does not count, or only one end of the subscriber's count is known.
    """
    pub_before, pub_after = publisher
    sub_before, sub_after = subscribers
    if pub_before is None or pub_after is None:
        return None
    calls = pub_after - pub_before
    if sub_before is not None and sub_after is not None:
        calls += sub_after - sub_before
    elif sub_before is not None or sub_after is not None:
        return None
    return round(calls / events, 3)


# -- (a) latency ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencyResult:
    events: int
    events_per_s_offered: float
    subscriber_process: bool
    publish: Summary
    receive: Summary
    lost: int


async def latency(contender: Contender, sizes: Sizes, run_prefix: str) -> LatencyResult:
    runs = run_ids(run_prefix, 1)
    duration = sizes.latency_events * sizes.latency_interval
    async with host_for(contender, timeout=duration + READY_TIMEOUT) as host:
        await _open_subscribers(contender, host, runs, run_prefix, per_run=1)
        took = await _paced(contender, runs[0], sizes.latency_events, sizes.latency_interval)
        await contender.publish_end(runs[0])
        received = await host.finish(duration + READY_TIMEOUT)
    return LatencyResult(
        events=sizes.latency_events,
        events_per_s_offered=round(1 / sizes.latency_interval),
        subscriber_process=host.separate_process,
        publish=summarize(took),
        receive=summarize(received.latencies),
        lost=sizes.latency_events - len(received.latencies),
    )


# -- (b) concurrent runs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConcurrentResult:
    runs: int
    subscribers_per_run: int
    subscriber_process: bool
    seconds: float
    events: int
    events_per_s: float
    end_to_end: Summary
    lost: int
    #: CPU while publishing: the publishing process (% of one core), the whole machine (% of all cores).
    publisher_cpu_percent: float
    machine_cpu_percent: float


SUBSCRIBERS_PER_RUN = 2


async def _publish_until(contender: Contender, run_id: str, deadline: float) -> int:
    """Publish stamped tokens back to back, each after the last was acknowledged, until *deadline*."""
    loop, count = asyncio.get_running_loop(), 0
    while loop.time() < deadline:
        await contender.publish(run_id, "token", token_payload(count))
        count += 1
    return count


async def concurrent(contender: Contender, sizes: Sizes, run_prefix: str) -> ConcurrentResult:
    runs = run_ids(run_prefix, sizes.concurrent_runs)
    limit = sizes.concurrent_seconds + 2 * READY_TIMEOUT
    async with host_for(contender, timeout=limit) as host:
        await _open_subscribers(contender, host, runs, run_prefix, SUBSCRIBERS_PER_RUN)
        deadline = asyncio.get_running_loop().time() + sizes.concurrent_seconds
        started, cpu = time.perf_counter(), CpuMeter()
        cpu.start()
        counts = await asyncio.gather(*(_publish_until(contender, run, deadline) for run in runs))
        seconds = time.perf_counter() - started
        publisher_cpu, machine_cpu = cpu.stop()
        await asyncio.gather(*(contender.publish_end(run) for run in runs))
        received = await host.finish(limit)
    events = sum(counts)
    return ConcurrentResult(
        runs=len(runs),
        subscribers_per_run=SUBSCRIBERS_PER_RUN,
        subscriber_process=host.separate_process,
        seconds=round(seconds, 3),
        events=events,
        events_per_s=round(events / seconds, 1),
        end_to_end=summarize(received.latencies),
        lost=events * SUBSCRIBERS_PER_RUN - len(received.latencies),
        publisher_cpu_percent=publisher_cpu,
        machine_cpu_percent=machine_cpu,
    )


# -- (c) fan-out ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FanoutPoint:
    subscribers: int
    events: int
    #: Publish to the last subscription receiving the event.
    fanout: Summary
    store_calls_per_event: float | None
    lost: int


@dataclass(frozen=True, slots=True)
class FanoutResult:
    subscriber_process: bool
    one: FanoutPoint
    many: FanoutPoint


async def _fanout_point(contender: Contender, sizes: Sizes, run_prefix: str, subscribers: int) -> FanoutPoint:
    runs = run_ids(run_prefix, 1)
    duration = sizes.fanout_events * sizes.fanout_interval
    async with host_for(contender, timeout=duration + READY_TIMEOUT) as host:
        sub_before = await _open_subscribers(contender, host, runs, run_prefix, subscribers)
        pub_before = contender.store_calls
        await _paced(contender, runs[0], sizes.fanout_events, sizes.fanout_interval)
        await contender.publish_end(runs[0])
        received = await host.finish(duration + READY_TIMEOUT)
        pub_after = contender.store_calls
    return FanoutPoint(
        subscribers=subscribers,
        events=sizes.fanout_events,
        fanout=summarize(received.last_latencies),
        store_calls_per_event=_calls_per_event(
            (pub_before, pub_after), (sub_before, received.store_calls_at_end), sizes.fanout_events + 1
        ),
        lost=sizes.fanout_events * subscribers - len(received.latencies),
    )


async def fanout(contender: Contender, sizes: Sizes, run_prefix: str) -> FanoutResult:
    one = await _fanout_point(contender, sizes, run_prefix + "one-", 1)
    many = await _fanout_point(contender, sizes, run_prefix + "many-", sizes.fanout_subscribers)
    return FanoutResult(subscriber_process=not contender.in_process_only, one=one, many=many)


# -- (d) replay ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayResult:
    events: int
    received: int
    seconds: float
    events_per_s: float
    fill_method: str
    fill_events_per_s: float
    store_calls: int | None
    store_calls_per_1000: float | None


async def replay(contender: Contender, sizes: Sizes, run_prefix: str) -> ReplayResult:
    run = run_ids(run_prefix, 1)[0]
    started = time.perf_counter()
    for first in range(0, sizes.replay_events, sizes.replay_batch):
        last = min(first + sizes.replay_batch, sizes.replay_events)
        await contender.publish_batch(run, [("token", token_payload(i)) for i in range(first, last)])
    await contender.publish_end(run)
    fill_seconds = time.perf_counter() - started
    events = sizes.replay_events + 1
    async with contender.reader() as reader:
        calls_before, received = reader.store_calls, 0
        started = time.perf_counter()
        async for _ in reader.subscribe(run):
            received += 1
        seconds = time.perf_counter() - started
        calls_after = reader.store_calls
    calls = calls_after - calls_before if calls_before is not None and calls_after is not None else None
    return ReplayResult(
        events=events,
        received=received,
        seconds=round(seconds, 3),
        events_per_s=round(received / seconds, 1),
        fill_method=contender.batch_method,
        fill_events_per_s=round(events / fill_seconds, 1),
        store_calls=calls,
        store_calls_per_1000=round(1000 * calls / received, 2) if calls is not None and received else None,
    )


# -- (e) idle subscribers ----------------------------------------------------------------------------------


async def idle(contender: Contender, sizes: Sizes, run_prefix: str) -> IdleFigures:
    """Always in a process of its own, even in-process: its RSS is the figure."""
    host = ProcessHost(
        contender, mode="idle", extra=["--window", str(sizes.idle_window), "--timeout", str(READY_TIMEOUT)]
    )
    async with host:
        await host.start(run_ids(run_prefix, sizes.idle_subscribers), run_prefix, per_run=1)
        figures = await host.result(READY_TIMEOUT + sizes.idle_window + 30)
    return IdleFigures(**figures)


#: Every workload, by its key in the results, in the order they run.
Workload = Callable[[Contender, Sizes, str], Awaitable[Any]]
WORKLOADS: dict[str, Workload] = {
    "a_latency": latency,
    "b_concurrent": concurrent,
    "c_fanout": fanout,
    "d_replay": replay,
    "e_idle": idle,
}
