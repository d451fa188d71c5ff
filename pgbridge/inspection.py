"""Looking at runs, read-only: what ``pgbridge runs``, ``events`` and ``stats`` show.

Callable from Python as well as from the command line::

    async with Inspector(dsn) as inspector:
        for run in await inspector.runs(status="errored", since=86400):
            print(run.run_id, run.last_event_id, run.duration)
        async with inspector.read_events("run-42", after="1764000000123-5") as listing:
            async for event in listing.events:
                print(event.event_id, event.event, event.data)
        print((await inspector.stats()).to_json())

Runs and events are read through the views of revision 0005
(``pgbridge_runs``, ``pgbridge_events``, documented in ``docs/sql.md``), so
a :class:`RunSummary` and an :class:`EventRow` have exactly the views'
columns (they are the rows of :mod:`pgbridge.store.inspection`, which runs
the SQL). Nothing here writes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from pgbridge.connector import AsyncLifecycle, Database
from pgbridge.contract import ResumeResult
from pgbridge.dsn import take_connect_timeout
from pgbridge.exceptions import ConfigurationError, InvalidEventError, StreamNotFoundError
from pgbridge.ids import format_event_id, parse_event_id, resolve_cursor, validate_run_id
from pgbridge.retention.policy import RetentionPolicy
from pgbridge.sql import DEFAULT_SCHEMA, RUN_STATUSES
from pgbridge.sql.queries import Queries
from pgbridge.store.inspection import (
    EventRow,
    InspectionStore,
    OldestEvent,
    RetentionPassRecord,
    RunSummary,
    Snapshot,
    StatusCount,
    TableSize,
    json_value,
)
from pgbridge.store.retention import RetentionStore, released_sources

__all__ = [
    "CURSOR_PREFETCH",
    "TABLES",
    "EventListing",
    "EventRow",
    "Inspector",
    "OldestEvent",
    "RetentionPassRecord",
    "RetentionPreview",
    "RunSummary",
    "Stats",
    "StatusCount",
    "TableSize",
]

#: The tables ``stats`` measures.
TABLES = ("run_events", "run_streams", "retention_last_pass")
#: Rows fetched per round trip while listing a run's events.
CURSOR_PREFETCH = 1000


@dataclass(frozen=True, slots=True)
class EventListing:
    """A run's events after a cursor, read in one snapshot.

    ``resume`` says how the cursor resolved (``fresh``, ``resumed``, or
    ``evicted`` with ``gap_count`` events deleted by retention before the
    first one listed); ``events`` is valid inside ``read_events``'s block.
    """

    run: RunSummary
    resume: ResumeResult
    events: AsyncIterator[EventRow]


@dataclass(frozen=True, slots=True)
class Stats:
    """What ``pgbridge stats`` shows."""

    schema: str
    #: The database server's clock when the stats were read.
    checked_at: datetime
    tables: list[TableSize]
    #: One entry per run status, in the order of RUN_STATUSES (zeros included), then
    #: ``deleted``: Durable Streams deleted while forks read them (when there are some).
    by_status: list[StatusCount]
    oldest_event: OldestEvent | None
    last_retention_pass: RetentionPassRecord | None

    def to_json(self) -> dict[str, Any]:
        def plain(item: Any) -> Any:
            return {f.name: json_value(getattr(item, f.name)) for f in fields(item)}

        return {
            "schema": self.schema,
            "checked_at": self.checked_at.isoformat(),
            "tables": [plain(t) for t in self.tables],
            "by_status": [plain(c) for c in self.by_status],
            "oldest_event": plain(self.oldest_event) if self.oldest_event else None,
            "last_retention_pass": plain(self.last_retention_pass) if self.last_retention_pass else None,
        }


@dataclass(frozen=True, slots=True)
class RetentionPreview:
    """What a retention pass with ``policy`` would do now (``pgbridge retention --dry-run``).

    Counted by one read-only statement that follows the pass step by step
    (``preview_pass`` in ``pgbridge/sql/retention.sql``): nothing is locked or
    written. It is exact for the database as it is when read; what is
    published, read or ended between the preview and a pass changes the pass.
    """

    policy: RetentionPolicy
    runs_dead_lettered: int
    #: Events each rule would delete, in the pass's order: ``max_events_per_run``,
    #: ``max_event_age``, ``ended_run_ttl``, ``expired_streams`` (each counts only what the
    #: rules before it left), and ``deleted_sources``: the events of soft-deleted Durable
    #: Streams that go with their last fork.
    events_by_rule: dict[str, int]
    #: Expired Durable Streams the pass would remove (deleted, or soft-deleted while forks read them).
    streams_expired: int
    #: Run rows: expired streams deleted, tombstones past their time, sources that go with their last fork.
    runs_deleted: int

    @property
    def events_deleted(self) -> int:
        return sum(self.events_by_rule.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "events_deleted": self.events_deleted,
            "runs_deleted": self.runs_deleted,
            "runs_dead_lettered": self.runs_dead_lettered,
            "streams_expired": self.streams_expired,
            "events_by_rule": dict(self.events_by_rule),
        }


class Inspector(AsyncLifecycle):
    """Read-only access to a schema's runs and events (one small pool, at most two connections)."""

    def __init__(
        self, dsn: str, *, schema: str = DEFAULT_SCHEMA, connect_timeout: float | None = None
    ) -> None:
        """*connect_timeout*: seconds per connection attempt; default the DSN's
        ``?connect_timeout=``, else 10."""
        self.schema = schema
        self._queries = Queries.for_schema(schema)
        try:
            dsn, from_dsn = take_connect_timeout(dsn)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._db = Database(
            dsn,
            self._queries,
            min_size=1,
            max_size=2,
            connect_timeout=connect_timeout or from_dsn or 10.0,
            command_timeout=None,
            statement_cache_size=100,
        )
        self._store = InspectionStore(self._db)

    async def start(self) -> None:
        """Connect; fails with the command to run if the schema is not migrated."""
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    # -- runs -------------------------------------------------------------------

    async def runs(
        self, *, status: str | None = None, since: float | None = None, limit: int = 50
    ) -> list[RunSummary]:
        """The *limit* most recently active runs, newest first.

        *status* keeps runs of that status; *since* (seconds) keeps runs
        active in that window: open runs that published (or were marked
        awaiting input) since then, ended runs that ended since then.
        """
        if status is not None and status not in RUN_STATUSES:
            raise InvalidEventError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        if since is not None and not (
            isinstance(since, int | float)
            and not isinstance(since, bool)
            and math.isfinite(since)
            and since >= 0
        ):
            raise InvalidEventError(f"since must be a number of seconds >= 0, not {since!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidEventError(f"limit must be a whole number >= 1, not {limit!r}")
        return await self._store.recent_runs(
            status=status, since=None if since is None else float(since), limit=limit
        )

    async def run(self, run_id: str) -> RunSummary | None:
        """One run, or None if there is no such run."""
        validate_run_id(run_id)
        return await self._store.run(run_id)

    # -- events -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def read_events(
        self, run_id: str, *, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[EventListing]:
        """*run_id*'s retained events after the event ID *after* (all, if None), in seq order.

        One read-only snapshot: retention running meanwhile cannot cut the
        listing short, and events stream through a cursor in constant memory.
        Raises :class:`StreamNotFoundError` for a run that does not exist and
        :class:`InvalidEventError` for an *after* that is malformed or is not
        an event ID of this run (a later one, or another run's).
        """
        validate_run_id(run_id)
        if after is not None and not isinstance(after, str):
            raise InvalidEventError(f"after must be an event ID (a str) or None, not {type(after).__name__}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidEventError(f"limit must be a whole number >= 0 or None, not {limit!r}")
        parsed = parse_event_id(after) if after is not None else None
        if after is not None and parsed is None:
            raise InvalidEventError(
                f"not an event ID: {after!r} (an event ID is <ms>-<seq>, e.g. 1764000000123-5)"
            )
        async with self._store.snapshot() as snapshot:
            run = await snapshot.run(run_id)
            if run is None:
                raise StreamNotFoundError(f"no run {run_id!r} in schema {self.schema!r}")
            if run.deleted or run.expired:
                raise StreamNotFoundError(_gone_message(run))
            resume = await self._resolve(snapshot, run_id, after, parsed.seq if parsed else 0)
            if resume.status == "unknown":
                raise InvalidEventError(_unknown_cursor_message(run, after))
            events = snapshot.events_after(run, resume.next_offset - 1, limit, prefetch=CURSOR_PREFETCH)
            yield EventListing(run=run, resume=resume, events=events)

    async def event_before_last(self, run_id: str, count: int) -> str | None:
        """The ID of the event just before *run_id*'s last *count* retained events (its last
        event for 0), to read or follow from there like ``tail -n``; None when the run retains
        *count* events or fewer (start from its first), or does not exist."""
        validate_run_id(run_id)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidEventError(f"count must be a whole number >= 0, not {count!r}")
        async with self._store.snapshot() as snapshot:
            run = await snapshot.run(run_id)
            if run is None or run.last_seq - count < run.first_seq:
                return None
            seq = run.last_seq - count
            retained = await snapshot.retained_range(run_id, seq)
            if retained is None or retained.stored_ms is None:
                return None
            return format_event_id(retained.stored_ms, seq)

    async def _resolve(self, snapshot: Snapshot, run_id: str, cursor: str | None, seq: int) -> ResumeResult:
        retained = await snapshot.retained_range(run_id, seq)
        assert retained is not None  # the run row was read in this snapshot
        return resolve_cursor(cursor, retained)

    # -- retention --------------------------------------------------------------

    async def retention_preview(self, policy: RetentionPolicy) -> RetentionPreview:
        """What one retention pass with *policy* would delete now, per rule, deleting nothing."""
        store = RetentionStore(self._queries.retention, self.schema)
        async with self._db.connection() as conn:
            preview = await store.preview_pass(conn, policy)
        cascaded_runs, cascaded_events = released_sources(preview.released, preview.releasable)
        return RetentionPreview(
            policy=policy,
            runs_dead_lettered=preview.runs_dead_lettered,
            events_by_rule={**preview.events_by_rule, "deleted_sources": cascaded_events},
            streams_expired=preview.streams_expired,
            runs_deleted=preview.streams_deleted + preview.tombstones_deleted + cascaded_runs,
        )

    # -- stats ------------------------------------------------------------------

    async def stats(self) -> Stats:
        """Table sizes, runs and events by status, the oldest retained event, the last retention pass."""
        async with self._store.snapshot() as snapshot:
            checked_at = await snapshot.server_now()
            tables = await snapshot.table_sizes(self.schema, list(TABLES))
            counted = await snapshot.runs_by_status()
            oldest = await snapshot.oldest_retained_event()
            last_pass = await snapshot.last_retention_pass()
        return Stats(
            schema=self.schema,
            checked_at=checked_at,
            tables=tables,
            by_status=[counted.get(status, StatusCount(status, 0, 0, 0)) for status in RUN_STATUSES]
            + [counted[status] for status in counted if status not in RUN_STATUSES],
            oldest_event=oldest,
            last_retention_pass=last_pass,
        )


def _gone_message(run: RunSummary) -> str:
    """Why a deleted or expired Durable Stream lists no events, as its URL answers."""
    if run.deleted:
        return (
            f"stream {run.run_id!r} was deleted (its URL answers 410 Gone); its "
            f"{run.events_retained} event(s) are kept only for the forks that read them"
        )
    return f"stream {run.run_id!r} has expired (its URL answers 404): a retention pass will remove it"


def _unknown_cursor_message(run: RunSummary, cursor: str | None) -> str:
    if run.first_event_id is None:
        held = "it holds no events now"
    else:
        held = f"its retained events are {run.first_event_id} to {run.last_event_id}"
    return f"{cursor!r} is not an event ID of run {run.run_id!r} ({held})"
