"""Connections to PostgreSQL: the pool, and what a driver error means.

Driver errors become :class:`StreamBridgeError` subclasses here, so the
engine above never lets an asyncpg exception escape bare. The rule that
keeps publishing honest: a failure *before* a statement reached the server
(no connection could be had) is safe to retry; a connection lost *while* a
statement was in flight leaves its outcome unknown and is reported as such.
"""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncpg

from pgbridge.dsn import redact_dsn
from pgbridge.exceptions import (
    ConfigurationError,
    DatabaseUnavailableError,
    SchemaNotMigratedError,
    StreamBridgeError,
)
from pgbridge.sql import SCHEMA_REVISION
from pgbridge.sql.queries import Queries

T = TypeVar("T")

#: SQLSTATE classes that mean "this connection or server went away":
#: 08 connection exception, 57 operator intervention (admin shutdown,
#: pg_terminate_backend, crash shutdown, cannot connect now).
_CONNECTION_SQLSTATE_CLASSES = ("08", "57")


def is_connection_error(exc: BaseException) -> bool:
    """Whether *exc* means the connection (not the statement) failed."""
    if isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.InternalClientError  # a connection the server just dropped
        | asyncpg.exceptions.ConnectionDoesNotExistError,
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in _CONNECTION_SQLSTATE_CLASSES
    return isinstance(exc, asyncio.TimeoutError)


