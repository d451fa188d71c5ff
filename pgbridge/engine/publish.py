"""Appending events with group commit: answered only after commit, batched under load.

Every append goes through one queue per bridge. When no batch is in flight
an append is sent at once, alone (no added latency for a lone publisher);
appends that arrive while batches are in flight wait for the next batch, and
each batch is one statement, one transaction and one round trip
(``pgbridge_append_batch``, revision 0004), however many runs it touches.
At most ``max_batches_in_flight`` batches run at once, so under load the
batches grow instead of the number of commits. Each caller is answered when
the batch holding its event has committed. Within a batch the appends run in
queue order, so a ``publish_many`` (always one batch) keeps its order, and
seqs are assigned under each run row's lock as for single appends.

A run can refuse its events in the batch statement itself (a non-JSON or
soft-deleted Durable Stream: ``refused``, revision 0008); its callers get
:class:`StreamContentTypeError` or :class:`StreamGoneError`, and the other
runs of the batch are stored as usual.

Failure rule, per batch: if no connection can be had, nothing was sent and
the batch is retried until ``publish_retry_timeout``; so is a batch that
PostgreSQL aborted as a deadlock victim or a serialization failure (the
statement rolled back: nothing was written, and the other side has gone
on). A batch locks its runs in run-id order, but a transaction outside it
(a fork's creation, a retention pass deleting a fork and its source) may
not, and a batch of many callers must not fail them all for it. If the
connection is
lost while the statement is in flight, the outcome is unknown and every
caller in the batch gets :class:`PublishOutcomeUnknownError`. A publish is
never reported as written when it was not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from pgbridge.connector import Backoff, Database, is_connection_error, retry_until
from pgbridge.exceptions import (
    DatabaseUnavailableError,
    PublishOutcomeUnknownError,
    StreamBridgeError,
    StreamContentTypeError,
    StreamGoneError,
)
from pgbridge.ids import format_event_id
from pgbridge.metrics import NO_METRICS, BridgeMetrics
from pgbridge.store.events import Appended, EventStore

logger = logging.getLogger(__name__)

CommitCallback = Callable[[str, Appended, str, str, bool], None]


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One event to append: its run, name, JSON text, and whether it ends the run."""

    run_id: str
    event: str
    data_text: str
    terminal: bool = False
    status: str = "active"


@dataclass(frozen=True, slots=True)
class Refused:
    """An event the batch function refused for its run's sake (not a terminal run's)."""

    #: ``content_type`` (a non-JSON Durable Stream) or ``gone`` (soft-deleted: forks read it).
    reason: str


#: What one appended request came to: stored, refused by its run, or None (a terminal run).
AppendResult = Appended | Refused | None


