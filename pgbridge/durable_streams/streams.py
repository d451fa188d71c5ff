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

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Literal

import asyncpg

from pgbridge.connector import Database, is_connection_error
from pgbridge.durable_streams.forks import ForkRequest, fork_point, inherited_expiry
from pgbridge.durable_streams.messages import MESSAGE_EVENT, is_json
from pgbridge.durable_streams.offsets import names_another_event
from pgbridge.engine.feed import FeedRegistry, Waiter
from pgbridge.engine.group_commit import GroupCommit
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
from pgbridge.store.streams import (
    AppendOutcome,
    AppendOutcomeKind,
    DeletionPath,
    Producer,
    StreamAppend,
    StreamConfig,
    StreamHead,
    StreamPage,
    StreamStore,
)

#: The stream types are the store's (:mod:`pgbridge.store.streams` maps rows to them);
#: callers and the HTTP surface take them from here, with the operations.
__all__ = [
    "AppendOutcome",
    "AppendOutcomeKind",
    "DeleteOutcome",
    "DeletionPath",
    "DurableStreams",
    "ForkConflictError",
    "ForkPositionError",
    "ForkSourceNotFoundError",
    "Producer",
    "StreamConfig",
    "StreamExistsError",
    "StreamHead",
    "StreamPage",
]

#: ``published``: a run published through the bridge, refused (``allow_published=False``).
DeleteOutcome = Literal["deleted", "not_found", "gone", "published"]


def _same(request: StreamAppend, outcome: AppendOutcome) -> AppendOutcome:
    """A batched append's answer is its own outcome, as ``pgbridge_stream_append`` decided it."""
    return outcome


def _operation_error(exc: Exception) -> StreamBridgeError:
    """What the caller of a failed Durable Streams operation is told."""
    if isinstance(exc, StreamBridgeError):
        return exc
    if is_connection_error(exc):
        return DatabaseUnavailableError(f"lost the connection to PostgreSQL: {exc}")
    return StreamBridgeError(f"a Durable Streams operation failed: {exc}")


