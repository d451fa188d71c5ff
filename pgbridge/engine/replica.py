"""Reads of run events, routed to a hot standby when it is certain to be current enough.

With ``replica_dsn``, catch-up and replay reads go to a streaming standby,
while publishing, resume resolution, the poll and wake-ups stay on the
primary. A standby is a past state of the primary: everything it answers
is a prefix of the run's history, in order, so a read from it can never
reorder or invent an event; the only danger is that it is *behind* what
the reader already knows, and a reader that trusted a stale answer would
wait for wake-ups that already came (a delay that looks like a loss), or
yield events retention had already deleted. Two checks rule that out:

1. **WAL position.** Every wake-up carries the primary's WAL insert
   position, read after the commits it reports (see :mod:`pgbridge.engine.notify`).
   A read for a run woken at position P goes to the standby only once the
   standby's ``pg_last_wal_replay_lsn()`` has reached P (checked before the
   read, so the read's snapshot is newer still), else to the primary.
2. **What the reader already knows.** Each reader keeps what it learned
   from the primary (:class:`Known`: the run's newest seq and first retained
   seq, from wake-ups, the head read at the start of a feed, the poll, local
   commits and retention). A standby answer whose run state is older than
   that (a short answer) is dropped and the primary is read instead.
   Wake-ups that say nothing (the listener reconnected, the poll failed)
   send the next read to the primary.

So a lagging or paused standby costs reads on the primary, never an event.
Counters on the router (and the bridge) say where the reads went.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pgbridge.connector import Database
from pgbridge.exceptions import StreamBridgeError, TopologyConfigurationError
from pgbridge.store import server
from pgbridge.store.events import EventStore, Page, RunState

logger = logging.getLogger(__name__)

#: After a failed standby read, seconds during which reads go straight to the
#: primary (a standby that is down would otherwise cost each read a timeout).
REPLICA_RETRY_AFTER = 5.0


@dataclass(slots=True)
class Known:
    """What one reader knows of a run from the primary; a standby answer must be at least as new."""

    #: Newest seq known to be committed.
    last_seq: int = 0
    #: First retained seq known (retention moves it forward).
    first_seq: int = 1
    #: WAL position the standby must have replayed to hold what the wake-ups announced.
    lsn: int = 0
    #: Bumped when something changed that nothing describes (the next read goes to the primary).
    epoch: int = 0
    #: The newest epoch a primary read has covered.
    verified_epoch: int = 0

    def learn(self, state: RunState) -> None:
        """A trustworthy read (primary, or a standby answer that passed) saw *state*."""
        if state.exists:
            self.last_seq = max(self.last_seq, state.last_seq)
            self.first_seq = max(self.first_seq, state.first_seq)

    def learn_wake(self, seq: int | None, lsn: int | None) -> None:
        if seq is not None:
            self.last_seq = max(self.last_seq, seq)
        if lsn is not None:
            self.lsn = max(self.lsn, lsn)

    def reset(self, state: RunState) -> None:
        """The run's history changed (a failover, the run deleted and published again): what the
        primary said of the old one no longer holds; *state* is what it says now."""
        self.last_seq = state.last_seq if state.exists else 0
        self.first_seq = state.first_seq if state.exists else 1
        self.distrust()

    def distrust(self) -> None:
        """Something happened that nobody described: read the primary next."""
        self.epoch += 1

    @property
    def trusted(self) -> bool:
        return self.verified_epoch >= self.epoch

    def satisfied_by(self, state: RunState, truncated: bool = False) -> bool:
        """Whether a standby's *state* is at least as new as what is known. A page cut at its
        limit (*truncated*) is read again at once from its end, so only its retained start must
        be as new (the newest seq it shows is a lower bound: pgbridge.store.events._tail_page)."""
        if not state.exists:
            return self.last_seq == 0 and self.first_seq <= 1
        return (truncated or state.last_seq >= self.last_seq) and state.first_seq >= self.first_seq


class ReadRouter:
    """Sends each range read to the standby or the primary; without a replica, always the primary."""

    def __init__(self, primary: EventStore, replica: Database | None = None) -> None:
        self._primary = primary
        self._replica_db = replica
        self._replica = EventStore(replica) if replica is not None else None
        #: The standby's replay position as last seen (it only moves forward while connected).
        self.replayed_lsn = 0
        self._position_check: asyncio.Task[None] | None = None
        self._replica_down_until = float("-inf")
        #: Range reads answered by the primary and by the standby.
        self.primary_reads = 0
        self.replica_reads = 0
        #: Standby reads whose answer was older than what the reader knew (then read on the primary).
        self.replica_short_reads = 0

    async def check_primary(self) -> None:
        """At start: refuse a ``dsn`` that reaches a hot standby, where nothing can be published
        or LISTENed (a multi-host DSN without ``target_session_attrs`` may land on one)."""
        if await server.in_recovery(self._primary.db):
            raise TopologyConfigurationError(
                "dsn reaches a hot standby (pg_is_in_recovery() is true), where nothing can be "
                "published or listened for: point dsn at the primary, or name every server and ask "
                "for the writable one, postgresql://user@host1,host2/db?target_session_attrs=read-write "
                "(connections then find whichever is the primary, also after a failover)"
            )

    async def check_replica(self) -> None:
        """At start: refuse a ``replica_dsn`` that is not a hot standby of the primary."""
        replica = self._replica_db
        if replica is None:
            return
        if not await server.in_recovery(replica):
            raise TopologyConfigurationError(
                "replica_dsn must point at a hot standby of the primary (streaming replication), "
                "but that server is not in recovery (pg_is_in_recovery() is false): WAL positions "
                "could not tell whether it holds an event"
            )
        try:
            mine = await server.system_identifier(replica)
            theirs = await server.system_identifier(self._primary.db)
        except StreamBridgeError as exc:  # pg_control_system() not allowed: skip this check
            logger.info("pgbridge could not compare system identifiers of primary and replica: %s", exc)
            return
        if mine != theirs:
            raise TopologyConfigurationError(
                "replica_dsn points at a standby of another cluster (system identifier "
                f"{mine}, the primary's is {theirs}): give it a standby of dsn's server"
            )

    async def read_after(
        self, run_id: str, cursor: int, limit: int, known: Known | None, *, primary: bool = False
    ) -> Page:
        """Events of *run_id* after *cursor* (at most *limit*), from wherever is safe.

        *known* (updated here with what the read saw) is the reader's
        knowledge; None, or *primary*, reads the primary.
        """
        if (
            known is not None
            and not primary
            and self._replica is not None
            and known.trusted
            and asyncio.get_running_loop().time() >= self._replica_down_until
        ):
            page = await self._try_replica(run_id, cursor, limit, known)
            if page is not None:
                return page
        epoch = known.epoch if known is not None else 0
        page = await self._primary.read_after(run_id, cursor, limit)
        self.primary_reads += 1
        if known is not None:
            known.learn(page.state)
            known.verified_epoch = max(known.verified_epoch, epoch)
        return page

    async def read_many(self, reads: Sequence[tuple[str, int, Known]], limit: int) -> list[Page]:
        """For each ``(run_id, cursor, known)`` of *reads* (distinct runs), what :meth:`read_after`
        would give, in one statement per server: the runs whose knowledge the standby has
        replayed (one position check for all of them) are read there together, and the rest,
        with any standby answer older than its reader's knowledge, on the primary together.
        Routing stays per run, exactly as :meth:`read_after` routes a single read."""
        pages: list[Page | None] = [None] * len(reads)
        if self._replica is not None and asyncio.get_running_loop().time() >= self._replica_down_until:
            trusted = [i for i, (_, _, known) in enumerate(reads) if known.trusted]
            if trusted:
                await self._try_replica_many(reads, trusted, limit, pages)
        rest = [i for i, page in enumerate(pages) if page is None]
        if rest:
            epochs = [reads[i][2].epoch for i in rest]
            answered = await self._primary.read_many_after([(reads[i][0], reads[i][1]) for i in rest], limit)
            self.primary_reads += len(rest)
            for i, epoch, page in zip(rest, epochs, answered, strict=True):
                known = reads[i][2]
                known.learn(page.state)
                known.verified_epoch = max(known.verified_epoch, epoch)
                pages[i] = page
        filled = [page for page in pages if page is not None]
        assert len(filled) == len(reads)
        return filled

    async def _try_replica_many(
        self,
        reads: Sequence[tuple[str, int, Known]],
        trusted: list[int],
        limit: int,
        pages: list[Page | None],
    ) -> None:
        """Fill *pages* at the positions of *trusted* the standby can answer safely."""
        assert self._replica is not None
        try:
            if max(reads[i][2].lsn for i in trusted) > self.replayed_lsn:
                await self._refresh_replay_position()
            eligible = [i for i in trusted if reads[i][2].lsn <= self.replayed_lsn]
            if not eligible:
                return
            answered = await self._replica.read_many_after(
                [(reads[i][0], reads[i][1]) for i in eligible], limit
            )
        except StreamBridgeError as exc:
            logger.warning(
                "pgbridge replica read failed; reading the primary for %g s: %s", REPLICA_RETRY_AFTER, exc
            )
            self.replayed_lsn = 0
            self._replica_down_until = asyncio.get_running_loop().time() + REPLICA_RETRY_AFTER
            return
        for i, page in zip(eligible, answered, strict=True):
            known = reads[i][2]
            if not known.satisfied_by(page.state, page.truncated):
                self.replica_short_reads += 1
                continue
            self.replica_reads += 1
            known.learn(page.state)
            pages[i] = page

    async def _try_replica(self, run_id: str, cursor: int, limit: int, known: Known) -> Page | None:
        assert self._replica is not None
        try:
            if known.lsn > self.replayed_lsn:
                await self._refresh_replay_position()
                if known.lsn > self.replayed_lsn:
                    return None
            page = await self._replica.read_after(run_id, cursor, limit)
        except StreamBridgeError as exc:
            # Down, or a query cancelled by a recovery conflict: the primary answers instead.
            logger.warning(
                "pgbridge replica read failed; reading the primary for %g s: %s", REPLICA_RETRY_AFTER, exc
            )
            self.replayed_lsn = 0
            self._replica_down_until = asyncio.get_running_loop().time() + REPLICA_RETRY_AFTER
            return None
        if not known.satisfied_by(page.state):
            self.replica_short_reads += 1
            return None
        self.replica_reads += 1
        known.learn(page.state)
        return page

    async def _refresh_replay_position(self) -> None:
        """One position query at a time, shared by every reader waiting on it."""
        task = self._position_check
        if task is None:
            task = self._position_check = asyncio.create_task(self._read_replay_position())
        try:
            await asyncio.shield(task)
        finally:
            if self._position_check is task and task.done():
                self._position_check = None

    async def _read_replay_position(self) -> None:
        assert self._replica_db is not None
        position = await server.replay_position(self._replica_db)
        if position is not None:
            self.replayed_lsn = max(self.replayed_lsn, position)