@contextmanager
def _unavailable_if_unreachable() -> Iterator[None]:
    """Around getting a connection: a connection-class failure becomes
    :class:`DatabaseUnavailableError` (retryable, "PostgreSQL is not there");
    anything else (a bad login, a missing database) passes through as it is."""
    try:
        yield
    except Exception as exc:
        if is_connection_error(exc):
            raise DatabaseUnavailableError(f"no connection to PostgreSQL: {exc}") from exc
        raise


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, capped."""

    initial: float = 0.05
    maximum: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * 2**attempt))


class AsyncLifecycle(abc.ABC):
    """An object that holds connections from :meth:`start` to :meth:`close`;
    ``async with`` does both (the bridge, the inspector)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open what the object needs (pools, connections, background tasks)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release it all."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Database:
    """The bridge's connection pool plus its SQL, with errors translated."""

    def __init__(
        self,
        dsn: str,
        queries: Queries,
        *,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        command_timeout: float | None,
        statement_cache_size: int,
    ) -> None:
        self.dsn = dsn
        self.queries = queries
        self._pool_options: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "timeout": connect_timeout,
            "command_timeout": command_timeout,
            "statement_cache_size": statement_cache_size,
        }
        self._connect_timeout = connect_timeout
        #: The pool's size: what users that keep connections (:class:`KeptConnections`) size by.
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        #: SQL statements sent through this object (for metrics and the benchmark).
        self.statements = 0

    async def open(self) -> None:
        """Open the pool and check the schema is migrated."""
        try:
            self._pool = await asyncpg.create_pool(self.dsn, reset=_no_session_reset, **self._pool_options)
        except asyncpg.InvalidCatalogNameError as exc:
            raise DatabaseUnavailableError(
                f"the database in {redact_dsn(self.dsn)!r} does not exist: {exc}"
            ) from exc
        except asyncpg.InvalidAuthorizationSpecificationError as exc:
            raise DatabaseUnavailableError(f"PostgreSQL refused the login: {exc}") from exc
        except (ValueError, asyncpg.ClientConfigurationError) as exc:  # asyncpg could not parse it
            shown = redact_dsn(self.dsn)
            raise ConfigurationError(f"not a valid PostgreSQL DSN: {shown!r} ({exc})") from None
        except Exception as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailableError(
                    f"cannot connect to PostgreSQL at {redact_dsn(self.dsn)!r}: {exc}"
                ) from exc
            raise
        try:
            await self._check_schema_revision()
        except BaseException:
            await self.close()
            raise

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool, waiting up to *timeout* for borrowed connections."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await pool.close()
        except TimeoutError:
            pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseUnavailableError("the connection pool is closed")
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Borrow a connection; failing to get one raises DatabaseUnavailableError.

        It goes back to the pool it came from, not to ``self.pool``: a use that ends while the
        bridge closes must still give it back (close detaches the pool first, then waits for
        every borrowed connection)."""
        pool = self.pool
        conn = await self._acquire_from(pool)
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def acquire(self) -> asyncpg.Connection:
        """A connection from the pool (give it back with ``pool.release``); failing to get one
        raises DatabaseUnavailableError."""
        return await self._acquire_from(self.pool)

    async def _acquire_from(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        with _unavailable_if_unreachable():
            conn: asyncpg.Connection = await pool.acquire(timeout=self._connect_timeout)
        return conn

    def kept(self, keep: int) -> KeptConnections:
        """Connections a hot-path user keeps between uses (:class:`KeptConnections`)."""
        return KeptConnections(self, keep)

    @asynccontextmanager
    async def direct_connection(self, dsn: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own to *dsn*, outside the pool, closed afterwards.

        For work that needs one server session across several transactions
        (the retention pass's advisory lock) when the pool goes through a
        transaction-mode pooler.
        """
        with _unavailable_if_unreachable():
            conn = await asyncpg.connect(
                dsn,
                timeout=self._connect_timeout,
                command_timeout=self._pool_options["command_timeout"],
                statement_cache_size=self._pool_options["statement_cache_size"],
            )
        try:
            yield conn
        finally:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await conn.close()
            except Exception:
                conn.terminate()

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Run a read; connection failures surface as DatabaseUnavailableError."""
        async with self.connection() as conn:
            self.statements += 1
            try:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            except Exception as exc:
                if is_connection_error(exc):
                    raise DatabaseUnavailableError(f"lost the connection to PostgreSQL: {exc}") from exc
                raise StreamBridgeError(f"query failed: {exc}") from exc
            return rows

    async def _check_schema_revision(self) -> None:
        command = f"pgbridge migrate --dsn '{redact_dsn(self.dsn)}' --schema {self.queries.schema}"
        try:
            rows = await self.fetch(self.queries.schema_revision)
        except StreamBridgeError as exc:
            if isinstance(exc.__cause__, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
                raise SchemaNotMigratedError(
                    f"schema {self.queries.schema!r} has no pgbridge tables: run `{command}` "
                    "(or `await pgbridge.migrate(dsn)`) first"
                ) from exc.__cause__
            raise
        revisions = {row["version_num"] for row in rows}
        if SCHEMA_REVISION not in revisions:
            raise SchemaNotMigratedError(
                f"schema {self.queries.schema!r} is at revision {sorted(revisions)}, "
                f"this pgbridge needs {SCHEMA_REVISION!r}: run `{command}`"
            )


class KeptConnections:
    """Pool connections one hot-path user keeps between uses, up to *keep* idle at a time.

    asyncpg's ``Pool.acquire`` with a timeout waits in a task of its own and
    ``Pool.release`` shields the release in another: two tasks and several
    turns of the event loop per borrow (measured, paced like a lone publish:
    47 µs to borrow and 73 µs to give back, about half a round trip;
    docs/performance.md). The publisher borrows for every batch, so it keeps
    the connections its batches used and takes them again with no await.

    Only a connection whose use ended cleanly, outside a transaction, is
    kept: one that failed (or was cancelled mid-statement) goes back to the
    pool, which resets or discards it. Kept connections count as borrowed
    for the pool (they are not closed for being idle); :meth:`close` gives
    them back, before the pool closes.
    """

    def __init__(self, db: Database, keep: int) -> None:
        self._db = db
        self._keep = max(0, keep)
        self._idle: list[tuple[asyncpg.Pool, asyncpg.Connection]] = []
        self._closed = False

    @property
    def idle(self) -> int:
        """Connections kept now (for tests)."""
        return len(self._idle)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A kept connection, or one borrowed from the pool; kept afterwards if it ended well."""
        pool, conn = await self._take()
        try:
            yield conn
        except BaseException:
            await pool.release(conn)
            raise
        if self._closed or len(self._idle) >= self._keep or not _fit_to_keep(conn):
            await pool.release(conn)
        else:
            self._idle.append((pool, conn))

    async def _take(self) -> tuple[asyncpg.Pool, asyncpg.Connection]:
        while self._idle:
            pool, conn = self._idle.pop()
            if _fit_to_keep(conn):
                return pool, conn
            await pool.release(conn)  # the server or the network closed it: the pool replaces it
        return self._db.pool, await self._db.acquire()

    async def close(self) -> None:
        """Give every kept connection back to its pool; nothing is kept after this."""
        self._closed = True
        idle, self._idle = self._idle, []
        for pool, conn in idle:
            await pool.release(conn)


def _fit_to_keep(conn: asyncpg.Connection) -> bool:
    """Open and outside a transaction. A connection the server closed may already be back
    with its pool (asyncpg takes it back when it closes), where asking it anything raises."""
    try:
        return not conn.is_closed() and not conn.is_in_transaction()
    except asyncpg.InterfaceError:
        return False


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """What a released connection needs beyond asyncpg's own cleanup: nothing.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; ...`` on every
    release, one more round trip per publish and per read. pgbridge leaves no
    session state on pooled connections: it never SETs, LISTENs only on its
    own connection, closes cursors with their transactions, and the one
    session lock (the retention pass's) is released by the pass, which
    terminates the connection if it cannot (and which takes a direct
    connection of its own, not a pooled one, when ``listen_dsn`` says the
    pool may go through a transaction-mode pooler). asyncpg still rolls back an open
    transaction before this runs.
    """


async def retry_until(
    operation: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    backoff: Backoff,
    retryable: Callable[[BaseException], bool],
) -> T:
    """Run *operation*, retrying *retryable* failures until *deadline* (loop time)."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            delay = backoff.delay(attempt)
            if not retryable(exc) or loop.time() + delay > deadline:
                raise
            attempt += 1
            await asyncio.sleep(delay)
