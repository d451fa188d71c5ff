"""The read-only statements of ``pgbridge runs``, ``events`` and ``stats`` (``pgbridge/sql/inspection.sql``).

Runs and events are read through the views of revision 0005
(``pgbridge_runs``, ``pgbridge_events``, documented in ``docs/sql.md``), so
a :class:`RunSummary` and an :class:`EventRow` have exactly the views'
columns. Reads that must agree with each other (a run, the resolution of a
cursor against it and its events; the parts of ``stats``) go through one
:class:`Snapshot`: a read-only REPEATABLE READ transaction. Nothing here writes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from pgbridge.connector import Database
from pgbridge.contract import JSONValue
from pgbridge.ids import RetainedRange
from pgbridge.payload import decode_data
from pgbridge.sql.queries import InspectQueries
from pgbridge.store.events import MAX_BIGINT


def json_value(value: object) -> Any:
    """*value* as JSON shows it: times in ISO 8601, durations in seconds."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A row of the ``pgbridge_runs`` view (docs/sql.md says what each column means), as a
    read of the run's stream sees it, with what the view does not say of a Durable Stream.

    For a fork the counts and first ID are those of its stitched view (what
    ``GET /v1/stream/<fork>`` returns: its source's events up to the fork
    point, then its own): ``events_retained`` counts both, ``events_inherited``
    the source's among them, and ``events_deleted`` what retention took from
    the chain before the fork existed (or from the fork's own events).
    """

    run_id: str
    status: str
    terminal_event: str | None
    awaiting_input: bool
    events_published: int
    events_retained: int
    events_deleted: int
    first_seq: int
    last_seq: int
    terminal_seq: int | None
    first_event_id: str | None
    last_event_id: str | None
    terminal_event_id: str | None
    started_at: datetime
    last_event_at: datetime | None
    last_activity_at: datetime
    awaiting_input_since: datetime | None
    ended_at: datetime | None
    duration: timedelta
    #: The Durable Stream this run forks (None: no fork).
    fork_of: str | None = None
    #: Events of the retained view stored in the fork's sources (0 but for a fork).
    events_inherited: int = 0
    #: A Durable Stream deleted while forks read it: its URL answers 410, its events stay for them.
    deleted: bool = False
    #: A Durable Stream past its Expires-At or idle longer than its TTL: gone for every request.
    expired: bool = False

    @classmethod
    def from_row(cls, row: asyncpg.Record, fork: asyncpg.Record | None = None) -> RunSummary:
        """From a row of ``runs`` or ``run``, and, for a fork, its ``fork_view`` row."""
        summary = cls(**{f.name: row[f.name] for f in fields(cls) if f.name != "events_inherited"})
        if fork is None or row["fork_seq"] is None:
            return summary
        oldest, first_ms = fork["oldest_seq"], fork["first_ms"]
        retained = max(0, summary.last_seq - oldest)
        return replace(
            summary,
            first_seq=oldest + 1,
            events_retained=retained,
            events_deleted=oldest,
            events_inherited=max(0, min(row["fork_seq"], summary.last_seq) - oldest),
            first_event_id=f"{first_ms}-{oldest + 1}" if retained and first_ms is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object: times in ISO 8601, ``duration`` in seconds."""
        return {f.name: json_value(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class EventRow:
    """A row of the ``pgbridge_events`` view, its ``data`` decoded."""

    run_id: str
    seq: int
    event_id: str
    event: str
    data: JSONValue
    terminal: bool
    created_ms: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> EventRow:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["data"] = decode_data(row["data"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """A JSON object: ``created_at`` in ISO 8601."""
        return {f.name: json_value(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class TableSize:
    name: str
    total_bytes: int
    table_bytes: int
    index_bytes: int
    #: The statistics collector's estimate of live rows (None before it has one).
    rows_estimate: int | None


@dataclass(frozen=True, slots=True)
class StatusCount:
    """Runs of one status, and their events (exact: counted from each run's seqs)."""

    status: str
    runs: int
    events_retained: int
    events_published: int


@dataclass(frozen=True, slots=True)
class OldestEvent:
    run_id: str
    event_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RetentionPassRecord:
    """The last retention pass of the schema (the row of ``retention_last_pass``)."""

    started_at: datetime
    finished_at: datetime
    events_deleted: int
    runs_deleted: int
    runs_dead_lettered: int
    tables_vacuumed: int
    #: The RetentionPolicy it applied, field by field.
    policy: dict[str, Any]
    #: Passes recorded in this schema so far.
    passes: int


class InspectionStore:
    """The reads of one schema's runs and events, on a :class:`~pgbridge.connector.Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._sql = InspectQueries.for_schema(db.queries.schema)

    async def recent_runs(self, *, status: str | None, since: float | None, limit: int) -> list[RunSummary]:
        """The *limit* most recently active runs of *status* (any: None), active within
        *since* seconds (any time: None), newest first."""
        async with self.snapshot() as snapshot:
            return await snapshot.recent_runs(status=status, since=since, limit=limit)

    async def run(self, run_id: str) -> RunSummary | None:
        """One run, or None if there is no such run."""
        async with self.snapshot() as snapshot:
            return await snapshot.run(run_id)

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """Reads that see one state of the database: a read-only REPEATABLE READ transaction
        on a pooled connection, for the length of the block."""
        async with (
            self._db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield Snapshot(
                conn, self._sql, self._db.queries.resolve_cursor, self._db.queries.resolve_fork_cursor
            )


class Snapshot:
    """The reads of :meth:`InspectionStore.snapshot`, all in its one transaction."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        queries: InspectQueries,
        resolve_cursor_sql: str,
        resolve_fork_cursor_sql: str,
    ) -> None:
        self._conn = conn
        self._sql = queries
        self._resolve_cursor = resolve_cursor_sql
        self._resolve_fork_cursor = resolve_fork_cursor_sql

    async def recent_runs(self, *, status: str | None, since: float | None, limit: int) -> list[RunSummary]:
        """:meth:`InspectionStore.recent_runs`, a fork's counts from its stitched view (one
        more statement per fork listed)."""
        rows = await self._conn.fetch(self._sql.runs, status, since, limit)
        return [await self._summary(row) for row in rows]

    async def run(self, run_id: str) -> RunSummary | None:
        """One run, or None if there is no such run."""
        row = await self._conn.fetchrow(self._sql.run, run_id)
        return None if row is None else await self._summary(row)

    async def _summary(self, row: asyncpg.Record) -> RunSummary:
        fork = None
        if row["fork_seq"] is not None:
            fork = await self._conn.fetchrow(self._sql.fork_view, row["run_id"])
        return RunSummary.from_row(row, fork)

    async def retained_range(self, run_id: str, cursor_seq: int) -> RetainedRange | None:
        """The run's retained seqs and the creation time of event *cursor_seq* (None: no such run);
        a fork's, those of its stitched view."""
        lookup = cursor_seq if 0 <= cursor_seq <= MAX_BIGINT else 0
        row = await self._conn.fetchrow(self._resolve_cursor, run_id, lookup)
        if row is None:
            return None
        if row["fork_seq"] is not None:
            fork = await self._conn.fetchrow(self._resolve_fork_cursor, run_id, lookup)
            assert fork is not None  # read in the same snapshot
            return RetainedRange(
                first=fork["oldest_seq"] + 1,
                last=fork["last_seq"],
                stored_ms=fork["stored_ms"],
                fork_seq=fork["fork_seq"],
            )
        return RetainedRange(first=row["first_seq"], last=row["last_seq"], stored_ms=row["stored_ms"])

    def events_after(
        self, run: RunSummary, after_seq: int, limit: int | None, *, prefetch: int
    ) -> AsyncIterator[EventRow]:
        """The run's events after *after_seq* in seq order, at most *limit* (all: None), read
        through a server-side cursor *prefetch* rows per round trip; iterate inside the snapshot.
        A fork's are those of its stitched view: its sources' up to the fork point, then its own."""
        if run.fork_of is None:
            rows = self._conn.cursor(self._sql.events_after, run.run_id, after_seq, limit, prefetch=prefetch)
        else:
            most = max(0, run.last_seq - after_seq) if limit is None else limit
            rows = self._conn.cursor(
                self._sql.fork_events_after, run.run_id, after_seq, most, prefetch=prefetch
            )
        return (EventRow.from_row(row) async for row in rows)

    async def server_now(self) -> datetime:
        """The database server's clock (the start of the transaction)."""
        now: datetime = await self._conn.fetchval(self._sql.server_now)
        return now

    async def table_sizes(self, schema: str, tables: list[str]) -> list[TableSize]:
        """The size of each of *tables* in *schema*, largest first."""
        return [
            TableSize(**dict(row)) for row in await self._conn.fetch(self._sql.table_sizes, schema, tables)
        ]

    async def runs_by_status(self) -> dict[str, StatusCount]:
        """Runs and their events per status, for the statuses some run has."""
        return {
            row["status"]: StatusCount(
                status=row["status"],
                runs=row["runs"],
                events_retained=row["events_retained"],
                events_published=row["events_published"],
            )
            for row in await self._conn.fetch(self._sql.runs_by_status)
        }

    async def oldest_retained_event(self) -> OldestEvent | None:
        """The oldest event any run retains, or None."""
        row = await self._conn.fetchrow(self._sql.oldest_retained_event)
        return OldestEvent(**dict(row)) if row else None

    async def last_retention_pass(self) -> RetentionPassRecord | None:
        """The schema's last recorded retention pass, or None."""
        row = await self._conn.fetchrow(self._sql.last_retention_pass)
        if not row:
            return None
        return RetentionPassRecord(**{**dict(row), "policy": json.loads(row["policy"])})