@dataclass(slots=True)
class _Waiting:
    """Requests that must commit together (one publish, or one publish_many), and their caller."""

    requests: Sequence[AppendRequest]
    answer: asyncio.Future[list[Appended | None]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Publisher:
    """Writes events in batches and reports each commit to *on_commit*."""

    def __init__(
        self,
        db: Database,
        *,
        on_commit: CommitCallback,
        retry_timeout: float,
        max_batches_in_flight: int,
        max_batch_size: int = 1000,
        batch_per_run: bool = False,
        backoff: Backoff | None = None,
        metrics: BridgeMetrics = NO_METRICS,
    ) -> None:
        self._db = db
        self._store = EventStore(db)
        self._metrics = metrics
        self._on_commit = on_commit
        self._retry_timeout = retry_timeout
        self._max_in_flight = max_batches_in_flight
        self._max_batch_size = max_batch_size
        #: Each batch holds one run's events (a sharded deployment: one shard per transaction).
        self._batch_per_run = batch_per_run
        self._backoff = backoff or Backoff()
        self._queue: list[_Waiting] = []
        self._flushes: set[asyncio.Task[None]] = set()
        #: Batches sent and events they carried (for metrics and tests).
        self.batches = 0
        self.events = 0

    async def append(self, request: AppendRequest) -> Appended | None:
        """Append one event; None when the run already has its terminal event."""
        (appended,) = await self.append_together([request])
        return appended

    async def append_together(self, requests: Sequence[AppendRequest]) -> list[Appended | None]:
        """Append *requests* in one transaction, in order; None for each refused (terminal run)."""
        started = time.perf_counter()
        waiting = _Waiting(requests)
        self._queue.append(waiting)
        self._start_flushes()
        answered = await waiting.answer
        self._metrics.publish_latency(time.perf_counter() - started)
        return answered

    async def close(self) -> None:
        """Wait for the batches in flight (and what is queued behind them)."""
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    def _start_flushes(self) -> None:
        while self._queue and len(self._flushes) < self._max_in_flight:
            batch = self._take_batch()
            task = asyncio.create_task(self._flush(batch), name="pgbridge-publish-batch")
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    def _take_batch(self) -> list[_Waiting]:
        """The oldest waiting groups, up to the batch size (a group is never split).

        With ``batch_per_run``, only groups of the oldest group's run (each
        group is one run's), in queue order; the others keep their places.
        """
        if self._batch_per_run:
            return self._take_run_batch()
        batch: list[_Waiting] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].requests) <= self._max_batch_size):
            waiting = self._queue.pop(0)
            batch.append(waiting)
            size += len(waiting.requests)
        return batch

    def _take_run_batch(self) -> list[_Waiting]:
        run_id = self._queue[0].requests[0].run_id
        batch: list[_Waiting] = []
        rest: list[_Waiting] = []
        size = 0
        full = False  # once a group of the run is left out, later ones wait too (order)
        for waiting in self._queue:
            if waiting.requests[0].run_id == run_id and not full:
                if not batch or size + len(waiting.requests) <= self._max_batch_size:
                    batch.append(waiting)
                    size += len(waiting.requests)
                    continue
                full = True
            rest.append(waiting)
        self._queue = rest
        return batch

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._start_flushes()

    async def _flush(self, batch: list[_Waiting]) -> None:
        requests = [request for waiting in batch for request in waiting.requests]
        deadline = asyncio.get_running_loop().time() + self._retry_timeout
        try:
            results = await retry_until(
                lambda: self._append_once(requests),
                deadline=deadline,
                backoff=self._backoff,
                retryable=lambda exc: isinstance(exc, DatabaseUnavailableError | _AbortedByConflict),
            )
        except Exception as exc:
            self._report_failure(requests, exc)
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
            return
        self.batches += 1
        self.events += len(requests)
        self._report_commit(requests, results)
        position = 0
        for waiting in batch:
            answered = results[position : position + len(waiting.requests)]
            position += len(waiting.requests)
            stored: list[Appended | None] = []
            for request, appended in zip(waiting.requests, answered, strict=True):
                if isinstance(appended, Appended):
                    self._on_commit(
                        request.run_id, appended, request.event, request.data_text, request.terminal
                    )
                stored.append(appended if isinstance(appended, Appended) else None)
            refusal = next((a for a in answered if isinstance(a, Refused)), None)
            if waiting.answer.done():  # a caller that was cancelled no longer waits
                continue
            if refusal is not None:
                waiting.answer.set_exception(refusal_error(waiting.requests[0].run_id, refusal))
            else:
                waiting.answer.set_result(stored)

    def _report_commit(self, requests: list[AppendRequest], results: list[AppendResult]) -> None:
        """Metrics for a committed batch; a log record for each terminal event (one per run)."""
        terminals = 0
        for request, appended in zip(requests, results, strict=True):
            if request.terminal and isinstance(appended, Appended):
                terminals += 1
                event_id = format_event_id(appended.ms, appended.seq)
                logger.info(
                    "pgbridge run %r is over: terminal event %r %s committed, status %s",
                    request.run_id,
                    request.event,
                    event_id,
                    request.status,
                    extra={"run_id": request.run_id, "event_id": event_id, "status": request.status},
                )
        self._metrics.events_published(sum(isinstance(a, Appended) for a in results), terminals)

    def _report_failure(self, requests: list[AppendRequest], exc: Exception) -> None:
        """A log record per run of a batch that could not be published, and the metric."""
        reason = _failure_reason(exc)
        self._metrics.publish_failed(reason, len(requests))
        per_run: dict[str, int] = {}
        for request in requests:
            per_run[request.run_id] = per_run.get(request.run_id, 0) + 1
        for run_id, count in per_run.items():
            logger.warning(
                "pgbridge could not publish %d event(s) to run %r (%s): %s",
                count,
                run_id,
                reason,
                exc,
                extra={"run_id": run_id, "reason": reason, "events": count},
            )

    async def _append_once(self, requests: list[AppendRequest]) -> list[AppendResult]:
        async with self._db.connection() as conn:
            try:
                outcomes = await self._store.append_batch(conn, requests)
            except Exception as exc:
                raise _classify_append_failure(exc, requests) from exc
            finally:
                self._db.statements += 1
        return [
            o.appended or (Refused(o.refused) if o.refused in ("content_type", "gone") else None)
            for o in outcomes
        ]

    async def terminal_event(self, run_id: str) -> Appended | None:
        """The committed terminal event of *run_id*, if it has one."""
        return await self._store.terminal_event(run_id)


