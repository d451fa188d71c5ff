"""Appending events: one statement per event, answered only after commit.

The append bumps the run's ``last_seq`` under its row lock and inserts the
event in the same statement (see :mod:`pgbridge.queries`), so concurrent
publishers of one run, in any number of processes, get distinct consecutive
seqs in commit order. After the commit the event is handed to the local feed
(same-process subscribers) and to the notifier (other processes).

Failure rule: if no connection can be had, nothing was sent, and the append
is retried until ``publish_retry_timeout``; if the connection is lost while
the statement is in flight, the outcome is unknown and
:class:`PublishOutcomeUnknownError` says so. A publish is never reported as
written when it was not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from pgbridge.database import Backoff, Database, is_connection_error, retry_until
from pgbridge.errors import (
    DatabaseUnavailableError,
    PublishOutcomeUnknownError,
    StreamBridgeError,
)
from pgbridge.store import Appended

CommitCallback = Callable[[str, Appended, str, str, bool], None]


class Publisher:
    """Writes events and reports each commit to *on_commit*."""

    def __init__(
        self,
        db: Database,
        *,
        on_commit: CommitCallback,
        retry_timeout: float,
        backoff: Backoff | None = None,
    ) -> None:
        self._db = db
        self._on_commit = on_commit
        self._retry_timeout = retry_timeout
        self._backoff = backoff or Backoff()

    async def append(
        self, run_id: str, event: str, data_text: str, *, terminal: bool, status: str
    ) -> Appended | None:
        """Append one event; None when the run already has its terminal event."""
        deadline = asyncio.get_running_loop().time() + self._retry_timeout
        appended = await retry_until(
            lambda: self._append_once(run_id, event, data_text, terminal, status),
            deadline=deadline,
            backoff=self._backoff,
            retryable=lambda exc: isinstance(exc, DatabaseUnavailableError),
        )
        if appended is not None:
            self._on_commit(run_id, appended, event, data_text, terminal)
        return appended

    async def _append_once(
        self, run_id: str, event: str, data_text: str, terminal: bool, status: str
    ) -> Appended | None:
        async with self._db.connection() as conn:
            try:
                row = await conn.fetchrow(
                    self._db.queries.append_event, run_id, event, data_text, terminal, status
                )
            except Exception as exc:
                raise _classify_append_failure(exc, run_id, event) from exc
        if row is None:
            return None
        return Appended(seq=row["seq"], ms=row["created_ms"])

    async def terminal_event(self, run_id: str) -> Appended | None:
        """The committed terminal event of *run_id*, if it has one."""
        rows = await self._db.fetch(self._db.queries.terminal_event_of_run, run_id)
        if not rows:
            return None
        return Appended(seq=rows[0]["terminal_seq"], ms=rows[0]["last_ms"])


def _classify_append_failure(exc: Exception, run_id: str, event: str) -> StreamBridgeError:
    """What an append failure means for the event: not written, or unknown.

    * The driver refused before sending (closed or busy connection): not
      written, retryable.
    * The server answered the statement with a connection-class error (57P01
      admin shutdown, ...): it aborted the statement, so not written,
      retryable.
    * The connection vanished with no answer (or timed out): the commit may
      or may not have happened.
    """
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | OSError | TimeoutError):
        return PublishOutcomeUnknownError(
            f"the connection to PostgreSQL was lost while publishing {event!r} to run {run_id!r}; "
            f"the event may or may not be stored: read the run before publishing it again ({exc})"
        )
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return DatabaseUnavailableError(f"connection unusable before publishing: {exc}")
    if is_connection_error(exc):
        return DatabaseUnavailableError(f"PostgreSQL refused the append: {exc}")
    return StreamBridgeError(f"publishing to run {run_id!r} failed: {exc}")
