"""PostgresStreamBridge: the public class, composing the engine's parts.

Life of an event: ``publish`` checks its input (:mod:`pgbridge.payload`),
the :class:`~pgbridge.engine.publish.Publisher` appends it in one statement and
returns its ID after commit, the local :class:`~pgbridge.engine.feed.FeedRegistry`
takes it for same-process subscribers, and the
:class:`~pgbridge.engine.notify.Notifier` wakes other processes, whose
:class:`~pgbridge.engine.listen.Listener` wakes their feeds. Each
:func:`~pgbridge.engine.subscribe.subscription` yields from its run's feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO, cast

from pgbridge.audit import verify as audit
from pgbridge.audit.chain import ChainReport
from pgbridge.connector import AsyncLifecycle, Backoff, Database, is_connection_error
from pgbridge.contract import (
    TERMINAL_STATES,
    JSONValue,
    ResumeResult,
    StreamBridge,
    StreamEvent,
    StreamStatus,
)
from pgbridge.dsn import take_connect_timeout
from pgbridge.durable_streams.messages import JSON_TYPE
from pgbridge.durable_streams.streams import DurableStreams, Producer
from pgbridge.engine.feed import FeedRegistry
from pgbridge.engine.in_transaction import TransactionPublisher
from pgbridge.engine.listen import Listener
from pgbridge.engine.notify import Notifier
from pgbridge.engine.publish import AppendRequest, Publisher, Refused, refusal_error
from pgbridge.engine.replica import ReadRouter
from pgbridge.engine.subscribe import OnGap, Start, SubscriptionContext, Switch, subscription
from pgbridge.exceptions import (
    BridgeClosedError,
    BridgeNotStartedError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidEventError,
    ProducerFencedError,
    ProducerSequenceError,
    StreamTerminatedError,
)
from pgbridge.ids import format_event_id, parse_event_id, resolve_cursor, validate_run_id
from pgbridge.metrics import bridge_metrics
from pgbridge.payload import DEFAULT_MAX_PAYLOAD_BYTES, encode_data, validate_event_name
from pgbridge.retention.job import RetentionJob
from pgbridge.retention.policy import RetentionPolicy, RetentionReport
from pgbridge.retention.sweep import RetentionPass, RetentionProgress
from pgbridge.sql import DEFAULT_SCHEMA, RUN_STATUSES
from pgbridge.sql.queries import Queries, notify_channel
from pgbridge.store import wakeups
from pgbridge.store.events import Appended, EventStore, LoggedEvent, Page, RunInfo
from pgbridge.tokens import TokenKeyring, as_keyring, issue_read_token

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from pgbridge.store.caller import CallerConnection

logger = logging.getLogger(__name__)

#: The event each terminal state writes.
TERMINAL_EVENT_NAMES: dict[StreamStatus, str] = {
    StreamStatus.ENDED: "end",
    StreamStatus.CANCELLED: "cancel",
    StreamStatus.ERRORED: "error",
}


#: Most runs one list_runs call returns.
MAX_LIST_LIMIT = 1000


class _Lifecycle(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


def _with_dsn_connect_timeout(dsn: str, options: dict[str, object]) -> tuple[str, dict[str, object]]:
    """*dsn* and the DSN options without libpq's ``?connect_timeout=``, which asyncpg does not
    accept; the primary DSN's value becomes the ``connect_timeout`` option unless that option
    is given too (then the option wins)."""
    try:
        dsn, seconds = take_connect_timeout(dsn)
        options = dict(options)
        for name in ("listen_dsn", "replica_dsn"):
            other = options.get(name)
            if isinstance(other, str):
                options[name] = take_connect_timeout(other)[0]
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if seconds is not None:
        options.setdefault("connect_timeout", seconds)
    return dsn, options


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    """Tuning knobs of :class:`PostgresStreamBridge`; the defaults suit most uses.

    With the defaults a bridge holds at most ``pool_max_size + 1`` (11)
    connections: the pool and the one listener. With ``replica_dsn`` it also
    holds up to ``pool_max_size`` on the standby; with ``listen_dsn`` a
    retention pass opens one direct connection for its length.
    """

    schema: str = DEFAULT_SCHEMA
    pool_min_size: int = 1
    pool_max_size: int = 10
    #: Seconds between safety-net reads of runs that have subscribers here.
    poll_interval: float = 1.0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    connect_timeout: float = 10.0
    command_timeout: float | None = 60.0
    #: How long a publish keeps retrying while no connection can be had.
    publish_retry_timeout: float = 10.0
    listener_ping_interval: float = 5.0
    #: Newest events of a run kept in memory for its live subscribers.
    feed_buffer_size: int = 256
    #: Events per range read when replaying.
    page_size: int = 1000
    statement_cache_size: int = 100
    #: Group commit: publish batches sent at once (at most pool_max_size);
    #: more concurrent publishes wait for the next batch and share its transaction.
    publish_batches_in_flight: int = 4
    #: The retention job's policy; None (the default) runs no job in this bridge.
    retention: RetentionPolicy | None = None
    #: Seconds between the job's passes.
    retention_interval: float = 30.0
    #: Prometheus metrics (the ``metrics`` extra): False (the default) for none,
    #: True for prometheus-client's default registry, or a CollectorRegistry.
    metrics: bool | CollectorRegistry = False
    #: Where the listener (and the retention pass) connect, directly to PostgreSQL,
    #: when ``dsn`` goes through a transaction-mode pooler such as PgBouncer
    #: (LISTEN does nothing there). None: ``dsn``. start() checks that a NOTIFY
    #: sent through the pool reaches the listener, and refuses to start if not.
    listen_dsn: str | None = None
    #: A hot standby of the primary for catch-up and replay reads; None: none.
    #: Reads go there only when it has replayed what the reader knows of
    #: (see pgbridge.engine.replica); everything else stays on the primary.
    replica_dsn: str | None = None
    #: Group commit keeps each batch to one run, so every append transaction
    #: stays on one shard when the tables are distributed by run_id
    #: (docs/scaling.md). Off: a batch carries whatever runs piled up.
    batch_per_run: bool = False
    #: Seconds a group-commit batch waits for a run row another transaction holds (one
    #: that published with publish_in and has not ended) before the batch's other runs
    #: go on without that run, whose publishes then wait on their own (docs/transactions.md).
    #: 0: a batch waits as long as the row is held, and every run in it with it.
    publish_lock_wait: float = 0.1
    #: The keys that sign read tokens (:meth:`PostgresStreamBridge.read_token`) and that
    #: ``create_app`` verifies them with: ``kid:secret`` lines (the first signs, at most
    #: two) or a :class:`~pgbridge.tokens.TokenKeyring`. None: no read tokens. Never shown.
    token_secrets: TokenKeyring | str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        positive = {
            "pool_max_size": self.pool_max_size,
            "poll_interval": self.poll_interval,
            "max_payload_bytes": self.max_payload_bytes,
            "connect_timeout": self.connect_timeout,
            "listener_ping_interval": self.listener_ping_interval,
            "feed_buffer_size": self.feed_buffer_size,
            "page_size": self.page_size,
            "retention_interval": self.retention_interval,
            "publish_batches_in_flight": self.publish_batches_in_flight,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigurationError(f"{name} must be positive, not {value!r}")
        if not 0 <= self.pool_min_size <= self.pool_max_size:
            raise ConfigurationError("pool_min_size must be between 0 and pool_max_size")
        if self.publish_retry_timeout < 0:
            raise ConfigurationError("publish_retry_timeout must not be negative")
        wait = self.publish_lock_wait
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < 3600:
            raise ConfigurationError(f"publish_lock_wait must be from 0 to 3600 seconds, not {wait!r}")
        for name in ("listen_dsn", "replica_dsn"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{name} must be a postgresql:// URI or None, not {value!r}")
        if self.retention is not None and not isinstance(self.retention, RetentionPolicy):
            raise ConfigurationError(
                f"retention must be a RetentionPolicy or None, not {type(self.retention).__name__}"
            )


class PostgresStreamBridge(StreamBridge, AsyncLifecycle):
    """A durable, resumable StreamBridge on PostgreSQL.

    Connects nothing until :meth:`start` (or ``async with``). Every process
    that shares the database (and schema) sees the same runs.
    """

    def __init__(self, dsn: str, **options: object) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ConfigurationError("dsn must be a postgresql:// URI")
        known = set(BridgeOptions.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            accepted = ", ".join(sorted(known))
            raise ConfigurationError(f"unknown option(s) {', '.join(unknown)}; accepted: {accepted}")
        dsn, options = _with_dsn_connect_timeout(dsn, options)
        self.dsn = dsn
        self.options = BridgeOptions(**options)  # type: ignore[arg-type]
        self._token_keyring = as_keyring(self.options.token_secrets)
        self._metrics = bridge_metrics(self.options.metrics, self.options.schema)
        self._state = _Lifecycle.NEW
        self._start_lock = asyncio.Lock()
        queries = Queries.for_schema(self.options.schema)
        self._db = self._pool_on(dsn, queries)
        self._store = EventStore(self._db)
        self._replica_db = (
            self._pool_on(self.options.replica_dsn, queries) if self.options.replica_dsn is not None else None
        )
        self._reads = ReadRouter(self._store, self._replica_db)
        loop_time = lambda: asyncio.get_running_loop().time()  # noqa: E731
        self._feeds = FeedRegistry(
            self._store,
            buffer_size=self.options.feed_buffer_size,
            page_size=self.options.page_size,
            clock=loop_time,
            reads=self._reads,
        )
        channel = notify_channel(self.options.schema)
        self._notifier = Notifier(self._db, channel)
        batches_in_flight = min(self.options.publish_batches_in_flight, self.options.pool_max_size)
        command_timeout = self.options.command_timeout
        self._publisher = Publisher(
            self._db,
            on_commit=self._after_commit,
            retry_timeout=self.options.publish_retry_timeout,
            max_batches_in_flight=batches_in_flight,
            metrics=self._metrics,
            batch_per_run=self.options.batch_per_run,
            lock_wait=self.options.publish_lock_wait,
            # A lane's wait for a held row ends (nothing written) before the client's own
            # command_timeout would leave its outcome unknown.
            lane_lock_wait=0.9 * command_timeout if command_timeout else None,
            # Leave connections for the batches, and one for reads and NOTIFYs.
            lane_slots=self.options.pool_max_size - batches_in_flight - 1,
            notify_channel=channel,
        )
        self._in_transaction = TransactionPublisher(self._db, channel)
        self._listener = Listener(
            self.options.listen_dsn or dsn,
            channel,
            on_wake=self._feeds.receive,
            on_reconnect=self._after_listener_reconnect,
            ping_interval=self.options.listener_ping_interval,
            connect_timeout=self.options.connect_timeout,
            ping_sql=queries.listener_ping,
            probe=self._send_listener_check,
        )
        # Wake-ups reach this process from its first subscriber on (a worker that only
        # publishes is not sent every run's events).
        self._feeds.listen = self._listener.follow
        self._poll_task: asyncio.Task[None] | None = None
        self._retention_pass = RetentionPass(
            self._db,
            on_dead_lettered=self._after_dead_letter,
            on_trimmed=self._after_trim,
            metrics=self._metrics,
            direct_dsn=self.options.listen_dsn,
        )
        self._retention_job = (
            RetentionJob(self._retention_pass, self.options.retention, self.options.retention_interval)
            if self.options.retention is not None
            else None
        )
        #: Durable Streams on this bridge's tables (pgbridge.durable_streams.http serves them).
        self.streams = DurableStreams(
            self._db,
            self._feeds,
            self._notifier,
            require_running=self._require_running,
            appends_in_flight=min(self.options.publish_batches_in_flight, self.options.pool_max_size),
        )
        self._closed = Switch()
        self._subscription_ctx = SubscriptionContext(
            feeds=self._feeds,
            start=self._start,
            read_inherited=self._read_inherited,
            closed=self._closed,
            backoff=Backoff(initial=0.05, maximum=1.0),
            metrics=self._metrics,
        )

    # -- lifecycle ------------------------------------------------------------

    def _pool_on(self, dsn: str, queries: Queries) -> Database:
        """A connection pool on *dsn* (the primary, or the replica) sized and timed by the options."""
        return Database(
            dsn,
            queries,
            min_size=self.options.pool_min_size,
            max_size=self.options.pool_max_size,
            connect_timeout=self.options.connect_timeout,
            command_timeout=self.options.command_timeout,
            statement_cache_size=self.options.statement_cache_size,
        )

    async def start(self) -> None:
        """Open the pool and the listener; fails if the schema is not migrated."""
        async with self._start_lock:
            if self._state is _Lifecycle.RUNNING:
                return
            if self._state is _Lifecycle.CLOSED:
                raise BridgeClosedError("this bridge was closed; create a new PostgresStreamBridge")
            await self._connect_riding_through_blips()
            self._poll_task = asyncio.create_task(self._poll_forever(), name="pgbridge-poll")
            if self._retention_job is not None:
                self._retention_job.start()
            self._state = _Lifecycle.RUNNING

    async def _connect_riding_through_blips(self) -> None:
        """Open the pool and the listener.

        A server that is briefly away (restarting, or cutting a connection in
        the middle of the handshake) is tried again for up to
        ``connect_timeout``: a process started during a failover should not
        die of it. A missing database, a refused login or an unmigrated
        schema fails at once, since waiting cannot fix them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.connect_timeout
        backoff = Backoff(initial=0.05, maximum=1.0)
        attempt = 0
        while True:
            try:
                await self._db.open()
                try:
                    await self._reads.check_primary()
                    if self._replica_db is not None:
                        await self._replica_db.open()
                        await self._reads.check_replica()
                    await self._listener.start()
                except BaseException:
                    if self._replica_db is not None:
                        await self._replica_db.close()
                    await self._db.close()
                    raise
                return
            except DatabaseUnavailableError as exc:
                transient = exc.__cause__ is not None and is_connection_error(exc.__cause__)
                if not transient or loop.time() >= deadline:
                    raise
            await asyncio.sleep(min(backoff.delay(attempt), max(0.0, deadline - loop.time())))
            attempt += 1

    async def close(self) -> None:
        """Shut the bridge down: subscribers yield CANCELLED_SENTINEL; no run changes."""
        async with self._start_lock:
            if self._state is _Lifecycle.CLOSED:
                return
            was_running = self._state is _Lifecycle.RUNNING
            self._state = _Lifecycle.CLOSED
            self._closed.on = True
            if not was_running:
                return
            self._feeds.wake_waiters_everywhere()
            if self._retention_job is not None:
                await self._retention_job.stop()
            if self._poll_task is not None:
                self._poll_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._poll_task
            await self._publisher.close()
            await self.streams.shutdown()
            await self._listener.close()
            await self._notifier.close()
            if self._replica_db is not None:
                await self._replica_db.close()
            await self._db.close()

    def _require_running(self) -> None:
        if self._state is _Lifecycle.RUNNING:
            return
        if self._state is _Lifecycle.CLOSED:
            raise BridgeClosedError("this bridge is closed")
        raise BridgeNotStartedError(
            "the bridge is not started: call `await bridge.start()` first, "
            "or use `async with PostgresStreamBridge(dsn) as bridge:`"
        )

    # -- publishing -----------------------------------------------------------

    async def publish(
        self, run_id: str, event: str, data: JSONValue, *, producer: Producer | None = None
    ) -> str:
        """Append an event; returns its ID once it is committed.

        A run that is a Durable Stream whose content type is not JSON refuses
        it (:class:`StreamContentTypeError`: its messages are bytes), and a
        soft-deleted one (deleted or expired while forks read it) raises
        :class:`StreamGoneError`; nothing is stored then. An expired stream
        is gone, as for the protocol: it is deleted as a DELETE would, and
        the event starts the run anew at seq 1 (as a PUT recreates the path),
        so the outcome does not depend on whether retention swept it yet.

        With *producer* (an idempotent producer's id, epoch and seq), a retry
        of a publish that was stored (say, after a lost answer, from any
        process) stores nothing and returns the stored event's ID; a stale
        epoch raises :class:`ProducerFencedError`, a skipped seq
        :class:`ProducerSequenceError`. The check and the write are one
        transaction, under the run row's lock.
        """
        self._require_running()
        request = self._request(run_id, event, data)
        if producer is not None:
            return await self._publish_as_producer(request, producer)
        appended = await self._publisher.append(request)
        if appended is None:
            raise StreamTerminatedError(
                f"run {run_id!r} already has its terminal event; nothing more can be published to it"
            )
        return format_event_id(appended.ms, appended.seq)

    async def _publish_as_producer(self, request: AppendRequest, producer: Producer) -> str:
        if not isinstance(producer, Producer):
            raise InvalidEventError(f"producer must be a pgbridge.Producer, not {type(producer).__name__}")
        _validate_producer(producer)
        outcome = await self.streams.append(
            request.run_id,
            JSON_TYPE,  # a published event is JSON: a stream of another content type refuses it
            [(request.event, request.data_text)],
            producer=producer,
            create_run=True,
        )
        if outcome.kind in ("content_type", "gone"):
            raise refusal_error(request.run_id, Refused(outcome.kind))
        if outcome.kind == "appended" or (outcome.kind == "duplicate" and outcome.event_seq is not None):
            assert outcome.event_seq is not None and outcome.event_ms is not None
            if outcome.kind == "duplicate" and outcome.producer_seq != producer.seq:
                raise ProducerSequenceError(
                    f"producer {producer.id!r} seq {producer.seq} was stored before its last one "
                    f"({outcome.producer_seq}); only the last publish's ID is kept"
                )
            return format_event_id(outcome.event_ms, outcome.event_seq)
        if outcome.kind == "stale_epoch":
            raise ProducerFencedError(
                f"producer {producer.id!r} epoch {producer.epoch} is stale: run {request.run_id!r} "
                f"has seen epoch {outcome.producer_epoch}"
            )
        if outcome.kind in ("gap", "bad_epoch_seq"):
            raise ProducerSequenceError(
                f"producer {producer.id!r} sent seq {producer.seq} in epoch {producer.epoch}; "
                f"expected {outcome.producer_epoch if outcome.kind == 'gap' else 0}"
            )
        if outcome.kind in ("closed", "already_closed", "duplicate"):
            raise StreamTerminatedError(
                f"run {request.run_id!r} already has its terminal event; nothing more can be published to it"
            )
        raise StreamTerminatedError(f"run {request.run_id!r} cannot be published to ({outcome.kind})")

    async def publish_many(self, run_id: str, events: Sequence[tuple[str, JSONValue]]) -> list[str]:
        """Append several events to one run, in order, in one transaction; returns their IDs.

        For producers that already batch. Every event is checked before
        anything is written. If the run gets its terminal event meanwhile,
        the events after it are refused: :class:`StreamTerminatedError` says
        how many were stored (the first ones, in order).
        """
        self._require_running()
        requests = self._requests(run_id, events)
        if not requests:
            return []
        return _stored_ids(run_id, requests, await self._publisher.append_together(requests), "stored")

    def _requests(self, run_id: str, events: Sequence[tuple[str, JSONValue]]) -> list[AppendRequest]:
        """Check every (event, data) pair of a publish_many; raises before anything is written."""
        if isinstance(events, str | bytes) or not isinstance(events, Sequence):
            raise InvalidEventError("events must be a sequence of (event, data) pairs")
        requests = []
        for index, pair in enumerate(events):
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise InvalidEventError(f"events[{index}] must be an (event, data) pair, not {pair!r}")
            requests.append(self._request(run_id, pair[0], pair[1]))
        return requests

    def _request(self, run_id: str, event: str, data: JSONValue) -> AppendRequest:
        """Check one event and encode its data; raises before anything is written."""
        validate_run_id(run_id)
        validate_event_name(event)
        text = encode_data(data, max_bytes=self.options.max_payload_bytes)
        return AppendRequest(run_id, event, text)

    def _terminal_request(self, run_id: str, kind: StreamStatus, data: JSONValue) -> AppendRequest:
        """Check a terminal event and encode its data; raises before anything is written."""
        status = _terminal_status(kind)
        validate_run_id(run_id)
        text = encode_data(data, max_bytes=self.options.max_payload_bytes)
        return AppendRequest(run_id, TERMINAL_EVENT_NAMES[status], text, terminal=True, status=status.value)

    async def publish_terminal(self, run_id: str, kind: StreamStatus, data: JSONValue = None) -> str:
        """Write the run's terminal event (``end``, ``cancel`` or ``error``).

        The first terminal wins, across processes; later calls write nothing
        and return the winning event's ID.
        """
        self._require_running()
        request = self._terminal_request(run_id, kind, data)
        appended = await self._publisher.append(request)
        if appended is None:
            appended = await self._publisher.terminal_event(run_id)
            if appended is None:  # pragma: no cover - a terminal is never undone
                raise StreamTerminatedError(f"run {run_id!r} is terminal but its terminal event is gone")
        return format_event_id(appended.ms, appended.seq)

    # -- publishing inside the caller's transaction ---------------------------

    async def publish_in(self, conn: CallerConnection, run_id: str, event: str, data: JSONValue) -> str:
        """:meth:`publish`, inside the caller's open transaction on *conn*: the event commits
        or rolls back with the caller's own writes (docs/transactions.md).

        *conn* is an asyncpg ``Connection`` inside a transaction, or a
        SQLAlchemy ``AsyncConnection``/``AsyncSession`` on the asyncpg driver
        (its transaction is begun if it was not yet), connected to this
        bridge's database. Returns the event's ID, which is the event's only
        if the transaction commits. Readers (and wake-ups, in every process)
        see the event when it commits; a rollback leaves no trace, and
        consumes no seq. Until the transaction ends it holds the run's row,
        so other publishers of the run wait for it (publish last, commit
        soon); publishers of other runs go on.

        Checks and refusals are :meth:`publish`'s and leave the transaction
        usable: :class:`InvalidEventError` and :class:`TransactionRequiredError`
        before anything is sent, :class:`StreamTerminatedError`,
        :class:`StreamContentTypeError`, :class:`StreamGoneError` when the
        run refuses the event. An error PostgreSQL raises aborts the
        transaction, as PostgreSQL does: :class:`TransactionAbortedError`.
        """
        self._require_running()
        request = self._request(run_id, event, data)
        (appended,) = await self._in_transaction.append(conn, [request])
        if appended is None:
            raise StreamTerminatedError(
                f"run {run_id!r} already has its terminal event; nothing more can be published to it "
                "(your transaction is still usable)"
            )
        return format_event_id(appended.ms, appended.seq)

    async def publish_many_in(
        self, conn: CallerConnection, run_id: str, events: Sequence[tuple[str, JSONValue]]
    ) -> list[str]:
        """:meth:`publish_many` inside the caller's open transaction on *conn* (see :meth:`publish_in`).

        If the run has (or gets, among *events*) its terminal event, the
        events after it are refused: :class:`StreamTerminatedError` says how
        many were written in the transaction before it (the first ones); the
        transaction stays usable, and commits those if the caller commits.
        """
        self._require_running()
        requests = self._requests(run_id, events)
        if not requests:
            return []
        appended = await self._in_transaction.append(conn, requests)
        return _stored_ids(run_id, requests, appended, "written in your transaction")

    async def publish_terminal_in(
        self, conn: CallerConnection, run_id: str, kind: StreamStatus, data: JSONValue = None
    ) -> str:
        """:meth:`publish_terminal` inside the caller's open transaction on *conn* (see
        :meth:`publish_in`): the run ends when the transaction commits.

        The first terminal wins, as for :meth:`publish_terminal`: on a run that
        is terminal already (committed by anyone, or earlier in this
        transaction) nothing is written and the winning event's ID is returned.
        """
        self._require_running()
        request = self._terminal_request(run_id, kind, data)
        (appended,) = await self._in_transaction.append(conn, [request])
        if appended is None:
            appended = await self._in_transaction.terminal_event(conn, run_id)
            if appended is None:  # pragma: no cover - a terminal is never undone
                raise StreamTerminatedError(f"run {run_id!r} is terminal but its terminal event is gone")
        return format_event_id(appended.ms, appended.seq)

    async def publish_end(self, run_id: str) -> str:
        return await self.publish_terminal(run_id, StreamStatus.ENDED)

    async def cancel(self, run_id: str) -> None:
        await self.publish_terminal(run_id, StreamStatus.CANCELLED)

    async def mark_awaiting_input(self, run_id: str) -> None:
        """An active run becomes ``awaiting_input`` until its next publish or terminal."""
        self._require_running()
        validate_run_id(run_id)
        await self._store.mark_awaiting_input(run_id)

    def _after_commit(
        self, run_id: str, appended: Appended, event: str, data_text: str, terminal: bool
    ) -> None:
        self._feeds.offer(
            run_id,
            lambda: LoggedEvent.from_stored(appended.seq, appended.ms, event, data_text, terminal),
            appended.prev_ms,
        )
        if not appended.notified:  # else its own commit woke other processes
            self._notifier.notify(
                run_id,
                appended.seq,
                (appended.seq, appended.ms, event, data_text, terminal, appended.prev_ms),
            )

    # -- reading --------------------------------------------------------------

    async def resolve(self, run_id: str, last_event_id: str | None) -> ResumeResult:
        """How *last_event_id* resumes on *run_id* (docs/behaviour.md §3); reads only.

        On a Durable Streams fork the table applies to what ``subscribe``
        yields there: the fork's stitched view (its source chain's events up
        to the fork point, with their IDs, then its own), whose retained range
        starts after whatever retention deleted from the chain before the
        fork existed.
        """
        return (await self._start(run_id, last_event_id)).resume

    async def _start(self, run_id: str, last_event_id: str | None) -> Start:
        """Resolve the cursor, and tell a subscription whether the run is a fork (one
        read for a run that is no fork: its row says so)."""
        self._require_running()
        validate_run_id(run_id)
        _validate_cursor_type(last_event_id)
        parsed = parse_event_id(last_event_id) if last_event_id is not None else None
        retained = await self._store.retained_range(run_id, parsed.seq if parsed else 0)
        return Start(resolve_cursor(last_event_id, retained), retained.fork_seq)

    async def _read_inherited(self, run_id: str, cursor_seq: int, fork_seq: int) -> Page:
        """A page of what the fork *run_id* inherits, read on the primary: it spans the
        fork's chain of sources, which the feed's replica routing does not follow."""
        return await self._store.read_inherited_after(run_id, cursor_seq, fork_seq, self.options.page_size)

    def subscribe(
        self,
        run_id: str,
        *,
        last_event_id: str | None = None,
        heartbeat_interval: float = 15.0,
        on_gap: OnGap = "continue",
    ) -> AsyncIterator[StreamEvent]:
        """Yield *run_id*'s events after *last_event_id*, then live ones, until terminal.

        On a Durable Streams fork these are its stitched view, as a protocol
        read gives it: the events it inherits from its chain of sources (with
        their IDs) up to the fork point, then its own; *last_event_id*
        resolves against that view (see :meth:`resolve`). Bad arguments raise
        here; a closed or unstarted bridge raises at the first read of the
        iterator.
        """
        validate_run_id(run_id)
        _validate_cursor_type(last_event_id)
        if not heartbeat_interval > 0:
            raise InvalidEventError(f"heartbeat_interval must be positive, not {heartbeat_interval!r}")
        if on_gap not in ("continue", "stop"):
            raise InvalidEventError(f"on_gap must be 'continue' or 'stop', not {on_gap!r}")
        return cast(
            AsyncIterator[StreamEvent],
            self._subscription(run_id, last_event_id, heartbeat_interval, on_gap, stored=False),
        )

    def subscribe_stored(
        self, run_id: str, *, last_event_id: str | None = None, heartbeat_interval: float = 15.0
    ) -> AsyncIterator[StreamEvent | LoggedEvent]:
        """:meth:`subscribe` for the HTTP surfaces (internal): events come as
        :class:`~pgbridge.store.events.LoggedEvent`, their data the stored JSON
        text, never decoded (an SSE frame sends it as it is); sentinels and gap
        markers are StreamEvents, as from :meth:`subscribe`."""
        validate_run_id(run_id)
        _validate_cursor_type(last_event_id)
        if not heartbeat_interval > 0:
            raise InvalidEventError(f"heartbeat_interval must be positive, not {heartbeat_interval!r}")
        return self._subscription(run_id, last_event_id, heartbeat_interval, "continue", stored=True)

    def _subscription(
        self,
        run_id: str,
        last_event_id: str | None,
        heartbeat_interval: float,
        on_gap: OnGap,
        *,
        stored: bool,
    ) -> AsyncIterator[StreamEvent | LoggedEvent]:
        # The subscription's own generator, not one that re-yields it: a hop less per
        # event on a replay. Closing it (aclose, or leaving it to the garbage collector)
        # releases the subscription as the wrapper did.
        made_after_close = self._state is _Lifecycle.CLOSED

        def before_start() -> None:
            if made_after_close or self._state is _Lifecycle.NEW:
                self._require_running()

        return subscription(
            self._subscription_ctx,
            run_id,
            last_event_id,
            heartbeat_interval,
            on_gap,
            stored=stored,
            before_start=before_start,
        )

    # -- looking at runs ------------------------------------------------------

    async def run_info(self, run_id: str) -> RunInfo | None:
        """The run's status, counts, first/last/terminal IDs and times; None if it does not exist."""
        self._require_running()
        validate_run_id(run_id)
        return await self._store.run_info(run_id)

    async def list_runs(self, *, status: str | None = None, limit: int = 100) -> list[RunInfo]:
        """The most recently active runs (of *status*, if given), newest first."""
        self._require_running()
        if status is not None and status not in RUN_STATUSES:
            raise InvalidEventError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidEventError(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {limit!r}")
        return await self._store.recent_runs(status, limit)

    # -- read tokens ------------------------------------------------------------

    @property
    def token_keyring(self) -> TokenKeyring | None:
        """The keys of the ``token_secrets`` option (which ``create_app`` verifies read tokens with)."""
        return self._token_keyring

    def read_token(self, run_id: str, *, ttl: float | timedelta = 600.0) -> str:
        """A token that reads *run_id*, and nothing else, for *ttl* (seconds, or a timedelta;
        at most 7 days): for a browser to hold (docs/security.md).

        Signed with the first key of ``token_secrets``; no database round trip,
        so it works whether or not the bridge is started, and whether or not the
        run exists yet. Raises ConfigurationError without keys, InvalidEventError
        for a bad run id or ttl.
        """
        if self._token_keyring is None:
            raise ConfigurationError(
                "this bridge has no token keys: create it with token_secrets='kid:secret' "
                "(e.g. os.environ['PGBRIDGE_TOKEN_SECRETS'], or TokenKeyring.from_file(path))"
            )
        return issue_read_token(self._token_keyring, run_id, ttl)

    # -- audit ------------------------------------------------------------------

    async def verify(self, run_id: str, *, progress: audit.Progress | None = None) -> ChainReport:
        """Recompute *run_id*'s hash chain: ok, or the first seq where it breaks and how."""
        self._require_running()
        validate_run_id(run_id)
        return await audit.verify_run(self._db, run_id, progress=progress)

    def verify_all(self, *, progress: audit.Progress | None = None) -> AsyncIterator[ChainReport]:
        """Every run's verdict, in run_id order."""
        self._require_running()
        return audit.verify_all(self._db, progress=progress)

    async def export(self, run_id: str, out: TextIO) -> int:
        """Write *run_id*'s events with their hashes as JSON lines (``pgbridge export``)."""
        self._require_running()
        validate_run_id(run_id)
        return await audit.export_run(self._db, run_id, out)

    def local_subscribers(self, run_id: str) -> int:
        """Subscriptions to *run_id* open in this process (what a disconnect must release)."""
        feed = self._feeds.get(run_id)
        return len(feed.waiters) if feed is not None else 0

    async def cleanup(self, run_id: str, *, delay: float = 0) -> None:
        """After *delay* seconds, drop what this process caches for *run_id*.

        Writes nothing, deletes no history, and leaves live subscribers alone.
        """
        self._require_running()
        validate_run_id(run_id)
        if delay > 0:
            await asyncio.sleep(delay)
        self._feeds.discard_if_idle(run_id)

    # -- retention ------------------------------------------------------------

    async def run_retention(
        self, policy: RetentionPolicy | None = None, *, progress: RetentionProgress | None = None
    ) -> RetentionReport:
        """Run one retention pass now and report what it did (docs/behaviour.md §8).

        Uses *policy*, else the bridge's ``retention`` option, else the
        defaults of :class:`RetentionPolicy`. If a pass is running anywhere
        (this bridge's job, another process), waits for it, then does its own.
        *progress*, if given, is told the running totals after each batch.
        """
        self._require_running()
        if policy is not None and not isinstance(policy, RetentionPolicy):
            raise ConfigurationError(f"policy must be a RetentionPolicy or None, not {type(policy).__name__}")
        chosen = policy or self.options.retention or RetentionPolicy()
        report = await self._retention_pass.run(chosen, wait=True, progress=progress)
        assert report is not None  # a waiting pass always runs
        return report

    @property
    def retention_job(self) -> RetentionJob | None:
        """The periodic retention job, when the bridge was given a policy."""
        return self._retention_job

    def _after_dead_letter(self, run_id: str, seq: int) -> None:
        """The reaper committed *run_id*'s terminal event: wake its readers here and elsewhere."""
        self._feeds.wake(run_id, seq)
        self._notifier.notify(run_id, seq)

    def _after_trim(self, run_id: str, first_seq: int) -> None:
        """Retention deleted *run_id*'s events before *first_seq*.

        Readers here drop them from memory at once, so none is yielded after
        this pass returns; readers elsewhere re-read when the NOTIFY arrives.
        """
        self._feeds.forget_before(run_id, first_seq)
        self._notifier.notify(run_id, None)

    def _after_listener_reconnect(self) -> None:
        """Anything could have been published while the listener was away: re-read every feed."""
        self._metrics.listener_reconnected()
        self._feeds.wake_all()

    async def _send_listener_check(self, channel: str) -> None:
        """start(): a NOTIFY from a pooled session, which the new listener must receive."""
        await wakeups.notify_listener_check(self._db, channel)

    # -- background -----------------------------------------------------------

    async def _poll_forever(self) -> None:
        """The safety net for lost NOTIFYs: every half poll interval, one statement
        checks the runs not read for that long, and only the ones that moved are read."""
        loop = asyncio.get_running_loop()
        half = self.options.poll_interval / 2
        while True:
            await asyncio.sleep(half)
            await self._feeds.poll(older_than=loop.time() - half)

    @property
    def statements_run(self) -> int:
        """SQL statements this bridge has sent: appends (one per batch), NOTIFYs, reads."""
        return self._db.statements + (self._replica_db.statements if self._replica_db is not None else 0)

    @property
    def reads_from_primary(self) -> int:
        """Range reads of run events the primary answered."""
        return self._reads.primary_reads

    @property
    def reads_from_replica(self) -> int:
        """Range reads of run events the standby (``replica_dsn``) answered."""
        return self._reads.replica_reads

    @property
    def listener_reconnects(self) -> int:
        """How often the LISTEN connection was re-established."""
        return self._listener.reconnects


def _stored_ids(
    run_id: str, requests: list[AppendRequest], appended: list[Appended | None], stored: str
) -> list[str]:
    """The IDs of a publish_many's events; StreamTerminatedError if the run refused some."""
    ids = [format_event_id(a.ms, a.seq) for a in appended if a is not None]
    if len(ids) < len(requests):
        raise StreamTerminatedError(
            f"run {run_id!r} has its terminal event: {len(ids)} of {len(requests)} events were "
            f"{stored} before it ({', '.join(ids) or 'none'}); the rest were not"
        )
    return ids


def _terminal_status(kind: object) -> StreamStatus:
    status = next((s for s in TERMINAL_STATES if s == kind), None)  # a StreamStatus or its str value
    if status is None:
        allowed = ", ".join(sorted(s.value for s in TERMINAL_STATES))
        raise InvalidEventError(f"kind must be one of the terminal states ({allowed}), not {kind!r}")
    return status


def _validate_producer(producer: Producer) -> None:
    if not isinstance(producer.id, str) or not producer.id or "\x00" in producer.id:
        raise InvalidEventError("producer.id must be a non-empty string without NUL")
    for name in ("epoch", "seq"):
        value = getattr(producer, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53 - 1:
            raise InvalidEventError(
                f"producer.{name} must be a whole number from 0 to 2**53-1, not {value!r}"
            )


def _validate_cursor_type(last_event_id: object) -> None:
    if last_event_id is not None and not isinstance(last_event_id, str):
        raise InvalidEventError(f"last_event_id must be a str or None, not {type(last_event_id).__name__}")
