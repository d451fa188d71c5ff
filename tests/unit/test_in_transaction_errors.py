"""What an error on the caller's connection during publish_in tells the caller (docs/transactions.md):
the transaction is aborted, and whether running it again may succeed. No database needed."""

from __future__ import annotations

import asyncpg
import pytest

from pgbridge import TransactionAbortedError
from pgbridge.engine.in_transaction import aborted


@pytest.mark.parametrize(
    ("exc", "sqlstate"),
    [
        (asyncpg.exceptions.SerializationError("could not serialize access"), "40001"),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), "40P01"),
        (asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout"), "55P03"),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), "57014"),
    ],
)
def test_a_conflict_or_a_timeout_aborts_the_transaction_and_may_be_retried(
    exc: Exception, sqlstate: str
) -> None:
    error = aborted(exc, "publishing")
    assert isinstance(error, TransactionAbortedError)
    assert (error.sqlstate, error.retryable) == (sqlstate, True)
    assert "roll it back and run it again" in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionResetError("reset by peer"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    ],
)
def test_a_lost_connection_ends_the_transaction_and_may_be_retried_on_a_new_one(exc: Exception) -> None:
    error = aborted(exc, "publishing")
    assert error.retryable and "nothing of it was committed" in str(error)


def test_a_transaction_already_aborted_says_so_and_is_not_retryable_as_it_is() -> None:
    error = aborted(
        asyncpg.exceptions.InFailedSQLTransactionError("current transaction is aborted"), "publishing"
    )
    assert (error.sqlstate, error.retryable) == ("25P02", False)
    assert "already aborted" in str(error)


def test_another_server_error_aborts_it_and_is_not_retryable() -> None:
    error = aborted(asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), "publishing")
    assert (error.sqlstate, error.retryable) == ("42501", False)
    assert "roll it back;" in str(error)


def test_a_driver_that_refused_to_send_asks_for_a_rollback() -> None:
    error = aborted(asyncpg.InterfaceError("cannot perform operation: another operation is in progress"), "x")
    assert not error.retryable and "roll your transaction back" in str(error)


def test_a_statement_past_the_connections_command_timeout_aborts_it_and_may_be_retried() -> None:
    error = aborted(TimeoutError(), "publishing")
    assert error.retryable and "command_timeout" in str(error) and "connection failed" not in str(error)
