"""Every error pgbridge raises: one tree rooted at :class:`StreamBridgeError`.

Driver errors never escape bare; they are chained as ``__cause__`` of one of
these, with a message that says what to do. Every error class of the package
is defined here, so one ``except StreamBridgeError`` catches them all::

    StreamBridgeError
    ├── InvalidEventError (ValueError)   a bad run id, event, payload or cursor
    │   └── TransactionRequiredError     publish_in given a connection outside a transaction
    ├── ConfigurationError (ValueError)  a bad option: pool sizes, DSNs, metrics, retention
    ├── TopologyConfigurationError       start() found a connection option that breaks a promise
    ├── BridgeNotStartedError, BridgeClosedError
    ├── SchemaNotMigratedError, DatabaseUnavailableError, PublishOutcomeUnknownError
    ├── RolledBackByConflictError        a batch rolled back (deadlock, a long-held run row): sent again
    ├── TransactionAbortedError          PostgreSQL aborted the caller's transaction in publish_in
    ├── StreamTerminatedError, StreamNotFoundError, StreamCapacityExceededError
    ├── ProducerFencedError, ProducerSequenceError
    ├── StreamContentTypeError, StreamGoneError
    ├── BenchError                       ``pgbridge bench`` could not measure a workload
    └── Durable Streams creates and forks (their HTTP status in parentheses):
        StreamExistsError (409), ForkSourceNotFoundError (404),
        ForkConflictError (409), ForkPositionError (400),
        ForkOffsetError (ValueError; the pure fork rules' form of ForkPositionError)

The ``ValueError`` bases let callers that treat every bad argument alike
(``except ValueError``) keep doing so. :class:`InvalidEventError` is about the
data of a call and :class:`ConfigurationError` about how the bridge (or a
policy) was set up: the CLI exits 2 for both. See docs/behaviour.md §11.
"""

from __future__ import annotations


class StreamBridgeError(Exception):
    """Base of every error the bridge raises."""


class BridgeClosedError(StreamBridgeError):
    """The bridge was closed; make a new one to go on."""


class StreamCapacityExceededError(StreamBridgeError):
    """Kept for the contract; pgbridge has no in-memory capacity to exceed."""


class StreamTerminatedError(StreamBridgeError):
    """The run already has its terminal event; nothing more can be published."""


class StreamNotFoundError(StreamBridgeError):
    """Kept for the contract: a run that does not exist."""


class InvalidEventError(ValueError, StreamBridgeError):
    """A run id, event name, payload or cursor that cannot be accepted.

    Raised before anything touches the database, so nothing is written.
    """


class ConfigurationError(StreamBridgeError, ValueError):
    """An option that cannot be accepted: a pool size, a DSN, the metrics or retention options.

    Raised where the bridge (or a :class:`~pgbridge.RetentionPolicy`) is
    built, before any connection is made; fix the configuration.
    """


class BridgeNotStartedError(StreamBridgeError):
    """A method was called before :meth:`PostgresStreamBridge.start`."""


class SchemaNotMigratedError(StreamBridgeError):
    """The database lacks pgbridge's tables, or has an older revision of them."""


class DatabaseUnavailableError(StreamBridgeError):
    """PostgreSQL could not be reached; nothing was written."""


class PublishOutcomeUnknownError(StreamBridgeError):
    """The connection was lost while an event was being written.

    The event may or may not have been committed: the database is the only
    authority. Read the run (``subscribe`` or ``resolve``) to find out before
    publishing it again, or the run may hold it twice.
    """


class RunHistoryChangedError(StreamBridgeError):
    """A run's stored history no longer holds an event this subscriber yielded.

    The event at its cursor is gone or is another event now: an asynchronous
    failover promoted a standby that never received it (and the run went on
    from there with new events at the same seqs), or the run was deleted and
    published again. Its continuation does not exist, so the subscription
    ends instead of yielding another history as if it followed. Resuming
    with the same ID resolves ``unknown`` (docs/behaviour.md §3 and §6).
    """


class RolledBackByConflictError(StreamBridgeError):
    """PostgreSQL rolled the batch back to break a deadlock (or a serialization
    conflict), or the batch waited longer than it may for a run row another
    transaction holds (docs/transactions.md): nothing was written, and sending
    it again is safe. The group commit retries it; a caller sees it only if
    retrying ran out of time."""


class TransactionRequiredError(InvalidEventError):
    """``publish_in`` (and its kin) was given a connection that is not inside a transaction,
    or not one pgbridge can publish through (an asyncpg connection, or a SQLAlchemy
    ``AsyncConnection``/``AsyncSession`` on the asyncpg driver).

    Raised before anything is sent: nothing was written, and the connection is as it was
    (docs/transactions.md).
    """


class TransactionAbortedError(StreamBridgeError):
    """PostgreSQL raised an error inside the caller's transaction during ``publish_in``.

    As PostgreSQL dictates, the whole transaction is aborted (unless it was inside a
    savepoint, which the caller may roll back to): every later statement fails until
    it is rolled back, and nothing of it will be stored. The driver's error is the
    ``__cause__``; :attr:`sqlstate` is its SQLSTATE (None for a lost connection), and
    :attr:`retryable` says whether running the whole transaction again may succeed
    (a deadlock, a serialization failure, a lock or statement timeout, a lost
    connection). See docs/transactions.md.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.retryable = retryable


class TopologyConfigurationError(StreamBridgeError):
    """A connection option points somewhere that would silently break a promise.

    Raised by ``start()``: a listener that cannot receive NOTIFYs (behind a
    transaction-mode pooler), or a ``replica_dsn`` that is not a hot standby.
    """


class ProducerFencedError(StreamBridgeError):
    """An idempotent producer published with an epoch older than one the run has seen."""


class ProducerSequenceError(StreamBridgeError):
    """An idempotent producer skipped a sequence number, or began a new epoch past seq 0."""


class StreamContentTypeError(StreamBridgeError):
    """The run is a Durable Stream whose content type is not JSON: its messages are bytes.

    A publish writes a JSON event, which does not belong there; nothing was
    stored. Append to such a stream over the Durable Streams protocol.
    """


class StreamGoneError(StreamBridgeError):
    """The run is a Durable Stream that was deleted (or expired) while forks still read it.

    It is soft-deleted: its events stay for the forks, and its run id takes
    no new events until its last fork is deleted (as its URL answers 410 and
    a PUT there 409). Nothing was stored.
    """


class StreamExistsError(StreamBridgeError):
    """A create named an existing stream with another configuration (or a soft-deleted one)."""


class ForkSourceNotFoundError(StreamBridgeError):
    """A fork named a source stream that does not exist (or expired)."""


class ForkConflictError(StreamBridgeError):
    """A fork's source is soft-deleted, or has another content type."""


class ForkPositionError(StreamBridgeError):
    """A fork's offset or sub-offset names no position of its source."""


class ForkOffsetError(StreamBridgeError, ValueError):
    """The fork offset or sub-offset names no position of the source (400).

    Raised by the pure fork rules (:mod:`pgbridge.durable_streams.forks`);
    the engine reports it as :class:`ForkPositionError`.
    """


class BenchError(StreamBridgeError):
    """A benchmark workload could not be measured (a subscriber process failed, a timeout)."""