def _classify_append_failure(exc: Exception, requests: list[AppendRequest]) -> StreamBridgeError:
    """What an append failure means for the batch's events: not written, or unknown.

    * The driver refused before sending (closed or busy connection): not
      written, retryable.
    * The server answered the statement with a connection-class error (57P01
      admin shutdown, ...): it aborted the statement, so not written,
      retryable.
    * The connection vanished with no answer (or timed out): the commit may
      or may not have happened.
    """
    what = _describe(requests)
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | OSError | TimeoutError):
        return PublishOutcomeUnknownError(
            f"the connection to PostgreSQL was lost while publishing {what}; "
            f"the event may or may not be stored: read the run before publishing it again ({exc})"
        )
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return DatabaseUnavailableError(f"connection unusable before publishing: {exc}")
    if is_connection_error(exc):
        return DatabaseUnavailableError(f"PostgreSQL refused the append: {exc}")
    if isinstance(exc, asyncpg.exceptions.DeadlockDetectedError | asyncpg.exceptions.SerializationError):
        return _AbortedByConflict(f"publishing {what} was rolled back by a lock conflict: {exc}")
    return StreamBridgeError(f"publishing {what} failed: {exc}")


class _AbortedByConflict(StreamBridgeError):
    """PostgreSQL rolled the batch back to break a deadlock (or a serialization
    conflict): nothing was written, and sending it again is safe."""


def refusal_error(run_id: str, refusal: Refused) -> StreamBridgeError:
    """What a caller whose run refused its events is told (nothing of theirs was stored)."""
    if refusal.reason == "content_type":
        return StreamContentTypeError(
            f"run {run_id!r} is a Durable Stream whose content type is not JSON: its messages are "
            "bytes, and a published event is JSON; append to it over the Durable Streams protocol"
        )
    return StreamGoneError(
        f"run {run_id!r} is a Durable Stream that was deleted or expired while forks still read it; "
        "nothing can be published to it until its last fork is deleted"
    )


def _failure_reason(exc: Exception) -> str:
    """The ``reason`` label of a failed batch: what the callers were told."""
    if isinstance(exc, PublishOutcomeUnknownError):
        return "outcome_unknown"
    if isinstance(exc, DatabaseUnavailableError):
        return "unavailable"
    return "error"


def _describe(requests: list[AppendRequest]) -> str:
    if len(requests) == 1:
        return f"{requests[0].event!r} to run {requests[0].run_id!r}"
    runs = sorted({r.run_id for r in requests})
    shown = ", ".join(repr(run) for run in runs[:3]) + (", ..." if len(runs) > 3 else "")
    return f"a batch of {len(requests)} events (runs {shown})"
