"""Durable Streams on the bridge's tables: create, append, close, delete, read, wait.

A Durable Stream *is* a run: the stream at path ``p`` is the run ``p`` in
run_streams/run_events, so it is visible to the same SQL, the same CLI, the
same retention and the same audit chain as any run. Each message is one
event (:mod:`pgbridge.durable_streams.messages`); an offset is the seq of the last
event read (:mod:`pgbridge.durable_streams.offsets`). Closing a stream ends its run
without writing an event (status ``ended``, ``terminal_seq = last_seq``).

A fork (revision 0007, :mod:`pgbridge.durable_streams.forks`) is a run that reads
its source's events up to its fork point and then its own; none is copied.
A run that forks read is never trimmed by retention, and deleting it only
soft-deletes it until its last fork goes. An expired stream is gone for
every request here; the retention pass sweeps it as a DELETE would
(revision 0008), and a bridge publish to it deletes it and starts the run anew.

This is protocol-independent engine code: the HTTP surface
(:mod:`pgbridge.durable_streams.http`) translates its results into status
codes and headers. Appends and closes go through ``pgbridge_stream_append``
(revision 0006), which checks producers, closure, content type and
``Stream-Seq`` under the run row's lock and appends through the one append
function. After a commit, readers here and in every other process are
woken through the bridge's feeds and its NOTIFY path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import asyncpg

from pgbridge.connector import Database, is_connection_error
from pgbridge.durable_streams.forks import ForkRequest, fork_point, inherited_expiry
from pgbridge.durable_streams.messages import (
    JSON_TYPE,
    MESSAGE_EVENT,
    is_json,
    json_array_of_joined,
    stored_bytes,
)
from pgbridge.engine.feed import FeedRegistry, Waiter
from pgbridge.engine.notify import Notifier
from pgbridge.exceptions import (
    DatabaseUnavailableError,
    ForkConflictError,
    ForkOffsetError,
    ForkPositionError,
    ForkSourceNotFoundError,
    StreamBridgeError,
    StreamExistsError,
)

AppendOutcomeKind = Literal[
    "appended",
    "closed_now",
    "duplicate",
    "already_closed",
    "closed",
    "not_found",
    "stale_epoch",
    "gap",
    "bad_epoch_seq",
    "content_type",
    "stream_seq",
    "gone",
]
DeleteOutcome = Literal["deleted", "not_found", "gone"]


@dataclass(frozen=True, slots=True)
class Producer:
    """An idempotent producer's identity and the sequence number of one request.

    A producer bumps ``epoch`` when it restarts (and starts ``seq`` at 0
    again); within an epoch, ``seq`` goes up by one per request. A request
    whose ``(id, epoch, seq)`` was already stored is stored once.
    """

    id: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What a create asks for; compared with an existing stream for idempotent PUTs."""

    content_type: str
    ttl_seconds: int | None = None
    expires_at: datetime | None = None
    closed: bool = False


@dataclass(frozen=True, slots=True)
class StreamHead:
    """Where a stream stands."""

    run_id: str
    #: The stored content type; None for a run born from publish (a JSON stream of envelopes).
    stored_content_type: str | None
    first_seq: int
    last_seq: int
    closed: bool
    ttl_seconds: int | None
    expires_at: datetime | None
    #: Creation time in microseconds: tells this life of the path from earlier ones (ETags).
    created_us: int
    #: A fork's source run, the offset seq and sub-offset its PUT asked for, and its
    #: fork point (the source's events up to it are the fork's); all None for no fork.
    fork_source_run_id: str | None = None
    fork_offset_seq: int | None = None
    fork_sub_offset: int | None = None
    fork_seq: int | None = None
    #: Live forks reading this stream's events.
    fork_refs: int = 0
    #: Deleted while forks still read it: its URL answers 410.
    soft_deleted: bool = False

    @property
    def content_type(self) -> str:
        return self.stored_content_type or "application/json"

    @property
    def envelopes(self) -> bool:
        """Whether messages are the events' envelopes (a run born from publish)."""
        return self.stored_content_type is None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StreamHead:
        return cls(
            run_id=row["run_id"],
            stored_content_type=row["content_type"],
            first_seq=row["first_seq"],
            last_seq=row["last_seq"],
            closed=row["terminal_seq"] is not None,
            ttl_seconds=row["stream_ttl_seconds"],
            expires_at=row["stream_expires_at"],
            created_us=row["created_us"],
            fork_source_run_id=row["fork_source_run_id"],
            fork_offset_seq=row["fork_offset_seq"],
            fork_sub_offset=row["fork_sub_offset"],
            fork_seq=row["fork_seq"],
            fork_refs=row["fork_refs"],
            soft_deleted=row["soft_deleted"],
        )

    def matches(self, config: StreamConfig, fork: tuple[str, int, int] | None = None) -> bool:
        """Whether a create of *config* (a fork's: source run, offset seq, sub-offset) is this stream's."""
        mine = None
        if self.fork_source_run_id is not None:
            mine = (self.fork_source_run_id, self.fork_offset_seq, self.fork_sub_offset)
        return (
            self.content_type == config.content_type
            and self.ttl_seconds == config.ttl_seconds
            and self.expires_at == config.expires_at
            and self.closed == config.closed
            and mine == fork
        )


