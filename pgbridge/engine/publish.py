"""Appending events with group commit: answered only after commit, batched under load.

Every append goes through one queue per bridge, the group commit of
:mod:`pgbridge.engine.group_commit` (shared with Durable Streams appends);
this module supplies the statement of a batch and what each caller is told
(docs/behaviour.md §5 and §11). Appends made in one turn of the event
loop join one batch, sent on the next turn (a lone publisher waits one
turn, microseconds); appends that arrive while batches are in flight wait
for a free slot, and what waits is shared out over the free slots, never
below :data:`PUBLISH_MIN_SHARE` events a batch. Each batch is one
statement, one transaction and one round trip (``pgbridge_append_batch``),
however many runs it touches. At most ``max_batches_in_flight`` batches run
at once, so under load the batches grow instead of the number of commits. Each caller is answered when
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

A run row another transaction holds (a caller's transaction that published
with ``publish_in`` and has not ended yet, docs/transactions.md) would hold
up every other run of a batch that meets it, and the batches behind it. So a
batch waits at most ``lock_wait`` for a row lock (the bridge's
``publish_lock_wait``, ``append_events_lock_bounded``): past that the
statement fails having written nothing, and the batch is sent again in
halves, each probe waiting at most :data:`PROBE_LOCK_WAIT`, until every
group whose run is free has committed and the held runs are known. Their
callers then wait in the run's *lane*: a group commit of that run alone
(one batch in flight), outside the batch slots, on at most ``lane_slots``
pooled connections at once, where the wait is as long as the row is held
(bounded by ``lane_lock_wait``). While a run's lane has callers, this
process sends that run's publishes straight to it, so they meet no other
run's batch again. Concurrent publishes of one run keep no order among
themselves (they never did); one publish, or one ``publish_many``, is never
split.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from pgbridge.connector import Backoff, Database, retry_until
from pgbridge.engine.group_commit import (
    Failure,
    GroupCommit,
    Retry,
    classify_failure,
    is_retryable,
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

#: Publishes queued together are shared out over the free batch slots (batches side by side,
#: PostgreSQL numbering one while this process answers and refills the other), but never
#: below this many events a batch: a call of the append function has a fixed cost of about
#: ten events' worth (docs/performance.md), so finer batches cost more than they overlap.
#: Measured with 100 publishers on two cores: 50 gave 24.8k events/s, 32 gave 22.0k, one
#: batch at a time 20-22k, and batches taken at once by whoever finds a free slot 17.7k.
PUBLISH_MIN_SHARE = 50

#: Seconds each probe of a batch being sent around a held run waits for a row lock: a
#: free run's lock is had at once, so this only has to tell held from free quickly. A
#: run only briefly held (another batch committing) may be taken for held: its callers
#: then go through its lane, which is correct, only less batched.
PROBE_LOCK_WAIT = 0.005


@dataclass(frozen=True, slots=True)
class Held:
    """A group whose run's row another transaction holds: its caller sends it through
    the run's lane (nothing of it was written)."""


HELD = Held()


@dataclass(frozen=True, slots=True)
class GroupFailed:
    """A group of a batch sent around a held run whose own statement failed: its caller
    is told *error* (the groups committed before it stay committed)."""

    error: StreamBridgeError


#: What one group of a batch came to: its requests' results, held, or failed.
GroupResult = list[AppendResult] | Held | GroupFailed
#: What a group's caller is answered by a batch: its stored events, or held.
BatchAnswer = list[Appended | None] | Held


class _RowHeld(Exception):
    """A lock-bounded append waited too long for a row lock; nothing was written.

    Private control flow of this module: it never reaches a caller."""