class DurableStreams:
    """The operations of Durable Streams, on one bridge's pool, feeds and notifier.

    Its statements run through :class:`~pgbridge.store.streams.StreamStore`;
    appends share batches through the group commit of
    :mod:`pgbridge.engine.group_commit`, as publishes do. An append that
    finds no batch in flight is sent at once, alone; appends that arrive
    while batches are running wait for the next batch, one statement and one
    commit for all of them. Each request is still checked on its own
    (producer, closure, content type, Stream-Seq) by ``pgbridge_stream_append``
    under its run row's lock, in arrival order within a run (runs are taken in
    a fixed order, so two batches never wait on each other's row locks), and
    gets its own outcome. A batch the server refuses (not a lost connection)
    is sent again one request per transaction, so one bad request fails alone.
    Callers are answered after the commit.
    """

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
        self._store = StreamStore(db, appends_in_flight=appends_in_flight)
        self._feeds = feeds
        self._notifier = notifier
        self._require_running = require_running
        self._batcher: GroupCommit[StreamAppend, AppendOutcome, AppendOutcome] = GroupCommit(
            self._store.append_many,
            _same,
            name="pgbridge-stream-append-batch",
            max_in_flight=appends_in_flight,
            max_batch_size=500,
            share_out=True,
            lock_order=lambda request: request.run_id,
            next_turn=True,
            send_alone=self._append_alone,
            failed=lambda requests, exc: _operation_error(exc),
        )

    async def shutdown(self) -> None:
        """Wait for the append batches in flight, then give back the connections they kept
        (the bridge's close, before its pool closes; not a stream's close, which is an append)."""
        await self._batcher.close()
        await self._store.close()

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
                if await self._store.insert(conn, run_id, config):
                    break
                head = await self._existing(conn, run_id)
                if head is None:
                    continue  # deleted meanwhile, or expired and deleted now: insert again
                if not head.matches(config):
                    raise StreamExistsError(f"stream {run_id!r} exists with another configuration")
                return False, head
            if events or config.closed:
                await self._store.append(conn, StreamAppend(run_id, None, events, close=config.closed))
            head = await self._store.current_head(conn, run_id)
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
            locked = await self._store.lock(conn, source_id)
            if locked is None or locked.expired:
                raise ForkSourceNotFoundError(f"no stream {source_id!r} to fork")
            source = locked.head
            if source.soft_deleted:
                raise ForkConflictError(f"stream {source_id!r} was deleted (its forks still read it)")
            if config.content_type != source.content_type:
                raise ForkConflictError(f"the source stream's Content-Type is {source.content_type}")
            anchor = source.last_seq if fork.offset_seq is None else fork.offset_seq
            position = await self._store.source_position(conn, source_id, min(anchor, source.last_seq))
            if anchor < position.oldest_seq:
                raise ForkPositionError("the data at Stream-Fork-Offset was deleted by retention")
            if fork.offset_seq is not None and names_another_event(fork.offset_ms, position.at_ms):
                raise ForkPositionError(
                    "Stream-Fork-Offset names an event this stream does not hold "
                    "(of a history a failover lost, or of an earlier stream at this path)"
                )
            next_message = None
            if fork.sub_offset and not is_json(source.stored_content_type):
                next_message = position.next_message
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
                inserted = await self._store.insert_fork(
                    conn,
                    run_id,
                    source,
                    ttl_seconds=ttl,
                    expires_at=expires_at,
                    offset_seq=anchor,
                    sub_offset=fork.sub_offset,
                    fork_seq=point.fork_seq,
                )
                if inserted:
                    break
                head = await self._existing(conn, run_id)
                if head is None:
                    continue
                if not head.matches(wanted, identity):
                    raise StreamExistsError(f"stream {run_id!r} exists with another configuration")
                return False, head
            await self._store.add_fork_ref(conn, source_id)
            if point.prefix is not None:
                await self._store.append(conn, StreamAppend(run_id, None, [(MESSAGE_EVENT, point.prefix)]))
            if events or config.closed:
                await self._store.append(conn, StreamAppend(run_id, None, events, close=config.closed))
            head = await self._store.current_head(conn, run_id)
        self._wake(run_id, head.last_seq if events or point.prefix else None)
        return True, head

    async def _existing(self, conn: asyncpg.Connection, run_id: str) -> StreamHead | None:
        """The stream a create found at its path, locked; None when there is none now (deleted
        meanwhile, or an expired one deleted here).

        A soft-deleted stream, or an expired one that forks still read
        (soft-deleted now), keeps its path: :class:`StreamExistsError`.
        """
        locked = await self._store.lock(conn, run_id)
        if locked is None:
            return None
        head = locked.head
        if locked.expired and not head.soft_deleted and head.fork_refs == 0:
            await self._store.delete(conn, run_id, "expiry")
            return None
        if locked.expired and not head.soft_deleted:
            await self._store.soft_delete(conn, run_id)
        if head.soft_deleted or locked.expired:
            raise StreamExistsError(f"stream {run_id!r} was deleted and its forks still read it")
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
        request = StreamAppend(run_id, content_type, events, close, stream_seq, producer)
        if create_run:
            outcome = await self._append_alone(request, create_run=True)
        else:
            outcome = await self._batcher.submit(request)
        if outcome.kind == "appended":
            self._wake(run_id, None if close else outcome.last_seq)
        elif outcome.kind == "closed_now":
            self._wake(run_id, None)
        return outcome

    async def _append_alone(self, request: StreamAppend, *, create_run: bool = False) -> AppendOutcome:
        """One append in a transaction of its own."""
        async with self._transaction() as conn:
            if create_run:
                await self._remove_if_expired(conn, request.run_id)
                await self._store.ensure_run(conn, request.run_id)
            return await self._store.append(conn, request)

    async def _remove_if_expired(self, conn: asyncpg.Connection, run_id: str) -> None:
        """Before a publish that creates its run: an expired stream there is gone, so remove
        it as a DELETE would (the publish then starts the run anew, as a PUT does), or
        soft-delete it while forks read it (the append then answers ``gone``)."""
        locked = await self._store.lock(conn, run_id)
        if locked is None or not locked.expired or locked.head.soft_deleted:
            return
        if locked.head.fork_refs > 0:
            await self._store.soft_delete(conn, run_id)
        else:
            await self._store.delete(conn, run_id, "expiry")

    async def delete(
        self, run_id: str, *, allow_published: bool = True, via: DeletionPath = "api"
    ) -> DeleteOutcome:
        """Delete the stream and its events (through the retention trim).

        A stream that forks still read is soft-deleted instead: its events
        stay for them, and its path answers ``gone`` until its last fork
        goes. ``not_found`` when there is no stream (or it expired). A run
        published through the bridge (not created by a PUT, nor a fork) is
        audit history: unless *allow_published*, nothing changes and the
        outcome is ``published``, decided under the run row's lock.

        A stream no fork reads goes through ``pgbridge_delete_stream`` (revision
        0009), the one implementation shared with a publish to an expired stream
        and the retention sweep: it records the deletion in ``run_deletions``
        (with *via*: ``http`` for a protocol DELETE, ``api`` for a call from
        Python) in the same transaction; if it was a fork, its source is
        released, and goes too when it was soft-deleted and this was its last
        fork (up the chain).
        """
        self._require_running()
        async with self._transaction() as conn:
            locked = await self._store.lock(conn, run_id)
            if locked is None:
                return "not_found"
            if locked.head.soft_deleted:
                return "gone"
            if locked.head.born_from_publish and not allow_published:
                return "published"
            if locked.head.fork_refs > 0:
                await self._store.soft_delete(conn, run_id)
            else:
                await self._store.delete(conn, run_id, "expiry" if locked.expired else via)
            outcome: DeleteOutcome = "not_found" if locked.expired else "deleted"
        self._wake(run_id, None)
        return outcome

    # -- reads ----------------------------------------------------------------

    async def head(self, run_id: str) -> StreamHead | None:
        """The stream's state; None when there is none (or it expired)."""
        self._require_running()
        stored = await self._store.head(run_id)
        if stored is None or (stored.expired and not stored.head.soft_deleted):
            return None
        return stored.head

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
        stored = await self._store.read_page(
            run_id, after_seq, max_messages=max_messages, max_bytes=max_bytes
        )
        if stored is None or stored.expired or stored.page.head.soft_deleted:
            return None
        if stored.page.head.ttl_seconds is not None:
            await self._store.touch(run_id)
        return stored.page

    @contextlib.asynccontextmanager
    async def watch(self, run_id: str, after_seq: int) -> AsyncIterator[Waiter]:
        """A waiter set whenever the stream may have moved past *after_seq* (any process).

        Clear it before each read and wait on it after, as subscribers do:
        the run's shared feed is followed from here on, so bridge publishes,
        protocol appends and closes, here or elsewhere, all set it.
        """
        self._require_running()
        await self._feeds.follow_wakeups()
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
            except Exception as exc:
                error = _operation_error(exc)
                if error is exc:
                    raise
                raise error from exc
