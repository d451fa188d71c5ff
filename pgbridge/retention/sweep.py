"""One retention pass: dead-letter stale runs, sweep expired streams, delete old events, drop tombstones.

Expired Durable Streams (past Expires-At, or idle longer than their TTL)
are gone for every request; the pass removes them exactly as a DELETE of
each would at that moment: a stream that forks read is soft-deleted (its
events stay for them), any other is deleted, and a fork's deletion
releases its source (deleting a soft-deleted source whose last fork it
was, up the chain).

A pass holds a PostgreSQL advisory lock (one per schema) for its whole
length, so across every process at most one pass runs at a time. It is a
session lock held across many short transactions, so it needs one server
session for the whole pass: behind a transaction-mode pooler (PgBouncer)
the pass takes a direct connection of its own (``direct_dsn``, the bridge's
``listen_dsn``) instead of a pooled one, whose session could be lent to
another client between statements and keep the lock forever; the
periodic job skips its turn when the lock is taken, an explicit pass waits
for it. Correctness does not rest on the lock, though: every statement
re-checks what it acts on under row locks, so two passes that did overlap
would still never delete or dead-letter the same thing twice.

Each step works in bounded batches of short transactions (at most
``batch_events`` events deleted, or ``batch_runs`` runs touched, per
transaction), so publishers of a run wait at most one small batch for its
row lock, and each batch moves the run's ``first_seq`` in the same
transaction as its deletes. The scans behind the batches each match a
partial index (see :mod:`pgbridge.schema`), so a pass reads what it acts on
and not the rest of the table.

A finished pass replaces the row of ``retention_last_pass`` with its report,
so ``pgbridge stats`` can tell when retention last ran, whichever process
ran it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from pgbridge.connector import Database, is_connection_error
from pgbridge.exceptions import DatabaseUnavailableError, StreamBridgeError
from pgbridge.metrics import NO_METRICS, BridgeMetrics
from pgbridge.retention.policy import RetentionPolicy, RetentionReport
from pgbridge.store.retention import LockedRun, RetentionStore, TrimCandidate

#: Called after each commit for every run a batch changed: ``(run_id, seq)``
#: of a dead-lettered run's terminal event, and ``(run_id, first_seq)`` of a
#: run whose events before ``first_seq`` were deleted (its readers must
#: re-read, and report the gap if they had not read those events).
RunDeadLettered = Callable[[str, int], None]
RunTrimmed = Callable[[str, int], None]
#: Told a pass's running totals after each batch it commits (for progress displays).
RetentionProgress = Callable[[RetentionReport], None]

logger = logging.getLogger(__name__)

#: How often an explicit pass re-tries the lock while another pass holds it.
LOCK_RETRY_SECONDS = 0.05

#: A scan naming runs to trim: given how many runs at most, their candidates.
FindTrims = Callable[[int], Awaitable[list[TrimCandidate]]]
#: Locks the runs of a trim (inside its transaction) and re-checks what must still hold.
LockRuns = Callable[[asyncpg.Connection, list[str]], Awaitable[list[LockedRun]]]


@dataclass(frozen=True, slots=True)
class TrimTarget:
    """Delete this run's events ``first_seq..through``."""

    run_id: str
    first_seq: int
    through: int

    @property
    def count(self) -> int:
        return max(0, self.through - self.first_seq + 1)


def plan_trims(
    locked: list[tuple[str, int, int]], wanted: dict[str, int], budget: int
) -> tuple[list[TrimTarget], bool]:
    """What one transaction deletes: for each locked ``(run_id, first_seq, last_seq)``,
    its events up to the seq *wanted* for it, at most *budget* events in all.

    Returns the trims and whether some run got less than it wanted (so the
    pass must come back for the rest). Pure, so the arithmetic is tested
    without a database.
    """
    plan: list[TrimTarget] = []
    for run_id, first_seq, last_seq in locked:
        target = TrimTarget(run_id, first_seq, min(wanted[run_id], last_seq))
        if target.count == 0:
            continue
        if budget == 0:
            return plan, True
        if target.count > budget:
            plan.append(TrimTarget(run_id, first_seq, first_seq + budget - 1))
            return plan, True
        plan.append(target)
        budget -= target.count
    return plan, False