@dataclass(frozen=True, slots=True)
class StreamPage:
    """A read as the protocol sends it: the messages after an offset, rendered into one body.

    PostgreSQL renders it (``read_stream_page``), so a catch-up of thousands
    of messages costs Python one row, not one object per message.
    """

    head: StreamHead
    #: The messages' body: a JSON array for a JSON stream, else their bytes, concatenated.
    body: bytes
    #: Messages in the body.
    count: int
    #: The seq of the body's last message (the offset read after, when it is empty).
    next_seq: int
    #: The oldest offset a read may start from: retention deleted the events
    #: before it (for a fork: of its own, or of a source before the fork).
    oldest_seq: int = 0

    @property
    def up_to_date(self) -> bool:
        """Nothing follows the body's last message: seqs are gapless up to the head's last."""
        return self.next_seq >= self.head.last_seq


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """What ``pgbridge_stream_append`` decided, and where the stream stands after it."""

    kind: AppendOutcomeKind
    last_seq: int | None = None
    last_ms: int | None = None
    closed: bool = False
    producer_epoch: int | None = None
    producer_seq: int | None = None
    #: The event a producer request stored (for a duplicate: its first delivery's).
    event_seq: int | None = None
    event_ms: int | None = None


def _outcome(row: asyncpg.Record) -> AppendOutcome:
    return AppendOutcome(
        kind=row["outcome"],
        last_seq=row["last_seq"],
        last_ms=row["last_ms"],
        closed=row["closed"],
        producer_epoch=row["producer_epoch"],
        producer_seq=row["producer_seq"],
        event_seq=row["event_seq"],
        event_ms=row["event_ms"],
    )


@dataclass(frozen=True, slots=True)
class _AppendRequest:
    """One protocol append (or close), as the caller asked for it."""

    run_id: str
    content_type: str | None
    events: Sequence[tuple[str, str]]
    close: bool
    stream_seq: str | None
    producer: Producer | None


