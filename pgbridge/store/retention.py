"""The statements of a retention pass (``pgbridge/sql/retention.sql``), as typed calls.

Every call takes the connection the pass holds: the pass lock is a session
lock, so the whole pass runs on one server session, and the pass itself
(:mod:`pgbridge.retention.sweep`) decides which statements share a
transaction. Nothing here opens a transaction, retries or logs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import asyncpg

from pgbridge.retention.policy import RetentionPolicy, RetentionReport
from pgbridge.sql.queries import RetentionQueries

#: The tables a pass may VACUUM when autovacuum will not.
VacuumTable = Literal["run_events", "run_streams"]


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A run the reaper ended, and the seq of its ``dead_letter`` terminal event."""

    run_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class TrimCandidate:
    """A run a scan names: delete its events up to and including ``through`` (None: nothing)."""

    run_id: str
    through: int | None


@dataclass(frozen=True, slots=True)
class LockedRun:
    """A run row locked for a trim, and its retained range as locked."""

    run_id: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class ExpiredStream:
    """An expired Durable Stream locked for removal; ``fork_refs`` > 0: forks still read it."""

    run_id: str
    first_seq: int
    fork_refs: int


@dataclass(frozen=True, slots=True)
class DeletedRun:
    """A run row deleted as a DELETE of its stream would, and the events that went with it."""

    run_id: str
    last_seq: int
    events_deleted: int


@dataclass(frozen=True, slots=True)
class PassPreview:
    """What a pass would do now (``preview_pass``): per rule, before following deleted forks
    up their chains (``released`` and ``releasable``, see :func:`released_sources`)."""

    runs_dead_lettered: int
    #: Events each rule would delete, in the pass's order (each counts what the ones before left).
    events_by_rule: dict[str, int]
    streams_expired: int
    streams_deleted: int
    tombstones_deleted: int
    #: Deleted forks: (run_id, source run_id).
    released: list[tuple[str, str]]
    #: Sources that go when their last fork does: (run_id, source or None, fork_refs, events).
    releasable: list[tuple[str, str | None, int, int]]


@dataclass(frozen=True, slots=True)
class DeletedTombstone:
    """A run row a tombstone scan deleted: the tombstone itself (``tombstone``), or a
    soft-deleted source whose last fork it was, with that source's events."""

    run_id: str
    events_deleted: int
    tombstone: bool