class _Tally:
    """A pass's running totals, reported to its progress callback after each batch."""

    def __init__(self, progress: RetentionProgress | None) -> None:
        self._progress = progress
        self.events_deleted = 0
        self.runs_deleted = 0
        self.runs_dead_lettered = 0
        self.streams_expired = 0

    def add(
        self,
        *,
        events_deleted: int = 0,
        runs_deleted: int = 0,
        runs_dead_lettered: int = 0,
        streams_expired: int = 0,
    ) -> None:
        self.events_deleted += events_deleted
        self.runs_deleted += runs_deleted
        self.runs_dead_lettered += runs_dead_lettered
        self.streams_expired += streams_expired
        if self._progress is not None:
            self._progress(self.report())

    def report(self, tables_vacuumed: int = 0) -> RetentionReport:
        return RetentionReport(
            events_deleted=self.events_deleted,
            runs_deleted=self.runs_deleted,
            runs_dead_lettered=self.runs_dead_lettered,
            tables_vacuumed=tables_vacuumed,
            streams_expired=self.streams_expired,
        )


class RetentionPass:
    """Runs retention passes on a bridge's database."""

    def __init__(
        self,
        db: Database,
        *,
        on_dead_lettered: RunDeadLettered,
        on_trimmed: RunTrimmed,
        batch_events: int = 2000,
        batch_runs: int = 200,
        metrics: BridgeMetrics = NO_METRICS,
        direct_dsn: str | None = None,
    ) -> None:
        self._db = db
        self._direct_dsn = direct_dsn
        self._metrics = metrics
        self._store = RetentionStore(db.queries.retention, db.queries.schema)
        self._on_dead_lettered = on_dead_lettered
        self._on_trimmed = on_trimmed
        self._batch_events = batch_events
        self._batch_runs = batch_runs

    async def run(
        self, policy: RetentionPolicy, *, wait: bool, progress: RetentionProgress | None = None
    ) -> RetentionReport | None:
        """One pass under the lock; None when *wait* is False and another pass holds it.

        *progress*, if given, is told the running totals after each committed batch.
        """
        session = self._db.direct_connection(self._direct_dsn) if self._direct_dsn else self._db.connection()
        try:
            async with session as conn:
                if not await self._acquire_lock(conn, wait=wait):
                    return None
                started = time.perf_counter()
                try:
                    report = await self._run_locked(conn, policy, _Tally(progress))
                finally:
                    await self._unlock(conn)
                _log_report(report, time.perf_counter() - started)
                return report
        except StreamBridgeError:
            raise
        except Exception as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailableError(f"retention pass lost its connection: {exc}") from exc
            raise StreamBridgeError(f"retention pass failed: {exc}") from exc

    async def _unlock(self, conn: asyncpg.Connection) -> None:
        """Release the pass lock; a connection that cannot is closed, which releases it too
        (pooled connections are not reset on release, see pgbridge.connector)."""
        try:
            if await self._store.unlock(conn):
                return
        except Exception:
            pass
        conn.terminate()

    async def _acquire_lock(self, conn: asyncpg.Connection, *, wait: bool) -> bool:
        while not await self._store.try_lock(conn):
            if not wait:
                return False
            await asyncio.sleep(LOCK_RETRY_SECONDS)
        return True

    async def _run_locked(
        self, conn: asyncpg.Connection, policy: RetentionPolicy, tally: _Tally
    ) -> RetentionReport:
        started = time.perf_counter()
        await self._dead_letter_stale_runs(conn, policy, tally)
        store = self._store
        if (keep := policy.max_events_per_run) is not None:
            await self._trim(conn, tally, lambda limit: store.runs_over_max_events(conn, limit, keep=keep))
        if (age := policy.max_event_age) is not None:
            await self._trim(
                conn,
                tally,
                lambda limit: store.runs_with_events_older_than(
                    conn, limit, age=age, most_events=self._batch_events
                ),
            )
        if (ended_for := policy.ended_run_ttl) is not None:
            await self._trim(
                conn, tally, lambda limit: store.ended_runs_with_events(conn, limit, ended_for=ended_for)
            )
        await self._sweep_expired_streams(conn, tally)
        if policy.ended_run_ttl is not None and policy.tombstone_ttl is not None:
            await self._delete_tombstones(conn, tally, policy.ended_run_ttl + policy.tombstone_ttl)
        report = tally.report(tables_vacuumed=await self._vacuum_if_autovacuum_is_off(conn))
        await self._record(conn, policy, report, time.perf_counter() - started)
        return report

    async def _record(
        self, conn: asyncpg.Connection, policy: RetentionPolicy, report: RetentionReport, seconds: float
    ) -> None:
        """Replace the row of ``retention_last_pass`` with this pass's report.

        A role without the grant (docs/audit.md) gets a warning: the pass's
        work is done and committed either way.
        """
        try:
            await self._store.record_pass(conn, policy, report, seconds)
        except asyncpg.InsufficientPrivilegeError as exc:
            logger.warning("pgbridge retention cannot record its pass in retention_last_pass: %s", exc)

    # -- the stale-run reaper ---------------------------------------------------

    async def _dead_letter_stale_runs(
        self, conn: asyncpg.Connection, policy: RetentionPolicy, tally: _Tally
    ) -> None:
        while True:
            # Two statements in one transaction: the second reads each locked run's head afresh,
            # so an append that committed after the first one's snapshot is seen (appends leave
            # the run row alone, so locking it does not show them).
            async with conn.transaction():
                locked = await self._store.lock_stale_runs(
                    conn,
                    active_timeout=policy.active_timeout,
                    awaiting_input_timeout=policy.awaiting_input_timeout,
                    limit=self._batch_runs,
                )
                rows = (
                    await self._store.dead_letter_runs(
                        conn,
                        locked,
                        active_timeout=policy.active_timeout,
                        awaiting_input_timeout=policy.awaiting_input_timeout,
                    )
                    if locked
                    else []
                )
            self._metrics.retention_deleted(dead_lettered=len(rows))
            for row in rows:
                logger.warning(
                    "pgbridge retention dead-lettered run %r: no publish or mark_awaiting_input for "
                    "%ss (%ss while awaiting input); its worker is presumed gone",
                    row.run_id,
                    policy.active_timeout,
                    policy.awaiting_input_timeout,
                    extra={"run_id": row.run_id, "seq": row.seq},
                )
                self._on_dead_lettered(row.run_id, row.seq)
            tally.add(runs_dead_lettered=len(rows))
            if len(locked) < self._batch_runs:
                return

    # -- deleting a prefix of runs' events ----------------------------------------

    async def _trim(
        self, conn: asyncpg.Connection, tally: _Tally, find: FindTrims, lock: LockRuns | None = None
    ) -> None:
        """Delete what *find* names, batch by batch, until it names nothing more.

        Each scan names at most ``batch_runs`` runs: one transaction's worth.
        *lock* (default :meth:`RetentionStore.lock_runs`) locks them and re-checks
        what must still hold. A scan may also name less than a run needs (the
        age rule walks at most ``batch_events`` events of a run), so the pass
        scans again after every batch that deleted something, and stops at the
        first scan that leaves nothing to delete.
        """
        while True:
            rows = await find(self._batch_runs)
            wanted = {row.run_id: row.through for row in rows if row.through is not None}
            if not wanted:
                return  # nothing (more) to delete: no batch, no progress report
            deleted, cut_short = await self._trim_in_one_transaction(
                conn, wanted, lock or self._store.lock_runs
            )
            tally.add(events_deleted=deleted)
            if deleted == 0 and not cut_short:
                return  # candidates that no longer need anything: done

    async def _trim_in_one_transaction(
        self, conn: asyncpg.Connection, wanted: dict[str, int], lock: LockRuns
    ) -> tuple[int, bool]:
        """Lock the runs of *wanted* (run id -> delete through this seq) with *lock*, delete
        up to ``batch_events`` events among them, commit; True if some run got less than it wanted."""
        async with conn.transaction():
            locked = await lock(conn, list(wanted))
            plan, left_over = plan_trims(
                [(row.run_id, row.first_seq, row.last_seq) for row in locked],
                wanted,
                self._batch_events,
            )
            deleted = 0
            if plan:
                deleted = await self._store.trim_run_prefixes(
                    conn,
                    [t.run_id for t in plan],
                    [t.first_seq for t in plan],
                    [t.through for t in plan],
                )
        self._metrics.retention_deleted(events=deleted)
        for target in plan:
            self._on_trimmed(target.run_id, target.through + 1)
        return deleted, left_over

    # -- expired Durable Streams -------------------------------------------------

    async def _sweep_expired_streams(self, conn: asyncpg.Connection, tally: _Tally) -> None:
        """Remove the expired streams as a DELETE of each would, at that moment.

        An expired stream is gone for every request, but its rows stayed
        until its path was touched again. First the events of those no fork
        reads go, through the trims (``batch_events`` per transaction, the
        expiry re-checked under the lock), then :meth:`_remove_expired`
        removes their rows a batch at a time.
        """
        await self._trim(
            conn,
            tally,
            lambda limit: self._store.expired_streams_with_events(conn, limit),
            lock=self._store.lock_expired_runs,
        )
        while True:
            locked = await self._remove_expired(conn, tally)
            if locked < self._batch_runs:
                return

    async def _remove_expired(self, conn: asyncpg.Connection, tally: _Tally) -> int:
        """One transaction: lock up to ``batch_runs`` expired streams, soft-delete those forks
        read (their events stay for the forks), delete the others (``pgbridge_delete_stream``,
        which releases a fork's source and deletes a soft-deleted source whose last fork it
        was, as a DELETE does). Returns how many it locked."""
        async with conn.transaction():
            locked = await self._store.lock_expired_streams(conn, self._batch_runs)
            if not locked:
                return 0
            forked = [row.run_id for row in locked if row.fork_refs > 0]
            alone = [row.run_id for row in locked if row.fork_refs == 0]
            if forked:
                await self._store.soft_delete_streams(conn, forked)
            deleted = await self._store.delete_streams(conn, alone) if alone else []
        events = sum(row.events_deleted for row in deleted)
        self._metrics.retention_deleted(events=events, runs=len(deleted))
        tally.add(events_deleted=events, runs_deleted=len(deleted), streams_expired=len(locked))
        for row in locked:
            if row.fork_refs > 0:
                self._on_trimmed(row.run_id, row.first_seq)  # nothing forgotten: readers re-read (410)
        for gone in deleted:
            self._on_trimmed(gone.run_id, gone.last_seq + 1)
        return len(locked)

    # -- vacuum, when nothing else will ----------------------------------------

    async def _vacuum_if_autovacuum_is_off(self, conn: asyncpg.Connection) -> int:
        """VACUUM the tables whose dead rows autovacuum would have cleaned, had it been on.

        Deleted rows only become reusable space after a vacuum; with
        autovacuum off the tables would grow without bound under churn.
        A plain VACUUM takes no lock that stalls publishers.
        """
        vacuumed = 0
        for table in await self._store.tables_due_for_vacuum(conn):
            try:
                await self._store.vacuum(conn, table)
            except asyncpg.InsufficientPrivilegeError as exc:
                logger.warning("pgbridge retention cannot VACUUM %s (autovacuum is off): %s", table, exc)
                continue
            vacuumed += 1
        return vacuumed

    # -- tombstones -------------------------------------------------------------

    async def _delete_tombstones(
        self, conn: asyncpg.Connection, tally: _Tally, after_end_seconds: float
    ) -> None:
        while True:
            rows = await self._store.delete_tombstones(
                conn, after_end=after_end_seconds, limit=self._batch_runs
            )
            events = sum(row.events_deleted for row in rows)  # of soft-deleted sources that went too
            self._metrics.retention_deleted(events=events, runs=len(rows))
            tally.add(events_deleted=events, runs_deleted=len(rows))
            if sum(row.tombstone for row in rows) < self._batch_runs:
                return


def _log_report(report: RetentionReport, seconds: float) -> None:
    """The pass's summary: INFO when it did something, DEBUG when there was nothing to do."""
    did_something = (
        report.events_deleted or report.runs_deleted or report.runs_dead_lettered or report.streams_expired
    )
    logger.log(
        logging.INFO if did_something else logging.DEBUG,
        "pgbridge retention pass: %d events deleted, %d runs deleted, %d runs dead-lettered, "
        "%d expired streams removed (%.3f s)",
        report.events_deleted,
        report.runs_deleted,
        report.runs_dead_lettered,
        report.streams_expired,
        seconds,
        extra={
            "events_deleted": report.events_deleted,
            "runs_deleted": report.runs_deleted,
            "runs_dead_lettered": report.runs_dead_lettered,
            "streams_expired": report.streams_expired,
            "tables_vacuumed": report.tables_vacuumed,
            "duration_seconds": seconds,
        },
    )