@dataclass(slots=True)
class _Waiting:
    request: _AppendRequest
    answer: asyncio.Future[AppendOutcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _AppendBatcher:
    """Group commit for protocol appends, as :mod:`pgbridge.engine.publish` does for publishes.

    An append that finds no batch in flight is sent at once, alone; appends
    that arrive while ``max_in_flight`` batches are running wait for the next
    batch, which is one statement and one commit for all of them. Each
    request is still checked on its own (producer, closure, content type,
    Stream-Seq) by ``pgbridge_stream_append`` under its run row's lock, in
    arrival order within a run (runs are taken in a fixed order, so two
    batches never wait on each other's row locks), and gets its own outcome.
    A batch the server refuses (not a lost connection) is sent again one
    request per transaction, so one bad request fails alone. Callers are
    answered after the commit.
    """

    def __init__(
        self,
        send_many: Callable[[Sequence[_AppendRequest]], Awaitable[list[AppendOutcome]]],
        send_alone: Callable[[_AppendRequest], Awaitable[AppendOutcome]],
        *,
        max_in_flight: int,
        max_batch_size: int = 500,
    ) -> None:
        self._send_many = send_many
        self._send_alone = send_alone
        self._max_in_flight = max(1, max_in_flight)
        self._max_batch_size = max_batch_size
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._flushes: set[asyncio.Task[None]] = set()
        self._scheduled = False
        #: Batches sent and requests they carried (for tests).
        self.batches = 0
        self.requests = 0

    async def append(self, request: _AppendRequest) -> AppendOutcome:
        waiting = _Waiting(request)
        self._queue.append(waiting)
        if not self._scheduled:
            # Send on the loop's next turn, not now: every append that arrives in
            # this turn (all the callers a finished batch just woke, all the requests
            # read from the sockets together) joins one batch instead of each taking
            # a free slot alone.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flushes)
        return await waiting.answer

    def _start_flushes(self) -> None:
        self._scheduled = False
        while self._queue and len(self._flushes) < self._max_in_flight:
            # What is queued, shared out over the free slots: the batches run side
            # by side on as many connections (and server cores) as there are slots.
            free = self._max_in_flight - len(self._flushes)
            size = min(-(-len(self._queue) // free), self._max_batch_size)
            batch = [self._queue.popleft() for _ in range(size)]
            task = asyncio.create_task(self._flush(batch), name="pgbridge-stream-append-batch")
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._start_flushes()

    async def _flush(self, batch: list[_Waiting]) -> None:
        batch.sort(key=lambda waiting: waiting.request.run_id)  # stable: arrival order within a run
        self.batches += 1
        self.requests += len(batch)
        try:
            # One statement, committed on its own: one round trip, even for a lone append.
            outcomes = await self._send_many([waiting.request for waiting in batch])
        except Exception as exc:
            if len(batch) == 1 or is_connection_error(exc) or isinstance(exc, DatabaseUnavailableError):
                failure: Exception = exc
                if is_connection_error(exc):
                    failure = DatabaseUnavailableError(f"lost the connection to PostgreSQL: {exc}")
                elif not isinstance(exc, StreamBridgeError):
                    failure = StreamBridgeError(f"a Durable Streams operation failed: {exc}")
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(failure)
                return
            # Nothing was committed: each request again, alone, for its own answer.
            for waiting in batch:
                try:
                    outcome = await self._send_alone(waiting.request)
                except Exception as alone:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(alone)
                else:
                    if not waiting.answer.done():
                        waiting.answer.set_result(outcome)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if not waiting.answer.done():  # a caller that went away no longer waits
                waiting.answer.set_result(outcome)

    async def close(self) -> None:
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)


class DurableStreams:
    """The store operations of Durable Streams, on one bridge's pool, feeds and notifier."""

    def __init__(
        self,
        db: Database,
        feeds: FeedRegistry,
        notifier: Notifier,
        *,
        require_running: Callable[[], None],
        appends_in_flight: int = 4,
    ) -> None:
        self._db = db
        self._q = db.queries.streams
        self._feeds = feeds
        self._notifier = notifier
        self._require_running = require_running
        self._batcher = _AppendBatcher(self._append_many, self._append_alone, max_in_flight=appends_in_flight)

    # -- writes ---------------------------------------------------------------

    async def create(
        self, run_id: str, config: StreamConfig, events: Sequence[tuple[str, str]] = ()
    ) -> tuple[bool, StreamHead]:
        """Create the stream, or confirm an existing one with the same configuration.

        Returns ``(created, head)``. An existing stream configured otherwise
        raises :class:`StreamExistsError`; an expired one is deleted and
        created anew. *events* (name, data text) are its initial content.
        """
        self._require_running()
        async with self._transaction() as conn:
            while True:
                inserted = await conn.fetchval(
                    self._q.create_stream, run_id, config.content_type, config.ttl_seconds, config.expires_at
                )
                if inserted is not None:
                    break
                row = await conn.fetchrow(self._q.lock_stream, run_id)
                if row is None:
                    continue  # deleted meanwhile: insert again
                head = await self._existing(conn, row)
                if head is None:
                    continue
                if not head.matches(config):
                    raise StreamExistsError(f"stream {run_id!r} exists with another configuration")
                return False, head
            if events or config.closed:
                await self._append_in(conn, run_id, None, events, close=config.closed)
            row = await conn.fetchrow(self._q.stream_head, run_id)
        head = StreamHead.from_row(row)
        self._wake(run_id, head.last_seq if events else None)
        return True, head

    async def create_fork(
        self, run_id: str, config: StreamConfig, fork: ForkRequest, events: Sequence[tuple[str, str]] = ()
    ) -> tuple[bool, StreamHead]:
        """Create the fork *run_id* of ``fork.source_run_id``, or confirm the same fork.

        *config* carries the fork's content type (its source's, checked here
        under the source's lock) and the TTL or expiry it asked for (none:
        the source's). Returns ``(created, head)``. Raises
        :class:`ForkSourceNotFoundError`, :class:`ForkConflictError`,
        :class:`ForkPositionError` or :class:`StreamExistsError`; nothing is
        stored then. *events* follow the inherited data (and a binary
        sub-offset's part of a message, the fork's first own event).
        """
        self._require_running()
        source_id = fork.source_run_id
        async with self._transaction() as conn:
            row = await conn.fetchrow(self._q.lock_stream, source_id)
            if row is None or row["expired"]:
                raise ForkSourceNotFoundError(f"no stream {source_id!r} to fork")
            source = StreamHead.from_row(row)
            if source.soft_deleted:
                raise ForkConflictError(f"stream {source_id!r} was deleted (its forks still read it)")
            if config.content_type != source.content_type:
                raise ForkConflictError(f"the source stream's Content-Type is {source.content_type}")
            anchor = source.last_seq if fork.offset_seq is None else fork.offset_seq
            rows = await conn.fetch(self._q.read_stream, source_id, min(anchor, source.last_seq), 1)
            if anchor < rows[0]["oldest_seq"]:
                raise ForkPositionError("the data at Stream-Fork-Offset was deleted by retention")
            next_message = None
            if fork.sub_offset and not is_json(source.stored_content_type) and rows[0]["seq"] is not None:
                next_message = rows[0]["data"]
            try:
                point = fork_point(
                    anchor, fork.sub_offset, source.last_seq, source.stored_content_type, next_message
                )
            except ForkOffsetError as exc:
                raise ForkPositionError(str(exc)) from None
            ttl, expires_at = inherited_expiry(
                config.ttl_seconds, config.expires_at, source.ttl_seconds, source.expires_at
            )
            wanted = StreamConfig(source.content_type, ttl, expires_at, config.closed)
            identity = (source_id, anchor, fork.sub_offset)
            while True:
                inserted = await conn.fetchval(
                    self._q.create_fork,
                    run_id,
                    source.stored_content_type,
                    ttl,
                    expires_at,
                    source_id,
                    anchor,
                    fork.sub_offset,
                    point.fork_seq,
                )
                if inserted is not None:
                    break
                row = await conn.fetchrow(self._q.lock_stream, run_id)
                if row is None:
                    continue
                head = await self._existing(conn, row)
                if head is None:
                    continue
                if not head.matches(wanted, identity):
                    raise StreamExistsError(f"stream {run_id!r} exists with another configuration")
                return False, head
            await conn.execute(self._q.add_fork_ref, source_id)
            if point.prefix is not None:
                await self._append_in(conn, run_id, None, [(MESSAGE_EVENT, point.prefix)], close=False)
            if events or config.closed:
                await self._append_in(conn, run_id, None, events, close=config.closed)
            row = await conn.fetchrow(self._q.stream_head, run_id)
        head = StreamHead.from_row(row)
        self._wake(run_id, head.last_seq if events or point.prefix else None)
        return True, head

    async def _existing(self, conn: asyncpg.Connection, row: asyncpg.Record) -> StreamHead | None:
        """The stream a create found at its path (locked); None once an expired one is deleted.

        A soft-deleted stream, or an expired one that forks still read
        (soft-deleted now), keeps its path: :class:`StreamExistsError`.
        """
        head = StreamHead.from_row(row)
        if row["expired"] and not head.soft_deleted and head.fork_refs == 0:
            await self._delete_locked(conn, head)
            return None
        if row["expired"] and not head.soft_deleted:
            await conn.execute(self._q.soft_delete_stream, head.run_id)
        if head.soft_deleted or row["expired"]:
            raise StreamExistsError(f"stream {head.run_id!r} was deleted and its forks still read it")
        return head

    async def append(
        self,
        run_id: str,
        content_type: str | None,
        events: Sequence[tuple[str, str]],
        *,
        close: bool = False,
        stream_seq: str | None = None,
        producer: Producer | None = None,
        create_run: bool = False,
    ) -> AppendOutcome:
        """Append *events* (name, data text) atomically, and close the stream if *close*.

        *content_type* (None: no check) must be the stream's when events are
        given. *create_run* makes a missing run first (a Python publish).
        Nothing is written unless the outcome is ``appended`` or ``closed_now``.
        """
        self._require_running()
        request = _AppendRequest(run_id, content_type, events, close, stream_seq, producer)
        if create_run:
            outcome = await self._append_alone(request, create_run=True)
        else:
            outcome = await self._batcher.append(request)
        if outcome.kind == "appended":
            self._wake(run_id, None if close else outcome.last_seq)
        elif outcome.kind == "closed_now":
            self._wake(run_id, None)
        return outcome

    async def _append_alone(self, request: _AppendRequest, *, create_run: bool = False) -> AppendOutcome:
        """One append in a transaction of its own."""
        async with self._transaction() as conn:
            if create_run:
                await self._remove_if_expired(conn, request.run_id)
                await conn.execute(self._q.ensure_run, request.run_id)
            return await self._append_in(
                conn,
                request.run_id,
                request.content_type,
                request.events,
                close=request.close,
                stream_seq=request.stream_seq,
                producer=request.producer,
            )

    async def _remove_if_expired(self, conn: asyncpg.Connection, run_id: str) -> None:
        """Before a publish that creates its run: an expired stream there is gone, so remove
        it as a DELETE would (the publish then starts the run anew, as a PUT does), or
        soft-delete it while forks read it (the append then answers ``gone``)."""
        row = await conn.fetchrow(self._q.lock_stream, run_id)
        if row is None or not row["expired"] or row["soft_deleted"]:
            return
        head = StreamHead.from_row(row)
        if head.fork_refs > 0:
            await conn.execute(self._q.soft_delete_stream, run_id)
        else:
            await self._delete_locked(conn, head)

    async def _append_many(self, requests: Sequence[_AppendRequest]) -> list[AppendOutcome]:
        """*requests* in one statement (one transaction), in order; an outcome for each."""
        first: list[int] = []
        last: list[int] = []
        names: list[str] = []
        texts: list[str] = []
        for request in requests:
            first.append(len(names) + 1)
            names.extend(name for name, _ in request.events)
            texts.extend(text for _, text in request.events)
            last.append(len(names))
        async with self._db.connection() as conn:
            self._db.statements += 1
            rows = await conn.fetch(
                self._q.stream_append_many,
                [r.run_id for r in requests],
                [r.content_type for r in requests],
                first,
                last,
                [r.close for r in requests],
                [r.stream_seq for r in requests],
                [r.producer.id if r.producer else None for r in requests],
                [r.producer.epoch if r.producer else None for r in requests],
                [r.producer.seq if r.producer else None for r in requests],
                names,
                texts,
            )
        if len(rows) != len(requests):
            raise StreamBridgeError(f"a batch of {len(requests)} appends answered {len(rows)} rows")
        return [_outcome(row) for row in rows]

    async def delete(self, run_id: str) -> DeleteOutcome:
        """Delete the stream and its events (through the retention trim).

        A stream that forks still read is soft-deleted instead: its events
        stay for them, and its path answers ``gone`` until its last fork
        goes. ``not_found`` when there is no stream (or it expired).
        """
        self._require_running()
        async with self._transaction() as conn:
            row = await conn.fetchrow(self._q.lock_stream, run_id)
            if row is None:
                return "not_found"
            head = StreamHead.from_row(row)
            if head.soft_deleted:
                return "gone"
            if head.fork_refs > 0:
                await conn.execute(self._q.soft_delete_stream, run_id)
            else:
                await self._delete_locked(conn, head)
            outcome: DeleteOutcome = "not_found" if row["expired"] else "deleted"
        self._wake(run_id, None)
        return outcome

    async def _delete_locked(self, conn: asyncpg.Connection, head: StreamHead) -> None:
        """Delete a stream no fork reads; then, if it was a fork, release its source,
        which goes too when it was soft-deleted and this was its last fork (up the chain).

        ``pgbridge_delete_stream`` (revision 0008) does it, the one implementation
        shared with a publish to an expired stream and the retention sweep.
        """
        await conn.fetch(self._q.delete_stream, head.run_id)

    async def _append_in(
        self,
        conn: asyncpg.Connection,
        run_id: str,
        content_type: str | None,
        events: Sequence[tuple[str, str]],
        *,
        close: bool,
        stream_seq: str | None = None,
        producer: Producer | None = None,
    ) -> AppendOutcome:
        row = await conn.fetchrow(
            self._q.stream_append,
            run_id,
            content_type,
            [name for name, _ in events],
            [text for _, text in events],
            close,
            stream_seq,
            producer.id if producer else None,
            producer.epoch if producer else None,
            producer.seq if producer else None,
        )
        assert row is not None
        return _outcome(row)

    # -- reads ----------------------------------------------------------------

    async def head(self, run_id: str) -> StreamHead | None:
        """The stream's state; None when there is none (or it expired)."""
        self._require_running()
        rows = await self._db.fetch(self._q.stream_head, run_id)
        if not rows or (rows[0]["expired"] and not rows[0]["soft_deleted"]):
            return None
        return StreamHead.from_row(rows[0])

    async def read_page(
        self, run_id: str, after_seq: int, *, max_messages: int, max_bytes: int
    ) -> StreamPage | None:
        """The messages after *after_seq* as one body: at most *max_messages*, and no more
        than *max_bytes* of message data (one message always); None when there is no
        stream (or it expired, or was soft-deleted: :meth:`head` tells those apart).

        The read of every protocol GET (catch-up, long-poll, SSE). A fork's
        read gives its sources' events up to its fork point, then its own. A
        read resets the stream's sliding TTL.
        """
        self._require_running()
        rows = await self._db.fetch(
            self._q.read_stream_page, run_id, after_seq, max_messages, max_bytes, JSON_TYPE
        )
        if not rows or rows[0]["expired"] or rows[0]["soft_deleted"]:
            return None
        row = rows[0]
        head = StreamHead.from_row(row)
        if is_json(head.stored_content_type):
            body = json_array_of_joined(row["json_messages"] or "")
        else:
            body = b"".join(stored_bytes(text) for text in row["byte_messages"] or ())
        if head.ttl_seconds is not None:
            await self._db.fetch(self._q.touch_stream, run_id)
        taken: int = row["taken"]
        return StreamPage(
            head=head,
            body=body,
            count=taken,
            next_seq=row["page_last_seq"] if taken else after_seq,
            oldest_seq=row["oldest_seq"],
        )

    @contextlib.asynccontextmanager
    async def watch(self, run_id: str, after_seq: int) -> AsyncIterator[Waiter]:
        """A waiter set whenever the stream may have moved past *after_seq* (any process).

        Clear it before each read and wait on it after, as subscribers do:
        the run's shared feed is followed from here on, so bridge publishes,
        protocol appends and closes, here or elsewhere, all set it.
        """
        self._require_running()
        feed, waiter = self._feeds.attach(run_id)
        try:
            await feed.read_after(after_seq)
            yield waiter
        finally:
            self._feeds.detach(feed, waiter)

    # -- plumbing -------------------------------------------------------------

    def _wake(self, run_id: str, seq: int | None) -> None:
        """After commit: readers in this process now, in others by NOTIFY."""
        self._feeds.wake(run_id, seq)
        self._notifier.notify(run_id, seq)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._db.connection() as conn:
            self._db.statements += 1
            try:
                async with conn.transaction():
                    yield conn
            except StreamBridgeError:
                raise
            except Exception as exc:
                if is_connection_error(exc) or isinstance(exc, OSError):
                    raise DatabaseUnavailableError(f"lost the connection to PostgreSQL: {exc}") from exc
                raise StreamBridgeError(f"a Durable Streams operation failed: {exc}") from exc
