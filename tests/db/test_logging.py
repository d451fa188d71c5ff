"""Structured logging: ``pgbridge.<module>`` loggers, records about a run carry its ``run_id``.

Driven through a real bridge on a real PostgreSQL, read back with pytest's
``caplog``; ages are made by backdating rows, not by sleeping.
"""

from __future__ import annotations

import logging

import pytest

from pgbridge import GAP_EVENT, PostgresStreamBridge, PublishOutcomeUnknownError, RetentionPolicy
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, take, wait_until
from tests.support.sql_helpers import backdate_run, connected, terminate_backends

#: Retention with every rule off; a test switches on the one it exercises.
NOTHING = RetentionPolicy(ended_run_ttl=None, tombstone_ttl=None)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="pgbridge")
    return caplog


def about(logs: pytest.LogCaptureFixture, run_id: str, logger: str) -> list[logging.LogRecord]:
    """The records *logger* wrote about *run_id*."""
    return [r for r in logs.records if r.name == logger and getattr(r, "run_id", None) == run_id]


async def test_a_committed_terminal_event_is_logged_at_info_with_its_run_id(
    bridge: PostgresStreamBridge, logs: pytest.LogCaptureFixture
) -> None:
    event_id = await bridge.publish_end("run-7")
    (record,) = about(logs, "run-7", "pgbridge.engine.publish")
    assert record.levelno == logging.INFO
    assert (record.event_id, record.status) == (event_id, "ended")  # type: ignore[attr-defined]


async def test_publishing_ordinary_events_logs_nothing_at_info_or_above(
    bridge: PostgresStreamBridge, logs: pytest.LogCaptureFixture
) -> None:
    await bridge.publish("run", "token", 0)
    await bridge.publish_many("run", [("token", i) for i in range(1, 50)])
    assert [r for r in logs.records if r.name.startswith("pgbridge") and r.levelno >= logging.INFO] == []


async def test_a_failed_publish_is_logged_at_warning_with_its_run_id(
    make_bridge: BridgeFactory, dsn: str, logs: pytest.LogCaptureFixture
) -> None:
    # publish_lock_wait=0: the batch waits behind the row lock until command_timeout (by
    # default it would give up waiting and be told nothing was written: docs/transactions.md).
    bridge = await make_bridge(command_timeout=1.0, publish_lock_wait=0)
    await bridge.publish("run-9", "token", 1)
    async with connected(dsn) as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM run_streams WHERE run_id = 'run-9' FOR UPDATE")
        with pytest.raises(PublishOutcomeUnknownError):
            await bridge.publish("run-9", "token", 2)  # times out behind the row lock
    (record,) = about(logs, "run-9", "pgbridge.engine.publish")
    assert record.levelno == logging.WARNING
    assert record.reason == "outcome_unknown"  # type: ignore[attr-defined]


async def test_subscriber_start_and_end_are_logged_at_debug_with_the_run_id(
    bridge: PostgresStreamBridge, logs: pytest.LogCaptureFixture
) -> None:
    first = await bridge.publish("run-3", "token", 1)
    end = await bridge.publish_end("run-3")
    await collect(bridge.subscribe("run-3", last_event_id=first))
    started, ended = about(logs, "run-3", "pgbridge.engine.subscribe")
    assert [started.levelno, ended.levelno] == [logging.DEBUG, logging.DEBUG]
    assert [started.last_event_id, ended.last_event_id] == [first, end]  # type: ignore[attr-defined]


async def test_a_gap_marker_is_logged_at_info_with_the_run_id_and_the_count(
    bridge: PostgresStreamBridge, logs: pytest.LogCaptureFixture
) -> None:
    ids = await bridge.publish_many("run-5", [("token", i) for i in range(5)])
    await bridge.run_retention(RetentionPolicy(max_events_per_run=2, ended_run_ttl=None))
    (marker,) = await take(bridge.subscribe("run-5", last_event_id=ids[0]), 1)
    assert marker.event == GAP_EVENT
    gaps = [r for r in about(logs, "run-5", "pgbridge.engine.subscribe") if r.levelno == logging.INFO]
    assert [(r.gap_count, r.requested_event_id) for r in gaps] == [(2, ids[0])]  # type: ignore[attr-defined]


async def test_a_dead_lettered_run_is_logged_at_warning_with_its_run_id(
    bridge: PostgresStreamBridge, dsn: str, logs: pytest.LogCaptureFixture
) -> None:
    await bridge.publish("run-4", "token", 1)
    await backdate_run(dsn, "run-4", 601)
    await bridge.run_retention(NOTHING)
    (record,) = about(logs, "run-4", "pgbridge.retention.sweep")
    assert record.levelno == logging.WARNING


async def test_a_retention_pass_that_deleted_something_is_summarised_at_info(
    bridge: PostgresStreamBridge, logs: pytest.LogCaptureFixture
) -> None:
    await bridge.publish_many("run", [("token", i) for i in range(5)])
    await bridge.run_retention(RetentionPolicy(max_events_per_run=2, ended_run_ttl=None))
    (summary,) = [r for r in logs.records if r.name == "pgbridge.retention.sweep"]
    assert summary.levelno == logging.INFO
    assert summary.events_deleted == 3  # type: ignore[attr-defined]


async def test_a_retention_pass_with_nothing_to_do_is_summarised_at_debug(
    bridge: PostgresStreamBridge, logs: pytest.LogCaptureFixture
) -> None:
    await bridge.run_retention(NOTHING)
    (summary,) = [r for r in logs.records if r.name == "pgbridge.retention.sweep"]
    assert summary.levelno == logging.DEBUG


async def test_a_lost_listener_connection_is_logged_at_warning_then_its_return_at_info(
    bridge: PostgresStreamBridge, dsn: str, logs: pytest.LogCaptureFixture
) -> None:
    assert await terminate_backends(dsn) >= 1
    await wait_until(lambda: bridge.listener_reconnects >= 1, timeout=30)
    levels = [r.levelno for r in logs.records if r.name == "pgbridge.engine.listen"]
    assert levels[0] == logging.WARNING and levels[-1] == logging.INFO
