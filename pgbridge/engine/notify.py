"""NOTIFY after commit, coalesced: how other processes learn of new events.

Every batch of the publisher sends its wake-ups inside its own transaction
(``append_runs_once`` or ``append_events_notifying``, see
pgbridge.engine.publish): its commit wakes other processes, with no
statement after it. ``publish_in`` does the same inside the caller's
transaction (:mod:`pgbridge.engine.in_transaction`): its wake-ups must go
with that commit, or not at all. What is left comes here after its commit:
a run whose events did not fit in a payload, a batch sent through a held
run's lane, a retention pass's "re-read" wake-ups. One task per bridge sends
everything that piled up while the previous NOTIFY was in flight, in one
statement. An idle notifier costs
nothing and adds no delay. A lost NOTIFY (crash between commit and send,
queue trouble) only delays readers until their next poll.

The publisher's answer does not wait for any of it: the notifier's task is
started on the event loop's next turn, after the committed batch's callers
have been answered, so borrowing a connection and sending the NOTIFY happen
off their path (measured: commit to answer p50 224 µs when the task was
started at once, 111 µs deferred, 100 µs with no NOTIFY at all;
docs/performance.md).

Each payload also carries the primary's WAL insert position, read by the
NOTIFY statement itself, after the commits it reports: a reader with a
``replica_dsn`` reads from the standby only once it has replayed that far.
And it carries the committed events themselves while a run's pile of them
stays small (:data:`~pgbridge.engine.listen.CARRY_LIMIT`): a reader that
holds the seqs before them takes them with no query at all, so a subscribing
process pays no range read per wake-up on the live path.
The statement (``notify_runs``, pgbridge/sql/events.sql) is the one place
the payload is written; :func:`pgbridge.engine.listen.decode_wake` reads it.
"""

from __future__ import annotations

import asyncio
import logging

from pgbridge.connector import Database
from pgbridge.engine.listen import CARRY_LIMIT, CarriedEvent, encode_carried
from pgbridge.store import wakeups

logger = logging.getLogger(__name__)


class Notifier:
    """Coalesces wake-ups for other processes into as few NOTIFYs as possible."""

    def __init__(self, db: Database, channel: str) -> None:
        self._db = db
        self._channel = channel
        self._pending: dict[str, int | None] = {}
        #: The events each pending run's wake-up carries (absent: none), and their size.
        self._carried: dict[str, list[CarriedEvent]] = {}
        self._carried_size: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._starting = False
        #: NOTIFY statements sent (one per flush, whatever the number of runs).
        self.statements_sent = 0

    def notify(self, run_id: str, seq: int | None, event: CarriedEvent | None = None) -> None:
        """Schedule a wake-up for *run_id*'s readers elsewhere; never blocks.

        ``seq=None`` means "re-read regardless" (retention deleted events). *event* is the
        committed event the wake-up reports, to carry while the run's pile stays small; a
        wake-up without one (or past the limit) makes readers read.
        """
        first = run_id not in self._pending
        if not first:
            pending = self._pending[run_id]
            seq = None if seq is None or pending is None else max(seq, pending)
        self._pending[run_id] = seq
        self._carry(run_id, event if seq is not None else None, first)
        if self._task is None and not self._starting:
            # Started from a callback, not now: a commit reports its events here before
            # its publishers are answered, and a task made now would take its first step
            # (borrow a connection, send the NOTIFY) before they resume; made by the
            # callback, its first step is queued behind their wake-ups.
            self._starting = True
            asyncio.get_running_loop().call_soon(self._start)

    def _carry(self, run_id: str, event: CarriedEvent | None, first: bool) -> None:
        """Keep *event* for *run_id*'s payload, or stop carrying that run's events."""
        if event is None or (not first and run_id not in self._carried):
            self._carried.pop(run_id, None)
            return
        size = self._carried_size.get(run_id, 0) + len(event[2]) + len(event[3]) + 48
        if size > CARRY_LIMIT:
            self._carried.pop(run_id, None)
            return
        self._carried.setdefault(run_id, []).append(event)
        self._carried_size[run_id] = size

    def _start(self) -> None:
        self._starting = False
        if self._task is None and self._pending:
            self._task = asyncio.create_task(self._flush_pending(), name="pgbridge-notifier")

    async def close(self) -> None:
        """Send what is still pending, then stop."""
        if self._task is None and self._pending:
            self._start()  # its start was scheduled for the loop's next turn: start it now
        task = self._task
        if task is not None:
            await task

    async def _flush_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                events, self._carried, self._carried_size = self._carried, {}, {}
                carried = {run_id: encode_carried(run_events) for run_id, run_events in events.items()}
                try:
                    await wakeups.notify_runs(self._db, self._channel, batch, carried)
                    self.statements_sent += 1
                except Exception as exc:
                    # Readers elsewhere still find these events at their next poll.
                    logger.warning("pgbridge could not send NOTIFY for %d run(s): %s", len(batch), exc)
        finally:
            self._task = None
