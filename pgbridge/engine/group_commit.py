"""Group commit: what piles up while batches are in flight goes as one statement and one commit.

The one mechanism behind the bridge's publishes (:mod:`pgbridge.engine.publish`)
and Durable Streams appends (:mod:`pgbridge.durable_streams.streams`),
docs/behaviour.md §5 and §11. A request that finds a free slot is sent at
once, alone (no added latency for a lone caller); requests that arrive while
``max_in_flight`` batches are running wait for the next batch, so under load
the batches grow instead of the number of commits. Each caller is answered
only after the batch holding its request has committed, or told why it
failed. A user supplies only what differs: how a batch becomes a statement
(``send``) and how a result answers its request (``answer``), plus optional
policies (retrying, sending a refused batch again one request at a time,
per-key batches, lock order).

Failures are classified once, here (:func:`classify_failure`), the same way
for every user: a batch that was not sent, or that PostgreSQL aborted or
rolled back, wrote nothing and may be sent again; a connection lost while
the statement was in flight leaves its outcome unknown; anything else is the
server refusing the statement itself.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg

from pgbridge.connector import Backoff, is_connection_error, retry_until
from pgbridge.exceptions import (
    DatabaseUnavailableError,
    PublishOutcomeUnknownError,
    RolledBackByConflictError,
    StreamBridgeError,
)

Req = TypeVar("Req")
Res = TypeVar("Res")
Ans = TypeVar("Ans")


class Failure(enum.Enum):
    """What a failed batch statement means for the requests it carried."""

    #: The driver refused before sending, or no connection could be had: nothing written.
    NOT_SENT = "not_sent"
    #: The server answered with a connection-class error (57P01 admin shutdown, ...):
    #: it aborted the statement, so nothing was written.
    ABORTED = "aborted"
    #: Rolled back as a deadlock victim or by a serialization failure: nothing written,
    #: and the other side has gone on.
    CONFLICT = "conflict"
    #: The connection vanished with no answer (or timed out): the commit may or may not
    #: have happened.
    LOST = "lost"
    #: The server refused the statement itself (bad data, a check): nothing written, and
    #: the same batch would be refused again.
    REFUSED = "refused"


#: Failures after which nothing was written and sending the same batch again is safe.
RETRYABLE = frozenset({Failure.NOT_SENT, Failure.ABORTED, Failure.CONFLICT})


def classify_failure(exc: BaseException) -> Failure:
    """What *exc*, raised by a batch statement, means: see :class:`Failure`.

    Takes the driver's exceptions as they come, and the bridge's own once a
    user has translated them (:class:`DatabaseUnavailableError`: not sent;
    :class:`PublishOutcomeUnknownError`: lost; :class:`RolledBackByConflictError`).
    """
    if isinstance(exc, PublishOutcomeUnknownError):
        return Failure.LOST
    if isinstance(exc, DatabaseUnavailableError):
        return Failure.NOT_SENT
    if isinstance(exc, RolledBackByConflictError):
        return Failure.CONFLICT
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | OSError | TimeoutError):
        return Failure.LOST
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return Failure.NOT_SENT
    if is_connection_error(exc):
        return Failure.ABORTED
    if isinstance(exc, asyncpg.exceptions.DeadlockDetectedError | asyncpg.exceptions.SerializationError):
        return Failure.CONFLICT
    return Failure.REFUSED


def is_retryable(exc: BaseException) -> bool:
    """Whether the batch that raised *exc* wrote nothing and may be sent again."""
    return classify_failure(exc) in RETRYABLE


@dataclass(frozen=True, slots=True)
class Retry:
    """Send a batch again after a :data:`RETRYABLE` failure, for up to *timeout* seconds."""

    timeout: float
    backoff: Backoff = field(default_factory=Backoff)


def _one(_: object) -> int:
    return 1


@dataclass(slots=True)
class _Waiting(Generic[Req, Ans]):
    """A queued request and its caller's answer."""

    request: Req
    size: int
    answer: asyncio.Future[Ans]

    # A caller that went away (was cancelled), or one answered already, is not answered.

    def succeed(self, result: Ans) -> None:
        if not self.answer.done():
            self.answer.set_result(result)

    def fail(self, error: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


class GroupCommit(Generic[Req, Res, Ans]):
    """A queue of requests sent in batches, one statement (and one commit) per batch.

    *send* runs one batch's statement and gives one result per request, in
    order; *answer* turns a request's result into its caller's answer (or
    raises what the caller is told). Every request is answered after its
    batch committed, in queue order. The policies:

    * *size_of*: how much of a batch a request takes (a group of events that
      must commit together counts as its events and is never split); a
      batch holds at most *max_batch_size* of it, or one request if larger.
    * *share_out*: what is queued is shared out over the free slots (the
      batches run side by side on as many connections), instead of filling
      the first batch; over no more slots than leave each batch at least
      *min_share* of it (a statement has a fixed cost: below some size,
      another batch side by side costs more than it overlaps).
    * *batch_key*: a batch holds only requests of its oldest request's key
      (a sharded deployment: one shard per transaction); the others keep
      their places in the queue.
    * *lock_order*: a batch is sent sorted by it (stable: arrival order
      within a key), so two batches never wait on each other's row locks.
    * *next_turn*: a batch is started on the loop's next turn, so every
      request that arrives in this turn (all the callers a finished batch
      just woke, all the requests read from the sockets together) joins it.
    * *retry*: a batch whose failure wrote nothing is sent again until the
      timeout (:data:`RETRYABLE`).
    * *send_alone*: a batch of several requests the server refused
      (:attr:`Failure.REFUSED` or :attr:`Failure.CONFLICT`, not a connection
      failure) is sent again one request per transaction, so one bad request
      fails alone.
    * *committed*: called with a committed batch's requests and results, before
      any caller is answered (metrics, logs, after-commit wake-ups).
    * *failed*: called with a failed batch's requests and error; returns what
      its callers are told (default: the error itself).
    """

    def __init__(
        self,
        send: Callable[[list[Req]], Awaitable[Sequence[Res]]],
        answer: Callable[[Req, Res], Ans],
        *,
        name: str,
        max_in_flight: int,
        max_batch_size: int,
        size_of: Callable[[Req], int] = _one,
        share_out: bool = False,
        min_share: int = 1,
        batch_key: Callable[[Req], Hashable] | None = None,
        lock_order: Callable[[Req], Any] | None = None,
        next_turn: bool = False,
        retry: Retry | None = None,
        send_alone: Callable[[Req], Awaitable[Res]] | None = None,
        committed: Callable[[list[Req], Sequence[Res]], None] | None = None,
        failed: Callable[[list[Req], Exception], BaseException] | None = None,
    ) -> None:
        self._send = send
        self._answer = answer
        self._name = name
        self._max_in_flight = max(1, max_in_flight)
        self._max_batch_size = max_batch_size
        self._size_of = size_of
        self._share_out = share_out
        self._min_share = max(1, min_share)
        self._batch_key = batch_key
        self._lock_order = lock_order
        self._next_turn = next_turn
        self._retry = retry
        self._send_alone = send_alone
        self._committed = committed
        self._failed = failed
        self._queue: collections.deque[_Waiting[Req, Ans]] = collections.deque()
        self._queued_size = 0
        self._flushes: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Batches taken from the queue, and the size of the requests they carried (for
        #: metrics and tests).
        self.batches = 0
        self.requests = 0

    async def submit(self, request: Req) -> Ans:
        """Queue *request*; its answer once its batch committed (or the error it failed with)."""
        loop = self._loop or self._first_loop()
        waiting: _Waiting[Req, Ans] = _Waiting(request, self._size_of(request), loop.create_future())
        self._queue.append(waiting)
        self._queued_size += waiting.size
        if not self._next_turn:
            self._start_flushes()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flushes)
        return await waiting.answer

    def _first_loop(self) -> asyncio.AbstractEventLoop:
        """The loop of the first request, kept: asking for the running loop costs a getpid()
        system call each time (py-spy: 5 % of a publishing process in workload (b))."""
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def close(self) -> None:
        """Wait for the batches in flight (and what is queued behind them)."""
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    # -- taking batches ----------------------------------------------------------

    def _start_flushes(self) -> None:
        self._scheduled = False
        while self._queue and len(self._flushes) < self._max_in_flight:
            batch = self.take_batch(self._max_in_flight - len(self._flushes))
            task = asyncio.create_task(self._flush(batch), name=self._name)
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    def take_batch(self, free_slots: int) -> list[_Waiting[Req, Ans]]:
        """The oldest queued requests that fit one batch (never none while any is queued)."""
        limit = self._max_batch_size
        if self._share_out:
            shares = max(1, min(free_slots, self._queued_size // self._min_share))
            limit = min(-(-self._queued_size // shares), limit)
        key = self._batch_key(self._queue[0].request) if self._batch_key is not None else None
        batch: list[_Waiting[Req, Ans]] = []
        rest: collections.deque[_Waiting[Req, Ans]] = collections.deque()
        size = 0
        while self._queue:
            waiting = self._queue[0]
            if self._batch_key is not None and self._batch_key(waiting.request) != key:
                rest.append(self._queue.popleft())
                continue
            if batch and size + waiting.size > limit:
                break  # full: the key's later requests wait too (order)
            batch.append(self._queue.popleft())
            size += waiting.size
        if rest:
            self._queue.extendleft(reversed(rest))
        self._queued_size -= size
        return batch

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._start_flushes()

    # -- sending a batch ---------------------------------------------------------

    async def _flush(self, batch: list[_Waiting[Req, Ans]]) -> None:
        if self._lock_order is not None:
            order = self._lock_order
            batch.sort(key=lambda waiting: order(waiting.request))
        requests = [waiting.request for waiting in batch]
        self.batches += 1
        self.requests += sum(waiting.size for waiting in batch)
        try:
            try:
                results = await self._send_with_retries(requests)
            except Exception as exc:
                alone = self._send_alone is not None and len(batch) > 1
                if alone and classify_failure(exc) in (Failure.REFUSED, Failure.CONFLICT):
                    # Nothing was committed: each request again, alone, for its own answer.
                    await self._one_by_one(batch)
                    return
                failure = self._failed(requests, exc) if self._failed is not None else exc
                for waiting in batch:
                    waiting.fail(failure)
                return
            if self._committed is not None:
                self._committed(requests, results)
            for waiting, result in zip(batch, results, strict=True):
                self._answer_from(waiting, result)
        finally:
            for waiting in batch:  # only if a callback above broke: no caller waits forever
                waiting.fail(StreamBridgeError(f"{self._name}: the batch ended without an answer"))

    async def _send_with_retries(self, requests: list[Req]) -> Sequence[Res]:
        async def once() -> Sequence[Res]:
            results = await self._send(requests)
            if len(results) != len(requests):
                raise StreamBridgeError(
                    f"a batch of {len(requests)} requests was answered {len(results)} results"
                )
            return results

        if self._retry is None:
            return await once()
        return await retry_until(
            once,
            deadline=asyncio.get_running_loop().time() + self._retry.timeout,
            backoff=self._retry.backoff,
            retryable=is_retryable,
        )

    async def _one_by_one(self, batch: list[_Waiting[Req, Ans]]) -> None:
        assert self._send_alone is not None
        for waiting in batch:
            try:
                result = await self._send_alone(waiting.request)
            except Exception as exc:
                waiting.fail(exc)
                continue
            if self._committed is not None:
                self._committed([waiting.request], [result])
            self._answer_from(waiting, result)

    def _answer_from(self, waiting: _Waiting[Req, Ans], result: Res) -> None:
        """Answer *waiting* from its committed *result* (what ``answer`` raises is its answer)."""
        try:
            answered = self._answer(waiting.request, result)
        except Exception as exc:
            waiting.fail(exc)
        else:
            waiting.succeed(answered)