class RetentionStore:
    """Runs the retention statements of one schema on the connection given."""

    def __init__(self, queries: RetentionQueries, schema: str) -> None:
        self._sql = queries
        self._schema = schema

    # -- the pass lock ----------------------------------------------------------

    async def try_lock(self, conn: asyncpg.Connection) -> bool:
        """Take the schema's pass lock if it is free (a session lock, held until :meth:`unlock`)."""
        return bool(await conn.fetchval(self._sql.try_lock, self._schema))

    async def unlock(self, conn: asyncpg.Connection) -> bool:
        """Release the pass lock; False when this session did not hold it."""
        return bool(await conn.fetchval(self._sql.unlock, self._schema))

    # -- the stale-run reaper ---------------------------------------------------

    async def lock_stale_runs(
        self, conn: asyncpg.Connection, *, active_timeout: float, awaiting_input_timeout: float, limit: int
    ) -> list[str]:
        """Lock up to *limit* silent runs (SKIP LOCKED); call inside a transaction."""
        rows = await conn.fetch(
            self._sql.lock_stale_runs, float(active_timeout), float(awaiting_input_timeout), limit
        )
        return [row["run_id"] for row in rows]

    async def dead_letter_runs(
        self,
        conn: asyncpg.Connection,
        run_ids: list[str],
        *,
        active_timeout: float,
        awaiting_input_timeout: float,
    ) -> list[DeadLettered]:
        """End the runs :meth:`lock_stale_runs` locked in this transaction that are still silent
        (read afresh: a publish that committed meanwhile keeps its run open) with a
        ``dead_letter`` terminal event."""
        rows = await conn.fetch(
            self._sql.dead_letter_runs, run_ids, float(active_timeout), float(awaiting_input_timeout)
        )
        return [DeadLettered(row["run_id"], row["seq"]) for row in rows]

    # -- the scans that name runs to trim ----------------------------------------

    async def runs_over_max_events(
        self, conn: asyncpg.Connection, limit: int, *, keep: int
    ) -> list[TrimCandidate]:
        """Up to *limit* runs holding more than *keep* events."""
        return _candidates(await conn.fetch(self._sql.runs_over_max_events, limit, keep))

    async def runs_with_events_older_than(
        self, conn: asyncpg.Connection, limit: int, *, age: float, most_events: int
    ) -> list[TrimCandidate]:
        """Up to *limit* runs holding events older than *age* seconds, at most *most_events* each."""
        return _candidates(await conn.fetch(self._sql.runs_with_events_older_than, limit, age, most_events))

    async def ended_runs_with_events(
        self, conn: asyncpg.Connection, limit: int, *, ended_for: float
    ) -> list[TrimCandidate]:
        """Up to *limit* runs that ended more than *ended_for* seconds ago and still hold events."""
        return _candidates(await conn.fetch(self._sql.ended_runs_with_events, limit, ended_for))

    async def expired_streams_with_events(self, conn: asyncpg.Connection, limit: int) -> list[TrimCandidate]:
        """Up to *limit* expired Durable Streams no fork reads that still hold events."""
        return _candidates(await conn.fetch(self._sql.expired_streams_with_events, limit))

    # -- one trim transaction: lock, then delete ---------------------------------

    async def lock_runs(self, conn: asyncpg.Connection, run_ids: list[str]) -> list[LockedRun]:
        """Lock these run rows (in run_id order) that no fork reads; call inside a transaction."""
        return _locked(await conn.fetch(self._sql.lock_runs, run_ids))

    async def lock_expired_runs(self, conn: asyncpg.Connection, run_ids: list[str]) -> list[LockedRun]:
        """:meth:`lock_runs` for expired streams: those still expired under the lock."""
        return _locked(await conn.fetch(self._sql.lock_expired_runs, run_ids))

    async def trim_run_prefixes(
        self, conn: asyncpg.Connection, run_ids: list[str], first_seqs: list[int], throughs: list[int]
    ) -> int:
        """Delete each locked run's events ``first_seq..through``; returns how many went."""
        deleted: int = await conn.fetchval(self._sql.trim_run_prefixes, run_ids, first_seqs, throughs)
        return deleted

    # -- expired Durable Streams -------------------------------------------------

    async def lock_expired_streams(self, conn: asyncpg.Connection, limit: int) -> list[ExpiredStream]:
        """Lock up to *limit* expired streams (SKIP LOCKED); call inside a transaction."""
        rows = await conn.fetch(self._sql.lock_expired_streams, limit)
        return [ExpiredStream(row["run_id"], row["first_seq"], row["fork_refs"]) for row in rows]

    async def soft_delete_streams(self, conn: asyncpg.Connection, run_ids: list[str]) -> None:
        """Soft-delete these locked streams (forks still read their events)."""
        await conn.execute(self._sql.soft_delete_streams, run_ids)

    async def delete_streams(self, conn: asyncpg.Connection, run_ids: list[str]) -> list[DeletedRun]:
        """Delete these locked streams as a DELETE would (releasing a fork's source, up the chain)."""
        rows = await conn.fetch(self._sql.delete_streams, run_ids)
        return [DeletedRun(row["run_id"], row["last_seq"], row["events_deleted"]) for row in rows]

    # -- tombstones -------------------------------------------------------------

    async def delete_tombstones(
        self, conn: asyncpg.Connection, *, after_end: float, limit: int
    ) -> list[DeletedTombstone]:
        """Delete up to *limit* tombstones more than *after_end* seconds past their run's end."""
        rows = await conn.fetch(self._sql.delete_tombstones, float(after_end), limit)
        return [DeletedTombstone(row["run_id"], row["events_deleted"], row["tombstone"]) for row in rows]

    # -- a dry run: read only ------------------------------------------------------

    async def preview_pass(self, conn: asyncpg.Connection, policy: RetentionPolicy) -> PassPreview:
        """What a pass with *policy* would do now, counted in one read-only statement."""
        row = await conn.fetchrow(
            self._sql.preview_pass,
            policy.max_events_per_run,
            _seconds(policy.max_event_age),
            _seconds(policy.ended_run_ttl),
            _seconds(policy.tombstone_ttl),
            float(policy.active_timeout),
            float(policy.awaiting_input_timeout),
        )
        assert row is not None  # an aggregate without GROUP BY
        return PassPreview(
            runs_dead_lettered=row["runs_dead_lettered"],
            events_by_rule={
                rule: row["events_" + rule]
                for rule in ("max_events_per_run", "max_event_age", "ended_run_ttl", "expired_streams")
            },
            streams_expired=row["streams_expired"],
            streams_deleted=row["streams_deleted"],
            tombstones_deleted=row["tombstones_deleted"],
            released=[(run_id, source) for run_id, source in json.loads(row["released"])],
            releasable=[tuple(item) for item in json.loads(row["releasable"])],
        )

    # -- vacuum, and the pass's record --------------------------------------------

    async def tables_due_for_vacuum(self, conn: asyncpg.Connection) -> list[VacuumTable]:
        """The tables autovacuum will not clean whose dead rows passed its threshold."""
        return [row["table_name"] for row in await conn.fetch(self._sql.tables_due_for_vacuum, self._schema)]

    async def vacuum(self, conn: asyncpg.Connection, table: VacuumTable) -> None:
        """VACUUM *table* (outside a transaction); a role that may not raises InsufficientPrivilegeError."""
        statement = {"run_events": self._sql.vacuum_run_events, "run_streams": self._sql.vacuum_run_streams}
        await conn.execute(statement[table])

    async def record_pass(
        self, conn: asyncpg.Connection, policy: RetentionPolicy, report: RetentionReport, seconds: float
    ) -> None:
        """Replace the row of ``retention_last_pass`` with this pass's report (and count the pass)."""
        await conn.execute(
            self._sql.record_pass,
            seconds,
            report.events_deleted,
            report.runs_deleted,
            report.runs_dead_lettered,
            report.tables_vacuumed,
            json.dumps(asdict(policy)),
        )


def released_sources(
    released: list[tuple[str, str]], releasable: list[tuple[str, str | None, int, int]]
) -> tuple[int, int]:
    """Runs and events that go with deleted forks: a soft-deleted source goes when its last
    fork does (pgbridge_delete_stream), and so on up the chain. Pure: (runs, events)."""
    sources = {run_id: (source, refs, events) for run_id, source, refs, events in releasable}
    freed: dict[str, int] = {}
    queue = [source for _, source in released]
    runs = events = 0
    while queue:
        source = queue.pop()
        freed[source] = freed.get(source, 0) + 1
        known = sources.get(source)
        if known is not None and freed[source] == known[1]:
            runs += 1
            events += known[2]
            if known[0] is not None:
                queue.append(known[0])
    return runs, events


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


def _candidates(rows: list[asyncpg.Record]) -> list[TrimCandidate]:
    return [TrimCandidate(row["run_id"], row["through"]) for row in rows]


def _locked(rows: list[asyncpg.Record]) -> list[LockedRun]:
    return [LockedRun(row["run_id"], row["first_seq"], row["last_seq"]) for row in rows]
