"""What a failed append means for the event (no database needed to decide)."""

from __future__ import annotations

import asyncpg
import pytest

from pgbridge import DatabaseUnavailableError, PublishOutcomeUnknownError, StreamBridgeError
from pgbridge.engine.publish import AppendRequest, _classify_append_failure
from pgbridge.exceptions import RolledBackByConflictError

ONE = AppendRequest("run", "token", "1")


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ],
)
def test_connection_lost_without_an_answer_is_an_unknown_outcome(exc: Exception) -> None:
    assert isinstance(_classify_append_failure(exc, [ONE]), PublishOutcomeUnknownError)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 11"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    ],
)
def test_refused_or_aborted_before_commit_is_retryable(exc: Exception) -> None:
    assert isinstance(_classify_append_failure(exc, [ONE]), DatabaseUnavailableError)


def test_other_server_errors_are_plain_bridge_errors() -> None:
    error = _classify_append_failure(asyncpg.exceptions.CheckViolationError("check"), [ONE])
    assert type(error) is StreamBridgeError


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
    ],
)
def test_a_batch_rolled_back_by_a_lock_conflict_is_sent_again(exc: Exception) -> None:
    error = _classify_append_failure(exc, [ONE])
    assert isinstance(error, RolledBackByConflictError) and not isinstance(error, PublishOutcomeUnknownError)
