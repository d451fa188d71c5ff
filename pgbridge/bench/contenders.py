"""The contenders: one small interface over pgbridge and the peers it is measured against.

* :class:`PgBridgeContender`: :class:`~pgbridge.PostgresStreamBridge` with
  its default options, as an application would construct it;
* :class:`InProcessContender`: a list per run and an :class:`asyncio.Condition`,
  the ceiling of a bridge with no I/O and no durability (it only works
  within one process);
* :class:`RedisContender`: Redis Streams through redis-py's asyncio client,
  ``XADD ... MAXLEN ~ 100000`` to publish and ``XREAD BLOCK`` from the last
  ID to follow, the usual way to build a resumable stream on Redis.

Every contender carries the same JSON payloads and ends a subscription after
its ``end`` event, so the workloads treat them alike. ``store_calls`` counts
the round trips a contender asked of its store (SQL statements for pgbridge,
commands for Redis), so the cost of fan-out can be compared, not only its
latency.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Self
from urllib.parse import urlsplit

from pgbridge.contract import CANCELLED_SENTINEL, END_SENTINEL, HEARTBEAT_SENTINEL, JSONValue

if TYPE_CHECKING:
    from pgbridge.bridge import PostgresStreamBridge

#: The event that ends a run, for every contender.
END_EVENT = "end"
REDIS_URL_ENV = "REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
#: Stream length cap of every XADD (approximate trimming, as deployments do).
REDIS_MAXLEN = 100_000
#: Entries per XREAD, the same as pgbridge's default page of a range read.
REDIS_READ_COUNT = 1000
#: How long one XREAD blocks: the default heartbeat interval of a pgbridge
#: subscription, since a stream server must wake up that often anyway.
REDIS_BLOCK_MS = 15_000


class Delivery(NamedTuple):
    """An event as a subscriber receives it."""

    id: str
    event: str
    data: JSONValue


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """How another process opens a contender on the same store.

    *target* (a DSN or a URL, which may hold a password) travels in the
    environment, not on the command line where ``ps`` shows it.
    """

    name: str
    target: str
    prefix: str


class Contender(abc.ABC):
    """A stream bridge under test."""

    #: Short name used in results and on the command line.
    name: ClassVar[str]
    #: Name in the report.
    label: ClassVar[str]
    #: True when subscribers must live in the publishing process (no shared store).
    in_process_only: ClassVar[bool] = False

    async def start(self) -> None:
        """Connect; nothing is measured before this returns."""

    async def close(self) -> None:
        """Release every connection."""

    @abc.abstractmethod
    async def publish(self, run_id: str, event: str, data: JSONValue) -> str:
        """Append one event; returns its ID once the store has it."""

    async def publish_batch(self, run_id: str, events: Sequence[tuple[str, JSONValue]]) -> list[str]:
        """Append several events of one run; one at a time unless the store batches."""
        return [await self.publish(run_id, event, data) for event, data in events]

    @abc.abstractmethod
    async def publish_end(self, run_id: str) -> str:
        """Append the run's ``end`` event; its subscribers stop after it."""

    @abc.abstractmethod
    def subscribe(self, run_id: str) -> AsyncIterator[Delivery]:
        """Every event of *run_id* from its first, then live ones, through ``end``."""

    @property
    def store_calls(self) -> int | None:
        """Round trips sent to the store so far; None when not counted."""
        return None

    @property
    def batch_method(self) -> str:
        """How :meth:`publish_batch` writes, for the report."""
        return "publish in a loop"

    @abc.abstractmethod
    def process_spec(self) -> ProcessSpec:
        """How a subscriber process opens this contender."""

    @abc.abstractmethod
    def reader(self) -> Contender:
        """A new, unstarted contender on the same store: a cold reader for replay."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


# -- pgbridge ---------------------------------------------------------------------------


class PgBridgeContender(Contender):
    """pgbridge as shipped: a :class:`~pgbridge.PostgresStreamBridge` with default options."""

    name = "pgbridge"
    label = "pgbridge"

    def __init__(self, dsn: str) -> None:
        from pgbridge.bridge import PostgresStreamBridge

        self.dsn = dsn
        self.bridge: PostgresStreamBridge = PostgresStreamBridge(dsn)

    async def start(self) -> None:
        await self.bridge.start()

    async def close(self) -> None:
        await self.bridge.close()

    async def publish(self, run_id: str, event: str, data: JSONValue) -> str:
        return await self.bridge.publish(run_id, event, data)

    async def publish_batch(self, run_id: str, events: Sequence[tuple[str, JSONValue]]) -> list[str]:
        many = getattr(self.bridge, "publish_many", None)
        if many is None:  # an older pgbridge: one publish per event
            return await super().publish_batch(run_id, events)
        ids: list[str] = await many(run_id, list(events))
        return ids

    async def publish_end(self, run_id: str) -> str:
        return await self.bridge.publish_end(run_id)

    async def subscribe(self, run_id: str) -> AsyncIterator[Delivery]:
        async for item in self.bridge.subscribe(run_id, last_event_id=None):
            if item is HEARTBEAT_SENTINEL:
                continue
            if item is END_SENTINEL or item is CANCELLED_SENTINEL:  # yielded as these very objects
                return
            yield Delivery(item.id, item.event, item.data)
            if item.event == END_EVENT:
                return

    @property
    def store_calls(self) -> int | None:
        count = getattr(self.bridge, "statements_run", None)
        return count if isinstance(count, int) else None

    @property
    def batch_method(self) -> str:
        return "publish_many" if hasattr(self.bridge, "publish_many") else "publish in a loop"

    def process_spec(self) -> ProcessSpec:
        return ProcessSpec(self.name, self.dsn, "")

    def reader(self) -> Contender:
        return PgBridgeContender(self.dsn)


# -- the in-process reference -------------------------------------------------------------


class _RunLog:
    """One run's events and the condition its subscribers wait on."""

    __slots__ = ("changed", "events")

    def __init__(self) -> None:
        self.events: list[Delivery] = []
        self.changed = asyncio.Condition()

    async def after(self, cursor: int) -> list[Delivery]:
        """The events after the first *cursor*, waiting until there is one."""
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.events) > cursor)
            return self.events[cursor:]