@dataclass(slots=True)
class _Lane:
    """The group commit of one held run, and how many callers are in it."""

    commits: GroupCommit[Sequence[AppendRequest], GroupResult, BatchAnswer]
    users: int = field(default=0)


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
        lock_wait: float | None = None,
        lane_lock_wait: float | None = None,
        lane_slots: int = 1,
        backoff: Backoff | None = None,
        metrics: BridgeMetrics = NO_METRICS,
        notify_channel: str | None = None,
    ) -> None:
        self._db = db
        #: Where every batch wakes other processes from inside its own transaction (None: never;
        #: the bridge's notifier does it after every commit).
        self._notify_channel = notify_channel
        #: The connections batches ran on, kept for the next ones (no pool borrow per batch);
        #: at most a quarter of the pool idle, so readers are never starved of connections.
        self._connections = db.kept(min(max_batches_in_flight, db.max_size // 4))
        self._store = EventStore(db)
        self._metrics = metrics
        self._on_commit = on_commit
        self._retry = Retry(retry_timeout, backoff or Backoff())
        self._max_batch_size = max_batch_size
        #: None: a batch waits for a held row as long as it is held (a lane opens only if the
        #: server's own lock_timeout ends the wait).
        self._lock_wait = lock_wait if lock_wait else None
        self._lane_lock_wait = lane_lock_wait
        self._lane_slots = asyncio.Semaphore(max(1, lane_slots))
        self._lanes: dict[str, _Lane] = {}
        self._commits: GroupCommit[Sequence[AppendRequest], GroupResult, BatchAnswer]
        self._commits = GroupCommit(
            self._send,
            _answer,
            name="pgbridge-publish-batch",
            max_in_flight=max_batches_in_flight,
            max_batch_size=max_batch_size,
            size_of=len,
            # Each batch holds one run's events (a sharded deployment: one shard per transaction).
            batch_key=(lambda group: group[0].run_id) if batch_per_run else None,
            retry=self._retry,
            committed=self._committed,
            failed=self._failed,
            next_turn=True,
            share_out=True,
            min_share=PUBLISH_MIN_SHARE,
        )
        #: Batches that met a held run and were sent around it (for tests and logs).
        self.batches_sent_around_held_runs = 0

    @property
    def batches(self) -> int:
        """Batches sent (for tests)."""
        return self._commits.batches

    async def append(self, request: AppendRequest) -> Appended | None:
        """Append one event; None when the run already has its terminal event."""
        (appended,) = await self.append_together([request])
        return appended

    async def append_together(self, requests: Sequence[AppendRequest]) -> list[Appended | None]:
        """Append *requests*, events of one run, in one transaction, in order; None for each
        refused (terminal run).

        Through the group commit, or, when the run's row is held by another
        transaction, through the run's lane (see the module's docstring).
        """
        run_id = requests[0].run_id
        if any(request.run_id != run_id for request in requests):
            raise ValueError("append_together takes the events of one run")
        started = time.perf_counter()
        if run_id in self._lanes:
            answered = await self._through_lane(run_id, requests)
        else:
            batched = await self._commits.submit(requests)
            answered = await self._through_lane(run_id, requests) if isinstance(batched, Held) else batched
        self._metrics.publish_latency(time.perf_counter() - started)
        return answered

    async def close(self) -> None:
        """Wait for the batches in flight (and what is queued behind them), lanes too."""
        await self._commits.close()
        while self._lanes:
            await asyncio.gather(*(lane.commits.close() for lane in list(self._lanes.values())))
            await asyncio.sleep(0)
        await self._connections.close()

    @property
    def lanes(self) -> int:
        """Runs whose publishes wait in a lane of their own now (for tests)."""
        return len(self._lanes)

    async def _send(self, groups: list[Sequence[AppendRequest]]) -> list[GroupResult]:
        """One batch: every group's events in one statement, in queue order; results per group.

        The batch also sends its runs' wake-ups, carrying the events, in the same statement:
        the commit wakes other processes, with no NOTIFY statement after it. PostgreSQL
        serialises the commits of notifying transactions, but a second statement per batch
        cost more: with the notifier's statement after each overlapping batch, (b) of
        ``pgbridge bench`` took 5-18 % fewer events/s, 10-19 us more of the publishing
        process's CPU an event and twice the delivery latency (docs/performance.md).

        A batch that waited ``lock_wait`` for a held run row wrote nothing and
        is sent around the held runs (:meth:`_send_around_held`), still holding
        its slot of the group commit meanwhile.
        """
        try:
            results = await self._append_once(
                [request for group in groups for request in group], self._lock_wait, notify=True
            )
        except _RowHeld:
            return await self._send_around_held(groups)
        return list(_per_group(groups, results))

    async def _send_around_held(self, groups: list[Sequence[AppendRequest]]) -> list[GroupResult]:
        """The groups of a batch that met a held row: the free runs' committed (in queue
        order, in as few statements as halving allows), the held runs' groups :data:`HELD`."""
        self.batches_sent_around_held_runs += 1
        results: list[GroupResult | None] = [None] * len(groups)
        held: set[str] = set()
        await self._probe(
            groups,
            list(range(len(groups))),
            results,
            held,
            min(self._lock_wait or PROBE_LOCK_WAIT, PROBE_LOCK_WAIT),
        )
        if held:
            logger.info(
                "pgbridge: a publish batch met %d run(s) whose row another transaction holds (%s); "
                "the batch's other runs went on, and publishes to those wait on their own",
                len(held),
                ", ".join(repr(run) for run in sorted(held)[:3]) + (", ..." if len(held) > 3 else ""),
                extra={"run_ids": sorted(held)},
            )
        return [HELD if result is None else result for result in results]

    async def _probe(
        self,
        groups: list[Sequence[AppendRequest]],
        indices: list[int],
        results: list[GroupResult | None],
        held: set[str],
        wait: float,
    ) -> None:
        """Send the groups at *indices* (but those of runs known held) in one statement that
        waits at most *wait* for a lock; if it meets a held row, each half on its own, down
        to single groups, whose runs are then known held."""
        todo = [i for i in indices if groups[i][0].run_id not in held]
        if not todo:
            return
        requests = [request for i in todo for request in groups[i]]
        try:
            outcomes = await self._with_retries(lambda: self._append_once(requests, wait))
        except _RowHeld:
            if len(todo) == 1:
                held.add(groups[todo[0]][0].run_id)
                return
            middle = len(todo) // 2
            await self._probe(groups, todo[:middle], results, held, wait)
            await self._probe(groups, todo[middle:], results, held, wait)
            return
        except Exception as exc:
            error = exc if isinstance(exc, StreamBridgeError) else StreamBridgeError(str(exc))
            self._report_failure(requests, error)
            for i in todo:
                results[i] = GroupFailed(error)
            return
        for i, result in zip(todo, _per_group([groups[i] for i in todo], outcomes), strict=True):
            results[i] = result

    async def _with_retries(
        self, operation: Callable[[], Awaitable[list[AppendResult]]]
    ) -> list[AppendResult]:
        """*operation* again after a failure that wrote nothing, as the group commit would."""
        return await retry_until(
            operation,
            deadline=asyncio.get_running_loop().time() + self._retry.timeout,
            backoff=self._retry.backoff,
            retryable=is_retryable,
        )

    async def _through_lane(self, run_id: str, requests: Sequence[AppendRequest]) -> list[Appended | None]:
        """Append *requests* through *run_id*'s lane, made for the first caller and dropped
        with the last: they wait for the held row there, holding up no other run."""
        lane = self._lanes.get(run_id)
        if lane is None:
            lane = self._lanes[run_id] = _Lane(self._lane_commits(run_id))
        lane.users += 1
        try:
            answered = await lane.commits.submit(requests)
        finally:
            lane.users -= 1
            if lane.users == 0 and self._lanes.get(run_id) is lane:
                del self._lanes[run_id]
        assert not isinstance(answered, Held)  # a lane's statement waits for the row
        return answered

    def _lane_commits(self, run_id: str) -> GroupCommit[Sequence[AppendRequest], GroupResult, BatchAnswer]:
        """A group commit of *run_id* alone: one batch in flight, whatever queued meanwhile."""

        async def send(groups: list[Sequence[AppendRequest]]) -> list[GroupResult]:
            async with self._lane_slots:
                try:
                    results = await self._append_once(
                        [request for group in groups for request in group], self._lane_lock_wait
                    )
                except _RowHeld as held:
                    bound = f"{self._lane_lock_wait:g} s" if self._lane_lock_wait else "lock_timeout"
                    raise RolledBackByConflictError(
                        f"run {run_id!r}: its row was held by another transaction for longer than {bound} "
                        "(a transaction that published to it with publish_in and has not ended); "
                        "nothing was written"
                    ) from held.__cause__
            return list(_per_group(groups, results))

        return GroupCommit(
            send,
            _answer,
            name="pgbridge-publish-lane",
            max_in_flight=1,
            max_batch_size=self._max_batch_size,
            size_of=len,
            retry=self._retry,
            committed=self._committed,
            failed=self._failed,
        )

    def _committed(self, groups: list[Sequence[AppendRequest]], results: Sequence[GroupResult]) -> None:
        """Metrics and logs for a committed batch, then *on_commit* for each stored event, in order
        (held and failed groups have none)."""
        requests: list[AppendRequest] = []
        appended: list[AppendResult] = []
        for group, answered in zip(groups, results, strict=True):
            if isinstance(answered, list):
                requests.extend(group)
                appended.extend(answered)
        self._report_commit(requests, appended)
        for request, stored in zip(requests, appended, strict=True):
            if isinstance(stored, Appended):
                self._on_commit(request.run_id, stored, request.event, request.data_text, request.terminal)

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
        self, requests: list[AppendRequest], lock_wait: float | None, *, notify: bool = False
    ) -> list[AppendResult]:
        """One append statement on a pooled connection (sending its wake-ups too when *notify*);
        a lock wait past *lock_wait* (or the server's own ``lock_timeout``) raises
        :class:`_RowHeld`, having written nothing."""
        channel = self._notify_channel if notify else None
        queue_full: asyncpg.ProgramLimitExceededError | None = None
        async with self._connections.connection() as conn:
            try:
                outcomes = await self._store.append_batch(
                    conn, requests, notify_channel=channel, lock_wait=lock_wait
                )
            except asyncpg.exceptions.LockNotAvailableError as exc:
                raise _RowHeld() from exc
            except asyncpg.ProgramLimitExceededError as exc:
                if channel is None:
                    raise _classify_append_failure(exc, requests) from exc
                queue_full = exc
            except Exception as exc:
                raise _classify_append_failure(exc, requests) from exc
            finally:
                self._db.statements += 1
        if queue_full is not None:
            # The notification queue is full (a listener somewhere stopped reading): the NOTIFY
            # aborted the append, which wrote nothing. Append alone, on a connection borrowed
            # anew (this one is back in the pool); the notifier wakes readers after the commit,
            # as it does for busy moments.
            logger.warning("pgbridge could not NOTIFY inside an append (%s); appending without", queue_full)
            return await self._append_once(requests, lock_wait)
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


def _per_group(groups: Sequence[Sequence[AppendRequest]], results: list[AppendResult]) -> list[GroupResult]:
    """A statement's results (one per request, in order) cut into one list per group."""
    answered: list[GroupResult] = []
    position = 0
    for group in groups:
        answered.append(results[position : position + len(group)])
        position += len(group)
    return answered


def _answer(group: Sequence[AppendRequest], results: GroupResult) -> BatchAnswer:
    """A group's answer: its stored events (None for a terminal run's), held, or the error of
    a run that refused them or of the statement that carried them."""
    if isinstance(results, Held):
        return results
    if isinstance(results, GroupFailed):
        raise results.error
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
