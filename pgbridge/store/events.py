"""Typed operations on the two tables: run the named SQL, map rows to objects.

This is the only module that turns rows into events. It knows nothing of
waiters, retries or wake-ups; the engine modules above compose it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeAlias

import asyncpg
import orjson

from pgbridge.connector import Database
from pgbridge.contract import JSONValue, StreamEvent
from pgbridge.ids import RetainedRange, format_event_id
from pgbridge.payload import decode_data

#: Largest value of a PostgreSQL bigint; cursors beyond it name no event.
MAX_BIGINT = 2**63 - 1
#: Run ids an EventStore remembers as having rows (``append_runs_once`` is tried only for them).
KNOWN_RUNS_LIMIT = 100_000


def _decode(data_text: str) -> JSONValue:
    """Stored JSON text to the published value: orjson, several times faster than
    the standard library on the replay path (once per event), with
    :func:`~pgbridge.payload.decode_data` for what orjson refuses but publish
    accepts (integers beyond 64 bits)."""
    try:
        value: JSONValue = orjson.loads(data_text)
    except orjson.JSONDecodeError:
        value = decode_data(data_text)
    return value


#: StreamEvent's slots, set directly: what its (frozen) dataclass ``__init__`` does, without
#: the three ``object.__setattr__`` calls that made it a third of a replayed event's cost.
#: tests/unit/test_stored_events.py checks the result equals ``StreamEvent(...)`` (LoggedEvent.event).
_new_object = object.__new__
_set_id: Callable[[StreamEvent, str], None] = StreamEvent.__dict__["id"].__set__
_set_event: Callable[[StreamEvent, str], None] = StreamEvent.__dict__["event"].__set__
_set_data: Callable[[StreamEvent, JSONValue], None] = StreamEvent.__dict__["data"].__set__


class LoggedEvent:
    """An event as stored: seq, creation time, name, JSON text and terminal flag.

    The public :class:`~pgbridge.contract.StreamEvent` (:attr:`event`) is
    made, and the JSON text decoded, only when it is asked for, and once:
    a page's events past where a subscriber stops (its terminal event, a
    trim, a close) are never decoded, a feed's buffer decodes once for all
    its subscribers, and the HTTP surfaces send :attr:`data_text` as it is.
    """

    __slots__ = ("_event", "data_text", "ms", "name", "seq", "terminal")

    def __init__(self, seq: int, ms: int, name: str, data_text: str, terminal: bool) -> None:
        self.seq = seq
        self.ms = ms
        self.name = name
        #: The data as PostgreSQL stores it: the JSON text publish wrote.
        self.data_text = data_text
        self.terminal = terminal
        self._event: StreamEvent | None = None

    @classmethod
    def from_stored(cls, seq: int, ms: int, name: str, data_text: str, terminal: bool) -> LoggedEvent:
        return cls(seq, ms, name, data_text, terminal)

    @property
    def id(self) -> str:
        """The event ID (:func:`~pgbridge.ids.format_event_id`)."""
        return f"{self.ms}-{self.seq}"

    @property
    def event(self) -> StreamEvent:
        """The event as subscribers receive it, its data decoded (on first use, then kept:
        the events of a feed's buffer are shared by every subscriber of the run)."""
        made = self._event
        if made is None:
            made = self._event = self.new_event()
        return made

    def new_event(self) -> StreamEvent:
        """The event as subscribers receive it, made anew and not kept: for an event only
        one subscriber yields (its own catch-up page), so that nothing but the consumer
        holds it (a kept one doubled the objects the garbage collector walks in a replay)."""
        # _decode and StreamEvent(...), inlined: this runs once per replayed event.
        try:
            data: JSONValue = orjson.loads(self.data_text)
        except orjson.JSONDecodeError:
            data = decode_data(self.data_text)
        made: StreamEvent = _new_object(StreamEvent)
        _set_id(made, f"{self.ms}-{self.seq}")  # format_event_id
        _set_event(made, self.name)
        _set_data(made, data)
        return made

    def __repr__(self) -> str:
        return f"LoggedEvent(seq={self.seq}, ms={self.ms}, name={self.name!r}, terminal={self.terminal})"


@dataclass(slots=True)
class RunState:
    """A run's row as of one read. ``exists`` is False for a run never published."""

    exists: bool = False
    first_seq: int = 1
    first_ms: int | None = None
    last_seq: int = 0
    last_ms: int | None = None
    terminal_seq: int | None = None

    @property
    def earliest_event_id(self) -> str | None:
        """ID of the oldest retained event, or None when nothing is retained."""
        if self.first_ms is None or self.last_seq < self.first_seq:
            return None
        return format_event_id(self.first_ms, self.first_seq)

    @property
    def latest_event_id(self) -> str | None:
        """ID of the newest retained event, or None when nothing is retained."""
        if self.last_ms is None or self.last_seq < self.first_seq:
            return None
        return format_event_id(self.last_ms, self.last_seq)


#: A row of a range read (the store's; the engine reads it only through :class:`StoredRows`).
Record: TypeAlias = asyncpg.Record


class StoredRows:
    """The rows of a range read whose events are not made yet: a subscriber's own page
    makes each event from its row as it yields it (:meth:`stream_event`, :meth:`logged`),
    and reads a row's seq and terminal flag at :attr:`seq_at` and :attr:`terminal_at`."""

    __slots__ = ("data_at", "ms_at", "name_at", "records", "seq_at", "terminal_at")

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        # Positions looked up once a page: a Record read by position costs about half what
        # a read by name does.
        columns = list(records[0].keys())
        self.seq_at = columns.index("seq")
        self.ms_at = columns.index("created_ms")
        self.name_at = columns.index("event")
        self.data_at = columns.index("data")
        self.terminal_at = columns.index("terminal")

    def stream_event(self, row: Record) -> StreamEvent:
        """*row*'s event as subscribers receive it (LoggedEvent.new_event, from the row)."""
        text = row[self.data_at]
        try:
            data: JSONValue = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = decode_data(text)
        made: StreamEvent = _new_object(StreamEvent)
        _set_id(made, f"{row[self.ms_at]}-{row[self.seq_at]}")  # format_event_id
        _set_event(made, row[self.name_at])
        _set_data(made, data)
        return made

    def logged(self, row: Record) -> LoggedEvent:
        return LoggedEvent(
            row[self.seq_at], row[self.ms_at], row[self.name_at], row[self.data_at], row[self.terminal_at]
        )

    def all_logged(self) -> list[LoggedEvent]:
        seq, ms, name, data, terminal = self.seq_at, self.ms_at, self.name_at, self.data_at, self.terminal_at
        return [LoggedEvent(row[seq], row[ms], row[name], row[data], row[terminal]) for row in self.records]


def event_id(last: LoggedEvent | Record) -> str:
    """The ID of an event a subscriber yielded, from its LoggedEvent or its row."""
    if isinstance(last, LoggedEvent):
        return last.id
    return format_event_id(last["created_ms"], last["seq"])


class Page:
    """One read: the run's state and the events after a cursor, in seq order."""

    __slots__ = ("_events", "after_ms", "rows", "shared", "state", "truncated")

    def __init__(
        self,
        state: RunState,
        events: list[LoggedEvent] | None = None,
        *,
        truncated: bool = False,
        shared: bool = False,
        rows: StoredRows | None = None,
        after_ms: int | None = None,
    ) -> None:
        self.state = state
        #: The creation time of the event stored at the cursor's seq, when the read knows it
        #: (None: none is stored there, or unknown): the reader compares it with the event it
        #: last yielded, to notice a history that changed under it (pgbridge.engine.subscribe).
        self.after_ms = after_ms
        self._events = events
        #: True when the read was cut at its limit, so more events may follow.
        self.truncated = truncated
        #: True when the events are a feed's buffer, which other subscribers read too.
        self.shared = shared
        #: The rows of a range read, when its events are not made yet (else None).
        self.rows = rows

    @property
    def events(self) -> list[LoggedEvent]:
        """The events (made from :attr:`rows` on first use, for a feed's buffer)."""
        if self._events is None:
            self._events = self.rows.all_logged() if self.rows is not None else []
        return self._events

    def tail(self) -> tuple[int, bool] | None:
        """The seq and terminal flag of the page's last event; None when it has none."""
        if self._events is None and self.rows is not None:
            last = self.rows.records[-1]
            return last[self.rows.seq_at], last[self.rows.terminal_at]
        if self.events:
            return self.events[-1].seq, self.events[-1].terminal
        return None

    def __repr__(self) -> str:
        count = len(self.rows.records) if self._events is None and self.rows is not None else len(self.events)
        return f"Page(state={self.state!r}, events={count}, truncated={self.truncated}, shared={self.shared})"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as dashboards see it: status, counts, first and last IDs, times."""

    run_id: str
    status: str
    events_published: int
    events_retained: int
    events_deleted: int
    first_event_id: str | None
    last_event_id: str | None
    terminal_event_id: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    awaiting_input_since: datetime | None
    #: The stream this Durable Streams fork was forked from (its events count as the fork's).
    fork_of: str | None = None
    #: A Durable Stream deleted (or expired) while forks still read it: gone for every request.
    deleted: bool = False

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> RunInfo:
        first, last = row["first_seq"], row["last_seq"]
        retained = last >= first
        return cls(
            run_id=row["run_id"],
            status=row["status"],
            events_published=last,
            events_retained=last - first + 1,
            events_deleted=first - 1,
            first_event_id=format_event_id(row["first_ms"], first) if retained and row["first_ms"] else None,
            last_event_id=format_event_id(row["last_ms"], last) if retained and row["last_ms"] else None,
            # A closed Durable Streams fork with no events of its own ends on an
            # inherited event, whose creation time its run row does not hold: no ID.
            terminal_event_id=(
                format_event_id(row["terminal_ms"], row["terminal_seq"])
                if row["terminal_seq"] and row["terminal_ms"] is not None
                else None
            ),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            ended_at=row["ended_at"],
            awaiting_input_since=row["awaiting_input_since"],
            fork_of=row["fork_source_run_id"],
            deleted=row["deleted"],
        )

    @property
    def terminal_seq(self) -> int | None:
        return self.events_published if self.terminal_event_id else None

    def to_json(self) -> dict[str, Any]:
        """A JSON object: times as ISO 8601 strings."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    ms: int
    #: Its run's readers in other processes were woken by the append's own commit
    #: (``append_events_notifying``): nothing more to send for it.
    notified: bool = False
    #: The creation time of the run's event before it, as the append found it (None: it is
    #: the run's first, or not known): what lets a reader take it without reading it back.
    prev_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """What ``pgbridge_append_batch`` did with one event of a batch."""

    #: Where the event was stored; None when its run refused it.
    appended: Appended | None = None
    #: Why its run refused it: ``terminal`` (the run had, or got earlier in the
    #: batch, its terminal event), ``content_type`` (a non-JSON Durable Stream)
    #: or ``gone`` (a soft-deleted stream forks still read); None when stored.
    refused: str | None = None


def _terminal(rows: Sequence[asyncpg.Record]) -> Appended | None:
    """A terminal_event_of_run answer: the terminal event's seq and time, or None."""
    if not rows:
        return None
    return Appended(seq=rows[0]["terminal_seq"], ms=rows[0]["last_ms"])


class NewEvent(Protocol):
    """One event of an append batch, as the batch function takes it
    (pgbridge.engine.publish.AppendRequest is one)."""

    @property
    def run_id(self) -> str:
        """The run it is appended to."""

    @property
    def event(self) -> str:
        """The event's name."""

    @property
    def data_text(self) -> str:
        """The data as JSON text."""

    @property
    def terminal(self) -> bool:
        """Whether it ends the run."""

    @property
    def status(self) -> str:
        """The run's status after it: ``active``, or a terminal event's state."""


class EventStore:
    """The bridge's reads and writes, one SQL statement each."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.queries = db.queries
        #: Runs this store appended to (their rows exist): see :meth:`_runs_exist_once`.
        self._runs_with_events: dict[str, None] = {}

    async def append_batch(
        self,
        conn: asyncpg.Connection,
        events: Sequence[NewEvent],
        *,
        notify_channel: str | None = None,
        lock_wait: float | None = None,
    ) -> list[AppendOutcome]:
        """Append *events* in one statement on *conn*; one outcome per event, in order.

        On a connection outside a transaction the statement is its own
        transaction; inside one (publish_in: the caller's) it joins it.

        A batch of runs that all exist, one event each, outside a caller's transaction, is
        first tried as ``append_runs_once`` (set-based, all or nothing; a lone publish as
        ``append_one_event``, the same rules in a smaller plan that stores only an event that
        leaves its run's row alone: not a terminal one, nor one in 256); else,
        or when that stored nothing, it goes through the function
        (``append_events`` and its variants). With *notify_channel*, the same statement also
        sends each run's wake-up, carrying its events, on that channel: its readers elsewhere
        are woken by the commit itself (:attr:`Appended.notified`).

        With *lock_wait* (seconds; 0: no bound), a wait for a row lock longer
        than that fails the statement with SQLSTATE 55P03 (asyncpg's
        LockNotAvailableError), having written nothing: the group commit's
        batches (``append_events_lock_bounded``, or ``append_events_notifying``
        given the bound). Without it the statement leaves the session's
        ``lock_timeout`` alone, as it must in a caller's transaction.

        The caller borrows *conn* and gets the driver's exception as it is,
        because what a failure means for the events (not written, or unknown)
        depends on where it happened (pgbridge.engine.publish decides).
        """
        bound = None if lock_wait is None else f"{max(0, round(lock_wait * 1000))}ms"
        arrays = (
            [e.run_id for e in events],
            [e.event for e in events],
            [e.data_text for e in events],
            [e.terminal for e in events],
            [e.status for e in events],
        )
        if not conn.is_in_transaction() and self._worth_trying_once(events, arrays[0]):
            rows = await self._append_runs_once(conn, arrays, bound, notify_channel)
            if rows:
                return _outcomes(rows, len(events), notified=notify_channel is not None)
            # A run in the batch would refuse, is new to the server, or took events while
            # this batch waited for its row: the function's way.
            self.db.statements += 1
        if notify_channel is not None:
            rows = await conn.fetch(self.queries.append_events_notifying, *arrays, notify_channel, bound)
        elif bound is not None:
            rows = await conn.fetch(self.queries.append_events_lock_bounded, *arrays, bound)
        else:
            rows = await conn.fetch(self.queries.append_events, *arrays)
        outcomes = _outcomes(rows, len(events), notified=notify_channel is not None)
        self._remember_runs(events, outcomes)
        return outcomes

    async def _append_runs_once(
        self,
        conn: asyncpg.Connection,
        arrays: tuple[list[str], list[str], list[str], list[bool], list[str]],
        bound: str | None,
        notify_channel: str | None,
    ) -> list[asyncpg.Record]:
        """``append_runs_once``'s rows (``append_one_event``'s for one event); none when the
        batch must go the function's way (for one event: also when it would write its run's row).

        Its heads are read in the statement's snapshot: a batch that committed while this
        one waited for a row lock makes it fail with unique_violation, having written
        nothing (pgbridge/sql/events.sql says why). Only outside a caller's transaction,
        which that failure would abort.
        """
        try:
            if len(arrays[0]) == 1:  # a lone publish: the same rules in a smaller plan
                rows: list[asyncpg.Record] = await conn.fetch(
                    self.queries.append_one_event, *(a[0] for a in arrays), bound, notify_channel
                )
            else:
                rows = await conn.fetch(self.queries.append_runs_once, *arrays, bound, notify_channel)
        except asyncpg.UniqueViolationError:
            return []
        return rows

    def _worth_trying_once(self, events: Sequence[NewEvent], run_ids: list[str]) -> bool:
        """Whether ``append_runs_once`` (or ``append_one_event``) may store *events*: a lone
        terminal event writes its run's row, which ``append_one_event`` leaves to the function."""
        if len(events) == 1 and events[0].terminal:
            return False
        return self._runs_exist_once(run_ids)

    def _runs_exist_once(self, run_ids: list[str]) -> bool:
        """Whether each of *run_ids* appears once and has taken events through this store
        before (so its row exists unless retention or a DELETE removed it since):
        ``append_runs_once`` is then worth trying. A batch with a new run goes straight to the
        function, which creates it, instead of trying and failing first."""
        known = self._runs_with_events
        return all(run_id in known for run_id in run_ids) and len(set(run_ids)) == len(run_ids)

    def _remember_runs(self, events: Sequence[NewEvent], outcomes: list[AppendOutcome]) -> None:
        known = self._runs_with_events
        if len(known) > KNOWN_RUNS_LIMIT:
            known.clear()  # bounded: a forgotten run only costs its next batch the function's way
        for event, outcome in zip(events, outcomes, strict=True):
            if outcome.appended is not None:
                known[event.run_id] = None

    async def terminal_event(self, run_id: str) -> Appended | None:
        """The committed terminal event of *run_id*, if it has one."""
        return _terminal(await self.db.fetch(self.queries.terminal_event_of_run, run_id))

    async def terminal_event_on(self, conn: asyncpg.Connection, run_id: str) -> Appended | None:
        """:meth:`terminal_event` on *conn*: in a caller's transaction, its own terminal event
        counts too. The driver's exception comes as it is (the caller's transaction decides)."""
        return _terminal(await conn.fetch(self.queries.terminal_event_of_run, run_id))

    async def mark_awaiting_input(self, run_id: str) -> None:
        """An open run becomes ``awaiting_input`` (a terminal run is left as it is)."""
        await self.db.fetch(self.queries.mark_awaiting_input, run_id)

    async def retained_range(self, run_id: str, cursor_seq: int) -> RetainedRange:
        """The run's retained seqs and the creation time of event *cursor_seq*."""
        lookup = cursor_seq if 0 <= cursor_seq <= MAX_BIGINT else 0
        rows = await self.db.fetch(self.queries.resolve_cursor, run_id, lookup)
        if not rows:
            return RetainedRange.missing_run()
        row = rows[0]
        if row["fork_seq"] is not None:
            return await self._fork_retained_range(run_id, lookup)
        return RetainedRange(
            first=row["first_seq"],
            last=row["last_seq"],
            stored_ms=row["stored_ms"],
            trimmed_ms=row["trimmed_ms"],
        )

    async def _fork_retained_range(self, run_id: str, lookup: int) -> RetainedRange:
        """A fork's cursor resolves against its stitched view, which spans its chain of
        sources: one more statement, paid only when the run is a fork."""
        rows = await self.db.fetch(self.queries.resolve_fork_cursor, run_id, lookup)
        if not rows:
            return RetainedRange.missing_run()  # deleted between the two reads
        row = rows[0]
        return RetainedRange(
            first=row["oldest_seq"] + 1,
            last=row["last_seq"],
            stored_ms=row["stored_ms"],
            fork_seq=row["fork_seq"],
        )

    async def run_info(self, run_id: str) -> RunInfo | None:
        rows = await self.db.fetch(self.queries.run_summary, run_id)
        if not rows:
            return None
        return await self._as_seen(rows[0])

    async def _as_seen(self, row: asyncpg.Record) -> RunInfo:
        """*row* of a run as every surface shows it: a fork's counts are its stitched view's."""
        if row["fork_seq"] is not None:
            forked = await self.db.fetch(self.queries.fork_run_summary, row["run_id"])
            if forked:
                row = forked[0]
        return RunInfo.from_row(row)

    async def run_heads(self, run_ids: list[str]) -> dict[str, RunState]:
        """Where each of *run_ids* stands (runs that do not exist are left out)."""
        rows = await self.db.fetch(self.queries.run_heads, run_ids)
        return {
            row["run_id"]: RunState(
                exists=True,
                first_seq=row["first_seq"],
                last_seq=row["last_seq"],
                terminal_seq=row["terminal_seq"],
            )
            for row in rows
        }

    async def recent_runs(self, status: str | None, limit: int) -> list[RunInfo]:
        """The *limit* most recently active runs (of *status*, if given), newest first."""
        rows: list[asyncpg.Record] = []
        if status in (None, "active", "awaiting_input"):
            rows += await self.db.fetch(self.queries.recent_open_runs, status, limit)
        if status not in ("active", "awaiting_input"):
            rows += await self.db.fetch(self.queries.recent_ended_runs, status, limit)
        runs = [await self._as_seen(row) for row in rows]  # a statement more only for a fork
        runs.sort(key=lambda run: run.updated_at, reverse=True)
        return runs[:limit]

    async def read_after(self, run_id: str, cursor_seq: int, limit: int) -> Page:
        """Events of *run_id* with seq > *cursor_seq*, at most *limit*, with the run's state."""
        rows = await self.db.fetch(self.queries.read_events_after, run_id, cursor_seq, limit)
        return _page(rows, limit)

    async def read_many_after(self, reads: Sequence[tuple[str, int]], limit: int) -> list[Page]:
        """For each ``(run_id, cursor_seq)`` of *reads* (distinct runs), what :meth:`read_after`
        would give, in one statement; pages in the order of *reads*."""
        rows = await self.db.fetch(
            self.queries.read_runs_events_after,
            [run_id for run_id, _ in reads],
            [cursor for _, cursor in reads],
            limit,
        )
        by_run: list[list[asyncpg.Record]] = [[] for _ in reads]
        for row in rows:
            by_run[row["ord"] - 1].append(row)
        return [_tail_page(run_rows, limit) for run_rows in by_run]

    async def read_inherited_after(self, run_id: str, cursor_seq: int, fork_seq: int, limit: int) -> Page:
        """The events the fork *run_id* inherits (seq <= *fork_seq*, stored in its chain of
        sources) after *cursor_seq*, at most *limit*, with its stitched view's state.

        The state's retained range is the stitched view's (so a cursor before
        what retention took from the chain before the fork existed gets the
        usual gap marker) and its terminal seq is the fork's. Inherited events
        are never terminal: a source's terminal event ended the source, not
        the fork, whose own events follow it. A run that is not (or no
        longer) this fork reads as missing. ``truncated`` is set whenever the
        subscriber should read again at once: more inherited events, or the
        fork's own events next.
        """
        rows = await self.db.fetch(self.queries.read_inherited_events_after, run_id, cursor_seq, limit)
        if not rows or rows[0]["fork_seq"] != fork_seq:
            return Page(state=RunState())
        head = rows[0]
        state = RunState(
            exists=True,
            first_seq=head["oldest_seq"] + 1,
            first_ms=head["first_ms"],
            last_seq=head["last_seq"],
            last_ms=head["last_ms"],
            terminal_seq=head["terminal_seq"],
        )
        events = [
            LoggedEvent.from_stored(row["seq"], row["created_ms"], row["event"], row["data"], False)
            for row in rows
            if row["seq"] is not None
        ]
        return Page(state=state, events=events, truncated=bool(events) or head["oldest_seq"] >= fork_seq)


def _outcomes(rows: Sequence[asyncpg.Record], count: int, *, notified: bool) -> list[AppendOutcome]:
    """One outcome per event, in place order, from an append statement's rows (ord, seq,
    created_ms, prev_ms, refused, and notified when *notified*)."""
    outcomes = [AppendOutcome()] * count
    for row in rows:
        stored = (
            Appended(
                seq=row["seq"],
                ms=row["created_ms"],
                notified=notified and row["notified"],
                prev_ms=row["prev_ms"],
            )
            if row["seq"] is not None
            else None
        )
        outcomes[row["ord"] - 1] = AppendOutcome(stored, None if stored else row["refused"])
    return outcomes


def _tail_page(rows: Sequence[asyncpg.Record], limit: int) -> Page:
    """One run's page of ``read_runs_events_after``.

    Its first row is the cursor's own event when that is stored (its creation time is the
    page's ``after_ms``; it is not part of the page). The rows carry the run row's head as it
    is (appends leave it behind the run's newest event, revision 0012), not the newest event:
    the page shows that instead. Its seqs are gapless over the range it scanned, so a page that
    is not full ends at the run's newest event; an empty one means the event at the cursor is
    the newest (when it is stored: else the row is exact, a run retention emptied, or the run
    holds fewer events than the cursor). A full page's last event is a lower bound, and the page
    says it is cut (``truncated``): its reader reads again at once.
    """
    if not rows:
        return Page(state=RunState())
    head = rows[0]
    after_seq = head["after_seq"]
    after_ms: int | None = None
    if head["seq"] == after_seq:
        after_ms = head["created_ms"]
        events = rows[1:]
    else:
        events = rows if head["seq"] is not None else []
    last_seq, last_ms = head["row_last_seq"], head["row_last_ms"]
    if events:
        newest = events[-1]
        if newest["seq"] > last_seq:
            last_seq, last_ms = newest["seq"], newest["created_ms"]
    elif after_ms is not None and after_seq > last_seq:
        last_seq, last_ms = after_seq, after_ms
    state = RunState(
        exists=True,
        first_seq=head["first_seq"],
        first_ms=head["first_ms"],
        last_seq=last_seq,
        last_ms=last_ms,
        terminal_seq=head["terminal_seq"],
    )
    if not events:
        return Page(state=state, after_ms=after_ms)
    return Page(state=state, rows=StoredRows(events), truncated=len(events) >= limit, after_ms=after_ms)


def _page(rows: Sequence[asyncpg.Record], limit: int) -> Page:
    """One run's page from the rows of ``read_events_after``: the run's state from the first
    row, then its events (``read_runs_events_after``'s rows: :func:`_tail_page`)."""
    if not rows:
        return Page(state=RunState())
    head = rows[0]
    state = RunState(
        exists=True,
        first_seq=head["first_seq"],
        first_ms=head["first_ms"],
        last_seq=head["last_seq"],
        last_ms=head["last_ms"],
        terminal_seq=head["terminal_seq"],
    )
    after_ms: int | None = head["after_ms"]
    if head["seq"] is None:
        return Page(state=state, after_ms=after_ms)  # the one row of a run with nothing after the cursor
    return Page(state=state, rows=StoredRows(rows), truncated=len(rows) >= limit, after_ms=after_ms)
