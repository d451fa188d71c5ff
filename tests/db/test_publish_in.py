"""Publishing inside the caller's transaction (docs/transactions.md, docs/behaviour.md §5).

Events written with ``publish_in`` exist for readers, and wake subscribers in
every process, only when the caller commits; a rollback leaves no event, no
run row, no consumed seq and no wake-up. Checks and refusals are
``publish``'s; PostgreSQL's own errors abort the transaction, as PostgreSQL
does. The paths: an asyncpg connection, a SQLAlchemy AsyncConnection, an
AsyncSession. Concurrency is in test_publish_in_concurrency.py.

The bridges here poll once an hour, so a subscriber that gets an event got
it from the commit's NOTIFY, not from the safety-net poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from pgbridge import (
    HEARTBEAT_SENTINEL,
    InvalidEventError,
    PostgresStreamBridge,
    StreamEvent,
    StreamStatus,
    StreamTerminatedError,
    TransactionAbortedError,
    TransactionRequiredError,
)
from pgbridge.engine.listen import decode_wake
from pgbridge.sql.queries import notify_channel
from tests.conftest import BridgeFactory
from tests.support.cli import cli
from tests.support.helpers import collect, seq_of, take
from tests.support.sql_helpers import connected

RUN = "run-in"
#: A wake-up payload for a run no test reads: sent last, it marks the end of what a listener heard.
MARKER = "1@0/0 marker-run"

APP_TABLE = "CREATE TABLE IF NOT EXISTS tool_calls (id text PRIMARY KEY, result text NOT NULL)"


@pytest_asyncio.fixture
async def quiet(make_bridge: BridgeFactory) -> PostgresStreamBridge:
    """A bridge whose subscribers are woken only by NOTIFYs (no poll in the test's time)."""
    return await make_bridge(poll_interval=3600)


@pytest_asyncio.fixture
async def app_conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """The application's own asyncpg connection, with its own table."""
    async with connected(dsn) as conn:
        await conn.execute(APP_TABLE)
        yield conn


@pytest_asyncio.fixture
async def engine(dsn: str) -> AsyncIterator[AsyncEngine]:
    """A SQLAlchemy engine on the asyncpg driver, as most applications have."""
    made = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    async with made.begin() as conn:
        await conn.exec_driver_sql(APP_TABLE)
    yield made
    await made.dispose()


async def stored(dsn: str, run_id: str = RUN) -> tuple[list[tuple[int, str]], int | None]:
    """The run's stored (seq, event) pairs and its last_seq (None: no row), as pgbridge reads it
    (pgbridge_run_head: appends leave the run row behind its newest event, revision 0012)."""
    async with connected(dsn) as conn:
        rows = await conn.fetch("SELECT seq, event FROM run_events WHERE run_id = $1 ORDER BY seq", run_id)
        last_seq = await conn.fetchval(
            "SELECT h.last_seq FROM run_streams AS r CROSS JOIN LATERAL "
            "pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h WHERE r.run_id = $1",
            run_id,
        )
    return [(row["seq"], row["event"]) for row in rows], last_seq


async def tool_call_ids(dsn: str) -> list[str]:
    async with connected(dsn) as conn:
        return [row["id"] for row in await conn.fetch("SELECT id FROM tool_calls ORDER BY id")]


async def live(bridge: PostgresStreamBridge, run_id: str = RUN) -> AsyncIterator[StreamEvent]:
    """A subscription past its start read, waiting for live events: what it gets next it
    can only get from a wake-up (the bridges here do not poll)."""
    stream = bridge.subscribe(run_id, heartbeat_interval=0.05)
    assert await asyncio.wait_for(anext(stream), 10) == HEARTBEAT_SENTINEL  # the start read is done
    return stream


async def heard_before_marker(dsn: str, sender: asyncpg.Connection, action: object) -> list[str]:
    """The wake-up payloads a plain LISTEN connection hears on the bridge channel from
    *action* (an awaitable), up to a marker NOTIFY sent after it (delivered in commit order)."""
    heard: list[str] = []
    done = asyncio.Event()

    def on_notify(*args: object) -> None:
        payload = str(args[3])
        if payload == MARKER:
            done.set()
        else:
            heard.append(payload)

    async with connected(dsn) as listener:
        await listener.add_listener(notify_channel("public"), on_notify)
        await action  # type: ignore[misc]
        await sender.execute("SELECT pg_notify($1, $2)", notify_channel("public"), MARKER)
        await asyncio.wait_for(done.wait(), 10)
    return heard


# -- commit and rollback ------------------------------------------------------------


async def test_a_committed_event_reaches_subscribers_in_this_bridge_and_another(
    quiet: PostgresStreamBridge, make_bridge: BridgeFactory, app_conn: asyncpg.Connection, dsn: str
) -> None:
    other = await make_bridge(poll_interval=3600)
    here_stream, there_stream = await live(quiet), await live(other)
    async with app_conn.transaction():
        await app_conn.execute("INSERT INTO tool_calls VALUES ('call-1', 'ok')")
        event_id = await quiet.publish_in(app_conn, RUN, "tool_result", {"call": "call-1"})
    for stream in (here_stream, there_stream):
        (event,) = await take(stream, 1)
        assert (event.id, event.event, event.data) == (event_id, "tool_result", {"call": "call-1"})
    assert seq_of(event_id) == 1
    assert await tool_call_ids(dsn) == ["call-1"]


async def test_a_rollback_leaves_no_event_no_run_row_and_no_consumed_seq(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    transaction = app_conn.transaction()
    await transaction.start()
    await app_conn.execute("INSERT INTO tool_calls VALUES ('call-1', 'ok')")
    assert seq_of(await quiet.publish_in(app_conn, RUN, "tool_result", {"n": 1})) == 1
    await transaction.rollback()
    assert await stored(dsn) == ([], None)
    assert await quiet.run_info(RUN) is None
    assert seq_of(await quiet.publish(RUN, "token", {"n": 2})) == 1  # the seq it would have had


async def test_a_rollback_on_an_existing_run_consumes_no_seq(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    await quiet.publish_many(RUN, [("token", {"n": n}) for n in range(3)])
    transaction = app_conn.transaction()
    await transaction.start()
    assert seq_of(await quiet.publish_in(app_conn, RUN, "tool_result", {})) == 4
    await transaction.rollback()
    assert seq_of(await quiet.publish(RUN, "token", {"n": 3})) == 4
    assert await stored(dsn) == ([(1, "token"), (2, "token"), (3, "token"), (4, "token")], 4)


async def test_a_rollback_wakes_no_process_and_a_commit_wakes_them_at_commit(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    async def rolled_back() -> None:
        transaction = app_conn.transaction()
        await transaction.start()
        await quiet.publish_in(app_conn, RUN, "tool_result", {})
        await transaction.rollback()

    async def committed() -> None:
        async with app_conn.transaction():
            await quiet.publish_in(app_conn, RUN, "tool_result", {})

    async with connected(dsn) as sender:
        assert await heard_before_marker(dsn, sender, rolled_back()) == []
        heard = await heard_before_marker(dsn, sender, committed())
    # One wake-up, carrying the event (a feed that holds the seqs before takes it without a query).
    assert [(wake.run_id, wake.seq, len(wake.events)) for wake in map(decode_wake, heard)] == [(RUN, 1, 1)]


async def test_an_event_too_big_to_ride_in_its_wake_up_still_wakes_at_commit_and_only_then(
    quiet: PostgresStreamBridge, make_bridge: BridgeFactory, app_conn: asyncpg.Connection, dsn: str
) -> None:
    """A wake-up carries the events when they fit in a NOTIFY payload (8,000 bytes); a bigger
    one gets a plain wake-up, sent in the caller's transaction too."""
    big = {"text": "x" * 20_000}
    stream = await live(await make_bridge(poll_interval=3600))

    async def rolled_back() -> None:
        transaction = app_conn.transaction()
        await transaction.start()
        await quiet.publish_in(app_conn, RUN, "big", big)
        await transaction.rollback()

    async def committed() -> None:
        async with app_conn.transaction():
            await quiet.publish_in(app_conn, RUN, "big", big)

    async with connected(dsn) as sender:
        assert await heard_before_marker(dsn, sender, rolled_back()) == []
        heard = await heard_before_marker(dsn, sender, committed())
    assert [(wake.run_id, wake.seq, wake.events) for wake in map(decode_wake, heard)] == [(RUN, 1, ())]
    (event,) = await take(stream, 1)
    assert (event.event, event.data) == ("big", big)


async def test_a_savepoint_rolled_back_to_takes_its_events_and_wake_ups_with_it(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    async def with_a_savepoint() -> None:
        async with app_conn.transaction():
            await quiet.publish_in(app_conn, RUN, "kept", {})
            savepoint = app_conn.transaction()
            await savepoint.start()
            await quiet.publish_many_in(app_conn, RUN, [("undone", {}), ("undone", {})])  # wakes "3 ..."
            await savepoint.rollback()
            assert seq_of(await quiet.publish_in(app_conn, RUN, "after", {})) == 2

    async with connected(dsn) as sender:
        heard = await heard_before_marker(dsn, sender, with_a_savepoint())
    assert await stored(dsn) == ([(1, "kept"), (2, "after")], 2)
    assert sorted(decode_wake(payload).seq or 0 for payload in heard) == [1, 2]


async def test_a_subscriber_of_the_publishing_bridge_never_sees_a_rolled_back_event(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection
) -> None:
    stream = await live(quiet)
    transaction = app_conn.transaction()
    await transaction.start()
    await quiet.publish_in(app_conn, RUN, "rolled_back", {})
    await transaction.rollback()
    kept = await quiet.publish(RUN, "kept", {})
    (event,) = await take(stream, 1)
    assert (event.id, event.event) == (kept, "kept")


async def test_the_event_is_invisible_to_readers_until_the_commit(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection
) -> None:
    async with app_conn.transaction():
        event_id = await quiet.publish_in(app_conn, RUN, "tool_result", {})
        assert await quiet.run_info(RUN) is None
    info = await quiet.run_info(RUN)
    assert info is not None and info.last_event_id == event_id


# -- the connections it takes -----------------------------------------------------


async def test_the_callers_own_settings_are_left_as_they_were(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection
) -> None:
    """The group commit bounds its lock waits with a transaction-local lock_timeout; the
    caller's transaction must keep its own."""
    async with app_conn.transaction():
        await app_conn.execute("SET LOCAL lock_timeout = '7s'")
        await quiet.publish_in(app_conn, RUN, "tool_result", {})
        await quiet.publish_terminal_in(app_conn, RUN, StreamStatus.ENDED)
        assert await app_conn.fetchval("SHOW lock_timeout") == "7s"


async def test_a_pooled_asyncpg_connection_works(quiet: PostgresStreamBridge, dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await quiet.publish_in(conn, RUN, "tool_result", {"n": 1})
    finally:
        await pool.close()
    assert await stored(dsn) == ([(1, "tool_result")], 1)


async def test_a_sqlalchemy_async_connection_commits_and_rolls_back_with_its_rows(
    quiet: PostgresStreamBridge, engine: AsyncEngine, dsn: str
) -> None:
    stream = await live(quiet)
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO tool_calls VALUES ('call-1', 'ok')"))
        event_id = await quiet.publish_in(conn, RUN, "tool_result", {"call": "call-1"})
    (event,) = await take(stream, 1)
    assert event.id == event_id
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO tool_calls VALUES ('call-2', 'ok')"))
            await quiet.publish_in(conn, RUN, "tool_result", {"call": "call-2"})
            raise RuntimeError("the application fails before its commit")
    assert await tool_call_ids(dsn) == ["call-1"]
    assert await stored(dsn) == ([(1, "tool_result")], 1)


async def test_a_sqlalchemy_async_session_commits_and_rolls_back_with_its_rows(
    quiet: PostgresStreamBridge, engine: AsyncEngine, dsn: str
) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(sa.text("INSERT INTO tool_calls VALUES ('call-1', 'ok')"))
        await quiet.publish_in(session, RUN, "tool_result", {"call": "call-1"})
    async with AsyncSession(engine) as session, session.begin():
        await quiet.publish_many_in(session, RUN, [("a", {}), ("b", {})])
        await session.execute(sa.text("INSERT INTO tool_calls VALUES ('call-2', 'ok')"))
        await session.rollback()
    assert await tool_call_ids(dsn) == ["call-1"]
    assert await stored(dsn) == ([(1, "tool_result")], 1)


async def test_a_sqlalchemy_transaction_not_begun_on_the_driver_yet_is_begun_first(
    quiet: PostgresStreamBridge, engine: AsyncEngine, dsn: str
) -> None:
    """SQLAlchemy begins on the driver at its first statement: publish_in as the first one
    must not run in autocommit (it would be committed whatever the caller does next)."""
    async with engine.connect() as conn:
        await quiet.publish_in(conn, RUN, "tool_result", {})
        await conn.rollback()
    async with AsyncSession(engine) as session:
        await quiet.publish_in(session, RUN, "tool_result", {})
        await session.rollback()
    assert await stored(dsn) == ([], None)


async def test_a_connection_outside_a_transaction_is_refused_and_nothing_is_written(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, engine: AsyncEngine, dsn: str
) -> None:
    with pytest.raises(TransactionRequiredError, match="not inside a transaction"):
        await quiet.publish_in(app_conn, RUN, "tool_result", {})
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(TransactionRequiredError, match="not inside a transaction"):
            await quiet.publish_in(autocommit, RUN, "tool_result", {})
    with pytest.raises(TransactionRequiredError, match="asyncpg Connection"):
        await quiet.publish_in(object(), RUN, "tool_result", {})
    closed = await asyncpg.connect(dsn)
    await closed.close()
    with pytest.raises(TransactionRequiredError, match="closed"):
        await quiet.publish_in(closed, RUN, "tool_result", {})
    assert isinstance(TransactionRequiredError("x"), InvalidEventError)
    assert await stored(dsn) == ([], None)


# -- refusals and terminal rules --------------------------------------------------


async def test_bad_input_is_refused_before_anything_is_sent_and_the_transaction_goes_on(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    async with app_conn.transaction():
        await app_conn.execute("INSERT INTO tool_calls VALUES ('call-1', 'ok')")
        with pytest.raises(InvalidEventError):
            await quiet.publish_in(app_conn, RUN, "tool_result", {"x": float("nan")})
        with pytest.raises(InvalidEventError):
            await quiet.publish_in(app_conn, "", "tool_result", {})
        with pytest.raises(InvalidEventError):
            await quiet.publish_many_in(app_conn, RUN, [("ok", {}), ("bad", {"x": float("inf")})])
        with pytest.raises(InvalidEventError):
            await quiet.publish_terminal_in(app_conn, RUN, "finished")
        await app_conn.execute("INSERT INTO tool_calls VALUES ('call-2', 'ok')")
    assert await tool_call_ids(dsn) == ["call-1", "call-2"]
    assert await stored(dsn) == ([], None)


async def test_a_terminal_event_ends_the_run_when_the_transaction_commits(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection
) -> None:
    await quiet.publish(RUN, "token", {})
    stream = quiet.subscribe(RUN)
    async with app_conn.transaction():
        await quiet.publish_in(app_conn, RUN, "tool_result", {})
        end_id = await quiet.publish_terminal_in(app_conn, RUN, StreamStatus.ENDED, {"tokens": 1})
        info = await quiet.run_info(RUN)
        assert info is not None and info.status == "active"
    events = await collect(stream)
    assert [e.event for e in events] == ["token", "tool_result", "end"]
    assert events[2].id == end_id
    info = await quiet.run_info(RUN)
    assert info is not None and info.status == "ended"


async def test_publishing_to_a_terminal_run_is_refused_and_the_transaction_stays_usable(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    await quiet.publish(RUN, "token", {})
    await quiet.publish_end(RUN)
    async with app_conn.transaction():
        await app_conn.execute("INSERT INTO tool_calls VALUES ('call-1', 'ok')")
        with pytest.raises(StreamTerminatedError, match="still usable"):
            await quiet.publish_in(app_conn, RUN, "tool_result", {})
        await app_conn.execute("INSERT INTO tool_calls VALUES ('call-2', 'ok')")
    assert await tool_call_ids(dsn) == ["call-1", "call-2"]
    assert await stored(dsn) == ([(1, "token"), (2, "end")], 2)


async def test_the_first_terminal_wins_inside_a_transaction_too(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection
) -> None:
    ended = await quiet.publish_terminal(RUN, StreamStatus.ENDED)
    async with app_conn.transaction():
        assert await quiet.publish_terminal_in(app_conn, RUN, StreamStatus.ERRORED) == ended
    other = "run-in-2"
    async with app_conn.transaction():
        cancelled = await quiet.publish_terminal_in(app_conn, other, StreamStatus.CANCELLED)
        assert await quiet.publish_terminal_in(app_conn, other, StreamStatus.ENDED) == cancelled
    info = await quiet.run_info(other)
    assert info is not None and (info.status, info.terminal_event_id) == ("cancelled", cancelled)


async def test_publish_many_in_stops_at_the_terminal_and_says_what_it_wrote(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    async with app_conn.transaction():
        await quiet.publish_many_in(app_conn, RUN, [("a", {}), ("b", {})])
        await quiet.publish_terminal_in(app_conn, RUN, StreamStatus.ENDED)
        with pytest.raises(StreamTerminatedError, match="0 of 1 events were written in your transaction"):
            await quiet.publish_many_in(app_conn, RUN, [("c", {})])
    assert await stored(dsn) == ([(1, "a"), (2, "b"), (3, "end")], 3)


# -- errors PostgreSQL raises -----------------------------------------------------


async def test_a_serialization_failure_aborts_the_transaction_and_says_it_may_be_retried(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    await quiet.publish(RUN, "token", {})
    transaction = app_conn.transaction(isolation="repeatable_read")
    await transaction.start()
    await app_conn.execute("INSERT INTO tool_calls VALUES ('call-1', 'ok')")  # the snapshot is taken
    await quiet.publish(RUN, "token", {})  # committed after it
    with pytest.raises(TransactionAbortedError) as raised:
        await quiet.publish_in(app_conn, RUN, "tool_result", {})
    assert (raised.value.sqlstate, raised.value.retryable) == ("40001", True)
    assert isinstance(raised.value.__cause__, asyncpg.SerializationError)
    with pytest.raises(asyncpg.InFailedSQLTransactionError):
        await app_conn.execute("INSERT INTO tool_calls VALUES ('call-2', 'ok')")
    await transaction.rollback()
    assert await tool_call_ids(dsn) == []
    assert await stored(dsn) == ([(1, "token"), (2, "token")], 2)


async def test_a_transaction_an_earlier_error_aborted_is_reported_as_such(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    transaction = app_conn.transaction()
    await transaction.start()
    with pytest.raises(asyncpg.DivisionByZeroError):
        await app_conn.execute("SELECT 1 / 0")
    with pytest.raises(TransactionAbortedError, match="already aborted") as raised:
        await quiet.publish_in(app_conn, RUN, "tool_result", {})
    assert (raised.value.sqlstate, raised.value.retryable) == ("25P02", False)
    await transaction.rollback()
    assert await stored(dsn) == ([], None)


# -- the audit chain, the schema ----------------------------------------------------


async def test_the_hash_chain_verifies_over_events_published_in_transactions(
    quiet: PostgresStreamBridge, app_conn: asyncpg.Connection, dsn: str
) -> None:
    await quiet.publish(RUN, "token", {"n": 0})
    async with app_conn.transaction():
        await quiet.publish_many_in(app_conn, RUN, [("tool_result", {"n": 1}), ("token", {"n": 2})])
    transaction = app_conn.transaction()
    await transaction.start()
    await quiet.publish_in(app_conn, RUN, "rolled_back", {"n": 9})
    await transaction.rollback()
    await quiet.publish(RUN, "token", {"n": 3})
    async with app_conn.transaction():
        await quiet.publish_terminal_in(app_conn, RUN, StreamStatus.ENDED, {"n": 4})
    report = await quiet.verify(RUN)
    assert (report.ok, report.events_checked) == (True, 5)
    code, out, err = await cli("verify", "--dsn", dsn, RUN)
    assert code == 0, out + err


async def test_a_bridge_on_another_schema_publishes_in_that_schema_and_wakes_its_channel(
    dsn: str, app_conn: asyncpg.Connection
) -> None:
    from pgbridge import migrate

    await migrate(dsn, schema="tenant two")
    async with PostgresStreamBridge(dsn, schema="tenant two", poll_interval=3600) as tenant:
        stream = await live(tenant)
        async with app_conn.transaction():
            event_id = await tenant.publish_in(app_conn, RUN, "tool_result", {})
        (event,) = await take(stream, 1)
        assert event.id == event_id
    assert await stored(dsn) == ([], None)
    async with connected(dsn) as conn:
        assert await conn.fetchval('SELECT count(*) FROM "tenant two".run_events WHERE run_id = $1', RUN) == 1