class InProcessContender(Contender):
    """The ceiling: no serialisation, no I/O, nothing survives the process."""

    name = "inprocess"
    label = "in-process"
    in_process_only = True

    def __init__(self, logs: dict[str, _RunLog] | None = None) -> None:
        self._logs = logs if logs is not None else {}

    def _log(self, run_id: str) -> _RunLog:
        log = self._logs.get(run_id)
        if log is None:
            log = self._logs[run_id] = _RunLog()
        return log

    async def publish(self, run_id: str, event: str, data: JSONValue) -> str:
        log = self._log(run_id)
        async with log.changed:
            log.events.append(Delivery(str(len(log.events) + 1), event, data))
            event_id = log.events[-1].id
            log.changed.notify_all()
        # Hand the loop over once, as any publish that does I/O would; without
        # it a publishing loop starves every subscriber of this process.
        await asyncio.sleep(0)
        return event_id

    async def publish_end(self, run_id: str) -> str:
        return await self.publish(run_id, END_EVENT, None)

    async def subscribe(self, run_id: str) -> AsyncIterator[Delivery]:
        log, cursor = self._log(run_id), 0
        while True:
            batch = await log.after(cursor)
            for delivery in batch:
                yield delivery
                if delivery.event == END_EVENT:
                    return
            cursor += len(batch)

    def process_spec(self) -> ProcessSpec:
        return ProcessSpec(self.name, "", "")

    def reader(self) -> Contender:
        return InProcessContender(self._logs)


# -- Redis Streams -------------------------------------------------------------------------


def redis_url() -> str:
    """``$REDIS_URL``, else the local default."""
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


def redacted(url: str) -> str:
    """*url* without credentials, for notes and reports."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


async def redis_unavailable_reason(url: str) -> str | None:
    """Why Redis cannot be benchmarked at *url*, or None when it answers."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return "the redis package is not installed (pip install redis)"
    client = aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return f"Redis does not answer at {redacted(url)} ({type(exc).__name__}: {exc})"
    finally:
        await client.aclose()
    return None


class RedisContender(Contender):
    """One stream per run; an entry is ``{event, data}`` with data as JSON text."""

    name = "redis"
    label = "Redis Streams"

    def __init__(self, url: str, prefix: str, *, max_connections: int = 256) -> None:
        self.url = url
        self.prefix = prefix
        self._max_connections = max_connections
        self._client: Any = None
        self._calls = 0

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            self.url, decode_responses=True, max_connections=self._max_connections
        )
        await self._client.ping()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def key(self, run_id: str) -> str:
        return self.prefix + run_id

    async def publish(self, run_id: str, event: str, data: JSONValue) -> str:
        self._calls += 1
        fields = {"event": event, "data": json.dumps(data, separators=(",", ":"))}
        entry_id: str = await self._client.xadd(
            self.key(run_id), fields, maxlen=REDIS_MAXLEN, approximate=True
        )
        return entry_id

    async def publish_batch(self, run_id: str, events: Sequence[tuple[str, JSONValue]]) -> list[str]:
        """Every XADD of the batch in one pipeline: one round trip, as a batching client would."""
        pipe = self._client.pipeline(transaction=False)
        for event, data in events:
            fields = {"event": event, "data": json.dumps(data, separators=(",", ":"))}
            pipe.xadd(self.key(run_id), fields, maxlen=REDIS_MAXLEN, approximate=True)
        self._calls += len(events)
        ids: list[str] = await pipe.execute()
        return ids

    async def publish_end(self, run_id: str) -> str:
        return await self.publish(run_id, END_EVENT, None)

    async def subscribe(self, run_id: str) -> AsyncIterator[Delivery]:
        key, last = self.key(run_id), "0-0"
        while True:
            self._calls += 1
            reply = await self._client.xread({key: last}, count=REDIS_READ_COUNT, block=REDIS_BLOCK_MS)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    yield Delivery(entry_id, fields["event"], json.loads(fields["data"]))
                    if fields["event"] == END_EVENT:
                        return

    @property
    def store_calls(self) -> int | None:
        return self._calls

    @property
    def batch_method(self) -> str:
        return "pipelined XADD"

    def process_spec(self) -> ProcessSpec:
        return ProcessSpec(self.name, self.url, self.prefix)

    def reader(self) -> Contender:
        return RedisContender(self.url, self.prefix)

    async def delete_streams(self) -> int:
        """Delete every stream under this contender's prefix; returns how many."""
        keys = [key async for key in self._client.scan_iter(match=self.prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await self._client.delete(*keys[start : start + 1000])
        return len(keys)


def open_contender(spec: ProcessSpec, *, connections: int) -> Contender:
    """The contender *spec* describes (in a subscriber process), not started."""
    if spec.name == PgBridgeContender.name:
        return PgBridgeContender(spec.target)
    if spec.name == RedisContender.name:
        return RedisContender(spec.target, spec.prefix, max_connections=connections)
    if spec.name == InProcessContender.name:
        return InProcessContender()
    raise ValueError(f"unknown contender {spec.name!r}")
