"""Typed operations on Durable Streams: run the statements of ``streams.sql``, map rows to objects.

A stream is a run (docs/behaviour.md §12): these are the run rows and events
seen as streams. This module knows nothing of waiters, wake-ups or batching;
:mod:`pgbridge.durable_streams.streams` composes it. Reads that stand alone
run on the pool; the statements of a create, a fork or a delete run on the
connection of the caller's transaction (its row locks hold until commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from pgbridge.connector import Database
from pgbridge.durable_streams.messages import JSON_TYPE, is_json, json_array_of_joined, stored_bytes
from pgbridge.exceptions import StreamBridgeError

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

#: The path a deletion took, as ``run_deletions.via`` records it (revision 0009): a
#: protocol DELETE (``http``), ``bridge.streams.delete`` (``api``), or an expired stream
#: a PUT or a publish found (``expiry``). Retention's statements name their own.
DeletionPath = Literal["http", "api", "expiry"]


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
    #: A sliding TTL, reset by every read (None: none).
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
    #: The creation time of the event at ``last_seq`` (0 for an empty stream; None when not
    #: known: an empty fork whose fork point retention deleted). The tail offset names it.
    last_ms: int | None
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

    @property
    def born_from_publish(self) -> bool:
        """Whether the run was published through the bridge (not created by a PUT, nor a fork):
        its history is audit history, which a protocol DELETE may not remove unless allowed."""
        return self.stored_content_type is None and self.fork_source_run_id is None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StreamHead:
        """The head columns of ``stream_head``, ``lock_stream`` and the reads."""
        return cls(
            run_id=row["run_id"],
            stored_content_type=row["content_type"],
            first_seq=row["first_seq"],
            last_seq=row["last_seq"],
            last_ms=row["last_ms"],
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
    #: The creation time of the event at ``next_seq`` (None when not known).
    next_ms: int | None
    #: The creation time of the event at the seq read after, where the stream holds it
    #: or kept it (None when not known): an offset naming another time names another history.
    at_ms: int | None = None
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
    #: The stream's last seq and its time, and whether it is closed, after the request.
    last_seq: int | None = None
    last_ms: int | None = None
    closed: bool = False
    #: The producer's epoch and seq as stored (what a stale epoch or a gap is told).
    producer_epoch: int | None = None
    producer_seq: int | None = None
    #: The event a producer request stored (for a duplicate: its first delivery's).
    event_seq: int | None = None
    event_ms: int | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AppendOutcome:
        return cls(
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
class StreamAppend:
    """One protocol append (or close) as ``pgbridge_stream_append`` takes it."""

    run_id: str
    #: The request's content type, checked against the stream's (None: no check).
    content_type: str | None
    #: (event name, data text) of each message.
    events: Sequence[tuple[str, str]]
    close: bool = False
    stream_seq: str | None = None
    producer: Producer | None = None


@dataclass(frozen=True, slots=True)
class StoredHead:
    """A stream's head as read, and whether it expired (then it is gone for every request)."""

    head: StreamHead
    expired: bool


