"""Publishing inside the caller's transaction: events that commit with the application's data.

``publish_in`` and its kin (docs/transactions.md) append on the caller's own
connection, in the transaction the caller opened, with the statement a lone
group-commit batch uses (``append_events_notifying``: the append of every
publish, with seqs under the run row's lock, the hash chain and the terminal
rules, and the run's wake-up NOTIFY carrying the events, in one statement),
leaving the caller's ``lock_timeout`` alone. A run whose events are too big
to carry gets a plain NOTIFY (``notify_runs``), in the same transaction too.
PostgreSQL makes both transactional:

* on commit the events exist for readers, and the NOTIFY is delivered to
  every listening process, this one included (its own listener hears it like
  any other: :mod:`pgbridge.engine.listen` does not skip its own process's
  notifications), so subscribers everywhere are woken exactly then, and take
  the carried events without a query;
* on rollback nothing of it is left: no event, no run row, no consumed seq
  (the run row's ``last_seq`` moves back with it), no wake-up.

Nothing is offered to this process's feeds in memory, as a group-commit
publish is: the events are not committed when the call returns, and this
module never learns when (or whether) they are. The NOTIFY's WAL position
is read before the commit; a reader on a standby relies on the seq instead,
and trusts no standby answer without it (pgbridge.engine.replica).

Errors follow PostgreSQL. What is checked before anything is sent (the
payload, a terminal's kind, the connection) leaves the transaction as it
was; a refusal the statement reports (the run is terminal, a non-JSON or
gone Durable Stream) is not a PostgreSQL error either, so the transaction
stays usable. An error PostgreSQL raises aborts the transaction (every
later statement fails until it is rolled back): it comes as
:class:`TransactionAbortedError`, with the driver's error as its cause.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from pgbridge.connector import Database, is_connection_error
from pgbridge.engine.publish import AppendRequest, Refused, refusal_error
from pgbridge.exceptions import TransactionAbortedError
from pgbridge.store import wakeups
from pgbridge.store.caller import transaction_connection
from pgbridge.store.events import Appended, AppendOutcome, EventStore

#: SQLSTATEs after which running the whole transaction again may succeed: a serialization
#: failure, a deadlock, a lock wait or statement past its timeout, a cancelled statement.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})


class TransactionPublisher:
    """Appends events on a caller's connection, inside the caller's open transaction."""

    def __init__(self, db: Database, channel: str) -> None:
        self._db = db
        self._store = EventStore(db)
        self._channel = channel

    async def append(self, conn: object, requests: Sequence[AppendRequest]) -> list[Appended | None]:
        """Append *requests* (events of one run, in order) in the caller's transaction on
        *conn*, with their wake-up; None for each the run refused as terminal.

        A non-JSON or gone Durable Stream raises its refusal error (nothing of the call written).
        """
        driver = await transaction_connection(conn, self._db.queries)
        outcomes = await self._run(driver, requests)
        refused = next((o.refused for o in outcomes if o.refused in ("content_type", "gone")), None)
        if refused is not None:
            raise refusal_error(requests[0].run_id, Refused(refused))
        appended = [outcome.appended for outcome in outcomes]
        unwoken: dict[str, int | None] = {}
        for request, stored in zip(requests, appended, strict=True):
            if stored is not None and not stored.notified:  # too big to carry in its NOTIFY
                unwoken[request.run_id] = stored.seq
        if unwoken:
            await self._notify(driver, unwoken)
        return appended

    async def terminal_event(self, conn: object, run_id: str) -> Appended | None:
        """The run's terminal event as the caller's transaction sees it (its own included)."""
        driver = await transaction_connection(conn, self._db.queries)
        self._db.statements += 1
        try:
            return await self._store.terminal_event_on(driver, run_id)
        except Exception as exc:
            raise aborted(exc, f"reading run {run_id!r}'s terminal event") from exc

    async def _run(
        self, driver: asyncpg.Connection, requests: Sequence[AppendRequest]
    ) -> list[AppendOutcome]:
        self._db.statements += 1
        try:
            return await self._store.append_batch(driver, requests, notify_channel=self._channel)
        except Exception as exc:
            raise aborted(exc, f"publishing to run {requests[0].run_id!r}") from exc

    async def _notify(self, driver: asyncpg.Connection, heads: dict[str, int | None]) -> None:
        self._db.statements += 1
        try:
            await wakeups.notify_runs_on(driver, self._db.queries, self._channel, heads)
        except Exception as exc:
            raise aborted(exc, "sending the wake-up NOTIFY") from exc


def aborted(exc: BaseException, doing: str) -> TransactionAbortedError:
    """What a failure on the caller's connection means for the caller's transaction.

    Whatever failed, rolling the transaction back is right: a PostgreSQL error
    aborted it, a lost connection ended it (nothing of it committed), and a
    driver that refused to send (another operation in progress) left it with
    pgbridge's work half done.
    """
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    if isinstance(exc, asyncpg.InterfaceError) and "closed" not in str(exc):
        return TransactionAbortedError(
            f"the driver refused to send while {doing} ({exc}; is the connection used by something "
            "else at the same time?): roll your transaction back"
        )
    if isinstance(exc, TimeoutError):  # the connection's command_timeout: asyncpg cancelled it
        return TransactionAbortedError(
            f"{doing} took longer than the connection's command_timeout and was cancelled, which aborted "
            "your transaction: roll it back and run it again",
            retryable=True,
        )
    if is_connection_error(exc) and sqlstate != "57014":  # a cancelled statement leaves the session
        return TransactionAbortedError(
            f"the connection failed while {doing} ({exc}): your transaction is over and nothing of it "
            "was committed; run it again on a new connection",
            sqlstate=sqlstate,
            retryable=True,
        )
    if sqlstate == "25P02":
        return TransactionAbortedError(
            f"your transaction was already aborted by an earlier error, so {doing} failed: roll it back",
            sqlstate=sqlstate,
        )
    retryable = sqlstate in RETRYABLE_SQLSTATES
    advice = "roll it back and run it again" if retryable else "roll it back"
    return TransactionAbortedError(
        f"PostgreSQL aborted your transaction while {doing} ({sqlstate or type(exc).__name__}: {exc}): "
        f"{advice}; nothing of it will be stored",
        sqlstate=sqlstate,
        retryable=retryable,
    )
