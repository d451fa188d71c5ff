"""Appending events with group commit: answered only after commit, batched under load.

Every append goes through one queue per bridge, the group commit of
:mod:`pgbridge.engine.group_commit` (shared with Durable Streams appends);
this module supplies the statement of a batch and what each caller is told
(docs/behaviour.md §5 and §11). When no batch is in flight
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
connection is lost while the statement is in flight, the outcome is unknown and every
caller in the batch gets :class:`PublishOutcomeUnknownError`. A publish is
never reported as written when it was not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from pgbridge.connector import Backoff, Database
from pgbridge.engine.group_commit import (
    Failure,
    GroupCommit,
    Retry,
    classify_failure,
)
from pgbridge.exceptions import (
    DatabaseUnavailableError,
    PublishOutcomeUnknownError,
    RolledBackByConflictError,
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


class Publisher:
    """Writes events in batches (:class:`~pgbridge.engine.group_commit.GroupCommit`) and
    reports each commit to *on_commit*.

    A queued request is a group of events that must commit together (one
    publish, or one publish_many), never split across batches; the batch is
    one ``pgbridge_append_batch`` statement (:meth:`_append_once`), sent
    again after a failure that wrote nothing until *retry_timeout*.
    """

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
        notify_channel: str | None = None,
    ) -> None:
        self._db = db
        #: Where a batch sent while no other is in flight wakes other processes from inside its
        #: own transaction (None: never; the bridge's notifier does it after every commit).
        self._notify_channel = notify_channel
        self._in_flight = 0
        self._store = EventStore(db)
        self._metrics = metrics
        self._on_commit = on_commit
        self._commits: GroupCommit[Sequence[AppendRequest], list[AppendResult], list[Appended | None]]
        self._commits = GroupCommit(
            self._send,
            _answer,
            name="pgbridge-publish-batch",
            max_in_flight=max_batches_in_flight,
            max_batch_size=max_batch_size,
            size_of=len,
            # Each batch holds one run's events (a sharded deployment: one shard per transaction).
            batch_key=(lambda group: group[0].run_id) if batch_per_run else None,
            retry=Retry(retry_timeout, backoff or Backoff()),
            committed=self._committed,
            failed=self._failed,
        )

    @property
    def batches(self) -> int:
        """Batches sent (for tests)."""
        return self._commits.batches

    async def append(self, request: AppendRequest) -> Appended | None:
        """Append one event; None when the run already has its terminal event."""
        (appended,) = await self.append_together([request])
        return appended

    async def append_together(self, requests: Sequence[AppendRequest]) -> list[Appended | None]:
        """Append *requests* in one transaction, in order; None for each refused (terminal run)."""
        started = time.perf_counter()
        answered = await self._commits.submit(requests)
        self._metrics.publish_latency(time.perf_counter() - started)
        return answered

    async def close(self) -> None:
        """Wait for the batches in flight (and what is queued behind them)."""
        await self._commits.close()

    async def _send(self, groups: list[Sequence[AppendRequest]]) -> list[list[AppendResult]]:
        """One batch: every group's events in one statement, in queue order; results per group.

        A batch sent while no other is in flight also sends its runs' wake-ups, carrying the
        events, in the same statement: the commit wakes other processes, with no NOTIFY
        statement after it. PostgreSQL serialises notifying commits, so while batches overlap
        they leave the wake-ups to the notifier, which coalesces them after commit.
        """
        lone = self._in_flight == 0
        self._in_flight += 1
        try:
            results = await self._append_once([request for group in groups for request in group], notify=lone)
        finally:
            self._in_flight -= 1
        answered: list[list[AppendResult]] = []
        position = 0
        for group in groups:
            answered.append(results[position : position + len(group)])
            position += len(group)
        return answered

    def _committed(
        self, groups: list[Sequence[AppendRequest]], results: Sequence[list[AppendResult]]
    ) -> None:
        """Metrics and logs for a committed batch, then *on_commit* for each stored event, in order."""
        requests = [request for group in groups for request in group]
        appended = [result for answered in results for result in answered]
        self._report_commit(requests, appended)
        for request, result in zip(requests, appended, strict=True):
            if isinstance(result, Appended):
                self._on_commit(request.run_id, result, request.event, request.data_text, request.terminal)

    def _failed(self, groups: list[Sequence[AppendRequest]], exc: Exception) -> Exception:
        """A batch that could not be published: reported, and its callers told *exc*."""
        self._report_failure([request for group in groups for request in group], exc)
        return exc

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

    async def _append_once(
        self, requests: list[AppendRequest], *, notify: bool = False
    ) -> list[AppendResult]:
        channel = self._notify_channel if notify else None
        async with self._db.connection() as conn:
            try:
                outcomes = await self._store.append_batch(conn, requests, notify_channel=channel)
            except asyncpg.ProgramLimitExceededError as exc:
                if channel is None:
                    raise _classify_append_failure(exc, requests) from exc
                # The notification queue is full (a listener somewhere stopped reading): the
                # NOTIFY aborted the append, which wrote nothing. Append alone; the notifier
                # wakes readers after the commit, as it does for busy moments.
                logger.warning("pgbridge could not NOTIFY inside an append (%s); appending without", exc)
                self._db.statements += 1
                return await self._append_once(requests)
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
    """What an append failure means for the batch's events (:func:`classify_failure`),
    told in the words of a publish: not written (retryable), or unknown.

    * The driver refused before sending (closed or busy connection): not
      written, retryable.
    * The server answered the statement with a connection-class error (57P01
      admin shutdown, ...): it aborted the statement, so not written,
      retryable.
    * The connection vanished with no answer (or timed out): the commit may
      or may not have happened.
    """
    what = _describe(requests)
    failure = classify_failure(exc)
    if failure is Failure.LOST:
        return PublishOutcomeUnknownError(
            f"the connection to PostgreSQL was lost while publishing {what}; "
            f"the event may or may not be stored: read the run before publishing it again ({exc})"
        )
    if failure is Failure.NOT_SENT:
        return DatabaseUnavailableError(f"connection unusable before publishing: {exc}")
    if failure is Failure.ABORTED:
        return DatabaseUnavailableError(f"PostgreSQL refused the append: {exc}")
    if failure is Failure.CONFLICT:
        return RolledBackByConflictError(f"publishing {what} was rolled back by a lock conflict: {exc}")
    return StreamBridgeError(f"publishing {what} failed: {exc}")


def _answer(group: Sequence[AppendRequest], results: list[AppendResult]) -> list[Appended | None]:
    """A group's answer: its stored events (None for a terminal run's), or the error of a
    run that refused them."""
    refusal = next((result for result in results if isinstance(result, Refused)), None)
    if refusal is not None:
        raise refusal_error(group[0].run_id, refusal)
    return [result if isinstance(result, Appended) else None for result in results]


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