@dataclass(frozen=True, slots=True)
class StoredPage:
    """A page as read, and whether its stream expired."""

    page: StreamPage
    expired: bool


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a fork's source stands after an offset: the oldest offset a read may start
    from, the stored text of the message after the offset (None: there is none, or
    the stream is in JSON mode, whose messages a fork point never splits), and the
    creation time of the event at the offset (None when not known)."""

    oldest_seq: int
    next_message: str | None
    at_ms: int | None = None


class StreamStore:
    """The Durable Streams statements of one bridge's schema, on its pool or a caller's connection."""

    def __init__(self, db: Database, *, appends_in_flight: int = 1) -> None:
        self._db = db
        self._q = db.queries.streams
        #: The connections append batches ran on, kept for the next ones (as the publisher's:
        #: pgbridge.connector.KeptConnections); given back by :meth:`close`.
        self._appending = db.kept(min(appends_in_flight, db.max_size // 4))

    async def close(self) -> None:
        """Give back the connections kept for appends (before the pool closes)."""
        await self._appending.close()

    # -- reads on the pool ------------------------------------------------------

    async def head(self, run_id: str) -> StoredHead | None:
        """The stream's head; None when there is no run *run_id*."""
        rows = await self._db.fetch(self._q.stream_head, run_id)
        return _stored_head(rows[0]) if rows else None

    async def read_page(
        self, run_id: str, after_seq: int, *, max_messages: int, max_bytes: int
    ) -> StoredPage | None:
        """The messages after *after_seq* rendered as one body (at most *max_messages*, and no
        more than *max_bytes* of message data but always one); None when there is no run."""
        rows = await self._db.fetch(
            self._q.read_stream_page, run_id, after_seq, max_messages, max_bytes, JSON_TYPE
        )
        if not rows:
            return None
        row = rows[0]
        head = StreamHead.from_row(row)
        if is_json(head.stored_content_type):
            body = json_array_of_joined(row["json_messages"] or "")
        else:
            body = b"".join(stored_bytes(text) for text in row["byte_messages"] or ())
        taken: int = row["taken"]
        page = StreamPage(
            head=head,
            body=body,
            count=taken,
            next_seq=row["page_last_seq"] if taken else after_seq,
            next_ms=row["page_last_ms"] if taken else row["at_ms"],
            at_ms=row["at_ms"],
            oldest_seq=row["oldest_seq"],
        )
        return StoredPage(page, row["expired"])

    async def touch(self, run_id: str) -> None:
        """Reset the stream's sliding TTL (not an expired stream's)."""
        await self._db.fetch(self._q.touch_stream, run_id)

    async def append_many(self, requests: Sequence[StreamAppend]) -> list[AppendOutcome]:
        """*requests* in one statement (one transaction), in order; an outcome for each.

        A batch of simple requests (:func:`_all_simple`) goes first through
        ``stream_append_simple``, set-based, which stores all of them or none; only when it
        stored none (a stream in it would refuse, or took messages while the batch waited for
        its row: pgbridge/sql/streams.sql) does the batch go the general way."""
        if _all_simple(requests):
            async with self._appending.connection() as conn:
                self._db.statements += 1
                try:
                    rows = await conn.fetch(
                        self._q.stream_append_simple,
                        [r.run_id for r in requests],
                        [r.content_type for r in requests],
                        [r.events[0][0] for r in requests],
                        [r.events[0][1] for r in requests],
                    )
                except asyncpg.UniqueViolationError:  # its heads were read before a lock wait
                    rows = []
            if rows:
                by_place = {row["ord"]: AppendOutcome.from_row(row) for row in rows}
                if len(by_place) != len(requests):  # cannot happen: it stores all or none
                    raise StreamBridgeError(
                        f"stream_append_simple answered {len(rows)} of {len(requests)} requests"
                    )
                return [by_place[place] for place in range(1, len(requests) + 1)]
        return await self._append_many_generally(requests)

    async def _append_many_generally(self, requests: Sequence[StreamAppend]) -> list[AppendOutcome]:
        """``stream_append_many``: every request checked and appended by the function."""
        first: list[int] = []
        last: list[int] = []
        names: list[str] = []
        texts: list[str] = []
        for request in requests:
            first.append(len(names) + 1)
            names.extend(name for name, _ in request.events)
            texts.extend(text for _, text in request.events)
            last.append(len(names))
        async with self._appending.connection() as conn:
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
        return [AppendOutcome.from_row(row) for row in rows]

    # -- in the caller's transaction --------------------------------------------

    async def current_head(self, conn: asyncpg.Connection, run_id: str) -> StreamHead:
        """The head of a stream this transaction holds (created or locked)."""
        row = await conn.fetchrow(self._q.stream_head, run_id)
        assert row is not None, f"stream {run_id!r} vanished inside its transaction"
        return StreamHead.from_row(row)

    async def lock(self, conn: asyncpg.Connection, run_id: str) -> StoredHead | None:
        """Lock the stream's row until commit; its head, or None when there is no run."""
        row = await conn.fetchrow(self._q.lock_stream, run_id)
        return _stored_head(row) if row is not None else None

    async def source_position(self, conn: asyncpg.Connection, run_id: str, after_seq: int) -> SourcePosition:
        """Of a stream whose row this transaction holds: its oldest offset, and the stored
        text of its message after *after_seq* for a stream not in JSON mode (along its own
        chain of sources). The read of a page of one message, in this transaction."""
        row = await conn.fetchrow(self._q.read_stream_page, run_id, after_seq, 1, 0, JSON_TYPE)
        assert row is not None, f"stream {run_id!r} vanished inside its transaction"
        messages: list[str] | None = row["byte_messages"]
        return SourcePosition(row["oldest_seq"], messages[0] if messages else None, row["at_ms"])

    async def insert(self, conn: asyncpg.Connection, run_id: str, config: StreamConfig) -> bool:
        """Create the stream (open, empty); False when its path is taken."""
        inserted = await conn.fetchval(
            self._q.create_stream, run_id, config.content_type, config.ttl_seconds, config.expires_at
        )
        return inserted is not None

    async def insert_fork(
        self,
        conn: asyncpg.Connection,
        run_id: str,
        source: StreamHead,
        *,
        ttl_seconds: int | None,
        expires_at: datetime | None,
        offset_seq: int,
        sub_offset: int,
        fork_seq: int,
    ) -> bool:
        """Create the fork *run_id* of *source* (whose row this transaction holds), reading its
        events up to *fork_seq*; False when its path is taken."""
        inserted = await conn.fetchval(
            self._q.create_fork,
            run_id,
            source.stored_content_type,
            ttl_seconds,
            expires_at,
            source.run_id,
            offset_seq,
            sub_offset,
            fork_seq,
        )
        return inserted is not None

    async def add_fork_ref(self, conn: asyncpg.Connection, source_id: str) -> None:
        """One more fork reads *source_id*'s events (its row locked by the caller)."""
        await conn.execute(self._q.add_fork_ref, source_id)

    async def ensure_run(self, conn: asyncpg.Connection, run_id: str) -> None:
        """A run born from publish, if there is none."""
        await conn.execute(self._q.ensure_run, run_id)

    async def append(self, conn: asyncpg.Connection, request: StreamAppend) -> AppendOutcome:
        """One append or close, checked under the run row's lock; what was decided."""
        producer = request.producer
        row = await conn.fetchrow(
            self._q.stream_append,
            request.run_id,
            request.content_type,
            [name for name, _ in request.events],
            [text for _, text in request.events],
            request.close,
            request.stream_seq,
            producer.id if producer else None,
            producer.epoch if producer else None,
            producer.seq if producer else None,
        )
        assert row is not None
        return AppendOutcome.from_row(row)

    async def soft_delete(self, conn: asyncpg.Connection, run_id: str) -> None:
        """Mark the stream deleted while forks read it (its row locked by the caller)."""
        await conn.execute(self._q.soft_delete_stream, run_id)

    async def delete(self, conn: asyncpg.Connection, run_id: str, via: DeletionPath) -> None:
        """Delete a stream no fork reads (its row locked by the caller), and release its source,
        which goes too when it was soft-deleted and this was its last fork (up the chain).

        Each run row deleted is recorded in ``run_deletions`` (revision 0009) with *via*,
        in the caller's transaction."""
        await conn.fetch(self._q.delete_stream, run_id, via)


def _stored_head(row: asyncpg.Record) -> StoredHead:
    return StoredHead(StreamHead.from_row(row), row["expired"])


def _all_simple(requests: Sequence[StreamAppend]) -> bool:
    """Whether ``stream_append_simple`` can take the batch: every request one message, no
    producer, Stream-Seq or close, and no stream twice (its order would need the function)."""
    if not requests:
        return False
    for request in requests:
        if (
            len(request.events) != 1
            or request.producer is not None
            or request.stream_seq is not None
            or request.close
        ):
            return False
    return len({request.run_id for request in requests}) == len(requests)
