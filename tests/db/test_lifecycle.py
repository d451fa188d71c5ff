"""Bridge lifecycle (docs/behaviour.md sections 1, 6, 7 and 11) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import pytest_asyncio

from pgbridge import (
    BridgeClosedError,
    BridgeNotStartedError,
    ConfigurationError,
    DatabaseUnavailableError,
    PostgresStreamBridge,
    SchemaNotMigratedError,
    StreamBridgeError,
    StreamStatus,
)
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, take
from tests.support.postgres_server import DatabaseFactory, with_database
from tests.support.sql_helpers import connection_count, run_row, table_contents

#: Nothing listens on port 1: connecting is refused at once.
NOWHERE = "postgresql://postgres@127.0.0.1:1/x"

Call = Callable[[PostgresStreamBridge], Awaitable[object]]

#: Every method but subscribe (which raises at its first read), with good arguments.
CALLS: dict[str, Call] = {
    "publish": lambda b: b.publish("run", "token", 1),
    "publish_end": lambda b: b.publish_end("run"),
    "publish_terminal": lambda b: b.publish_terminal("run", StreamStatus.ERRORED),
    "cancel": lambda b: b.cancel("run"),
    "resolve": lambda b: b.resolve("run", None),
    "mark_awaiting_input": lambda b: b.mark_awaiting_input("run"),
    "cleanup": lambda b: b.cleanup("run"),
}


async def wait_for_connections(dsn: str, expected: int, *, timeout: float = 10.0) -> int:
    """Poll until *dsn* has *expected* other connections (backends exit asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        count = await connection_count(dsn)
        if count == expected or loop.time() > deadline:
            return count
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def empty_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    """A database of its own that was never migrated."""
    url = await databases.create_empty()
    yield url
    await databases.drop(url)


# -- start and close ----------------------------------------------------------


async def test_start_twice_is_a_no_op(make_bridge: BridgeFactory, dsn: str) -> None:
    bridge = await make_bridge()
    before = await connection_count(dsn)
    await bridge.start()
    assert await connection_count(dsn) == before  # no second pool or listener
    assert await bridge.publish("run", "token", 1)


async def test_concurrent_starts_open_one_pool_and_one_listener(dsn: str) -> None:
    bridge = PostgresStreamBridge(dsn)
    try:
        await asyncio.gather(bridge.start(), bridge.start())
        # pool_min_size (1) plus the listener; nothing was opened twice.
        assert await connection_count(dsn) == bridge.options.pool_min_size + 1
        assert await bridge.publish("run", "token", 1)
    finally:
        await bridge.close()


async def test_close_twice_is_a_no_op(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await bridge.close()
    await bridge.close()


async def test_close_of_a_never_started_bridge_is_a_no_op() -> None:
    bridge = PostgresStreamBridge(NOWHERE)
    await bridge.close()
    await bridge.close()


async def test_close_releases_every_connection(dsn: str) -> None:
    bridge = PostgresStreamBridge(dsn)
    await bridge.start()
    await bridge.publish("run", "token", 1)
    assert await connection_count(dsn) >= 2
    await bridge.close()
    assert await wait_for_connections(dsn, 0) == 0


async def test_async_with_starts_and_closes_the_bridge(dsn: str) -> None:
    async with PostgresStreamBridge(dsn) as bridge:
        event_id = await bridge.publish("run", "token", {"hello": "world"})
        assert (await bridge.resolve("run", event_id)).status == "resumed"
    with pytest.raises(BridgeClosedError):
        await bridge.publish("run", "token", 2)
    assert await wait_for_connections(dsn, 0) == 0


async def test_async_with_closes_the_bridge_when_the_body_raises(dsn: str) -> None:
    with pytest.raises(RuntimeError, match="body failed"):
        async with PostgresStreamBridge(dsn) as bridge:
            await bridge.publish("run", "token", 1)
            raise RuntimeError("body failed")
    with pytest.raises(BridgeClosedError):
        await bridge.publish("run", "token", 2)


async def test_start_after_close_raises_bridge_closed(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await bridge.close()
    with pytest.raises(BridgeClosedError):
        await bridge.start()


async def test_start_after_close_of_a_never_started_bridge_raises_bridge_closed(dsn: str) -> None:
    bridge = PostgresStreamBridge(dsn)
    await bridge.close()
    with pytest.raises(BridgeClosedError):
        await bridge.start()


async def test_constructing_a_bridge_connects_nothing(dsn: str) -> None:
    PostgresStreamBridge(dsn)
    assert await connection_count(dsn) == 0


# -- calls outside start() .. close() -------------------------------------------


@pytest.mark.parametrize("name", list(CALLS))
async def test_call_before_start_raises_not_started_naming_start_and_async_with(name: str) -> None:
    bridge = PostgresStreamBridge(NOWHERE)
    with pytest.raises(StreamBridgeError) as caught:
        await CALLS[name](bridge)
    assert isinstance(caught.value, BridgeNotStartedError)
    message = str(caught.value)
    assert "start()" in message
    assert "async with" in message


async def test_subscribe_before_start_raises_not_started_at_first_read() -> None:
    bridge = PostgresStreamBridge(NOWHERE)
    stream = bridge.subscribe("run")
    with pytest.raises(BridgeNotStartedError, match=r"start\(\)"):
        await anext(stream)


async def test_publish_after_close_raises_bridge_closed(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await bridge.publish("run", "token", 1)
    await bridge.close()
    with pytest.raises(BridgeClosedError):
        await bridge.publish("run", "token", 2)


@pytest.mark.parametrize("name", list(CALLS))
async def test_any_call_after_close_raises_bridge_closed(
    make_bridge: BridgeFactory, dsn: str, name: str
) -> None:
    bridge = await make_bridge()
    await bridge.publish("run", "token", 1)
    await bridge.close()
    before = await table_contents(dsn)
    with pytest.raises(BridgeClosedError):
        await CALLS[name](bridge)
    assert await table_contents(dsn) == before


# -- start() failures ---------------------------------------------------------


async def test_start_on_an_unmigrated_database_names_pgbridge_migrate(empty_dsn: str) -> None:
    bridge = PostgresStreamBridge(empty_dsn)
    with pytest.raises(SchemaNotMigratedError) as caught:
        await bridge.start()
    assert "pgbridge migrate" in str(caught.value)
    assert isinstance(caught.value, StreamBridgeError)


async def test_failed_start_on_an_unmigrated_database_leaves_no_connection_open(empty_dsn: str) -> None:
    bridge = PostgresStreamBridge(empty_dsn)
    with pytest.raises(SchemaNotMigratedError):
        await bridge.start()
    assert await wait_for_connections(empty_dsn, 0) == 0


async def test_start_on_a_database_at_another_revision_names_pgbridge_migrate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE alembic_version SET version_num = '0000_older'")
    finally:
        await conn.close()
    bridge = PostgresStreamBridge(dsn)
    with pytest.raises(SchemaNotMigratedError, match="pgbridge migrate"):
        await bridge.start()


async def test_start_with_nothing_listening_raises_database_unavailable_with_driver_cause() -> None:
    bridge = PostgresStreamBridge(NOWHERE, connect_timeout=2)
    with pytest.raises(DatabaseUnavailableError) as caught:
        await asyncio.wait_for(bridge.start(), 30)
    cause = caught.value.__cause__
    assert cause is not None
    assert not isinstance(cause, StreamBridgeError)  # the driver's own error, chained


async def test_a_dsn_with_libpqs_connect_timeout_starts_and_times_connections_by_it(dsn: str) -> None:
    """asyncpg alone refuses ``?connect_timeout=`` (it sends it to the server as a setting)."""
    separator = "&" if "?" in dsn else "?"
    async with PostgresStreamBridge(f"{dsn}{separator}connect_timeout=3") as bridge:
        assert bridge.options.connect_timeout == 3.0
        assert "connect_timeout" not in bridge.dsn
        await bridge.publish("run", "token", 1)


def test_the_connect_timeout_option_wins_over_the_dsns() -> None:
    bridge = PostgresStreamBridge(f"{NOWHERE}?connect_timeout=3", connect_timeout=7)
    assert bridge.options.connect_timeout == 7


def test_a_connect_timeout_in_the_dsn_that_is_not_a_positive_number_is_refused_when_built() -> None:
    with pytest.raises(ConfigurationError, match="connect_timeout in the DSN must be a positive number"):
        PostgresStreamBridge(f"{NOWHERE}?connect_timeout=0")


async def test_start_gives_up_after_the_dsns_connect_timeout() -> None:
    bridge = PostgresStreamBridge(f"{NOWHERE}?connect_timeout=0.5")
    with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
        await asyncio.wait_for(bridge.start(), 30)


async def test_start_on_a_missing_database_raises_database_unavailable_with_driver_cause(
    admin_dsn: str,
) -> None:
    bridge = PostgresStreamBridge(with_database(admin_dsn, "pgbridge_no_such_database"))
    with pytest.raises(DatabaseUnavailableError) as caught:
        await bridge.start()
    assert isinstance(caught.value.__cause__, asyncpg.PostgresError)


# -- durability ---------------------------------------------------------------


async def test_history_survives_a_bridge_restart(dsn: str) -> None:
    async with PostgresStreamBridge(dsn) as first:
        ids = [await first.publish("run", "token", {"i": i}) for i in range(5)]
    async with PostgresStreamBridge(dsn) as second:
        replayed = await take(second.subscribe("run"), 5)
        assert [e.id for e in replayed] == ids
        assert [e.data for e in replayed] == [{"i": i} for i in range(5)]
        resume = await second.resolve("run", ids[1])
        assert (resume.status, resume.next_offset, resume.gap_count) == ("resumed", 3, 0)
        later = await second.publish("run", "token", {"i": 5})
        assert later.endswith("-6")  # seqs go on from where the first life stopped


# -- mark_awaiting_input --------------------------------------------------------


async def test_mark_awaiting_input_sets_the_run_status(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    await bridge.mark_awaiting_input("run")
    row = await run_row(dsn, "run")
    assert row is not None
    assert row["status"] == "awaiting_input"
    assert row["awaiting_input_since"] is not None


async def test_publish_after_awaiting_input_makes_the_run_active_again(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish("run", "token", 1)
    await bridge.mark_awaiting_input("run")
    await bridge.publish("run", "input", "the answer")
    row = await run_row(dsn, "run")
    assert row is not None
    assert (row["status"], row["awaiting_input_since"]) == ("active", None)


async def test_terminal_after_awaiting_input_clears_it(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    await bridge.mark_awaiting_input("run")
    await bridge.publish_end("run")
    row = await run_row(dsn, "run")
    assert row is not None
    assert (row["status"], row["awaiting_input_since"]) == ("ended", None)
    assert row["terminal_seq"] == 2


async def test_awaiting_input_run_keeps_streaming_to_subscribers(bridge: PostgresStreamBridge) -> None:
    first = await bridge.publish("run", "token", 1)
    await bridge.mark_awaiting_input("run")
    second = await bridge.publish("run", "token", 2)
    end = await bridge.publish_end("run")
    assert [e.id for e in await collect(bridge.subscribe("run"))] == [first, second, end]


@pytest.mark.parametrize("kind", [StreamStatus.ENDED, StreamStatus.CANCELLED, StreamStatus.ERRORED])
async def test_mark_awaiting_input_on_a_terminal_run_changes_nothing(
    bridge: PostgresStreamBridge, dsn: str, kind: StreamStatus
) -> None:
    await bridge.publish("run", "token", 1)
    await bridge.publish_terminal("run", kind)
    before = await table_contents(dsn)
    await bridge.mark_awaiting_input("run")
    assert await table_contents(dsn) == before


# -- cleanup ------------------------------------------------------------------


async def test_cleanup_writes_nothing_and_deletes_no_history(bridge: PostgresStreamBridge, dsn: str) -> None:
    ids = [await bridge.publish("run", "token", i) for i in range(3)]
    await bridge.publish("other", "token", "x")
    before = await table_contents(dsn)
    await bridge.cleanup("run")
    await bridge.cleanup("never-published")
    assert await table_contents(dsn) == before
    stream = bridge.subscribe("run")
    assert [e.id for e in await take(stream, 3)] == ids  # still replayable in full
    await stream.aclose()  # type: ignore[attr-defined]


async def test_cleanup_of_an_ended_run_keeps_its_history(bridge: PostgresStreamBridge, dsn: str) -> None:
    token = await bridge.publish("run", "token", 1)
    end = await bridge.publish_end("run")
    before = await table_contents(dsn)
    await bridge.cleanup("run")
    assert await table_contents(dsn) == before
    assert [e.id for e in await collect(bridge.subscribe("run"))] == [token, end]


async def test_cleanup_does_not_end_a_live_subscriber(bridge: PostgresStreamBridge) -> None:
    first = await bridge.publish("run", "token", 1)
    stream = bridge.subscribe("run", heartbeat_interval=60)
    assert [e.id for e in await take(stream, 1)] == [first]
    await bridge.cleanup("run")
    second = await bridge.publish("run", "token", 2)
    assert [e.id for e in await take(stream, 1)] == [second]
    end = await bridge.publish_end("run")
    assert [e.id for e in await collect(stream)] == [end]


async def test_cleanup_while_a_subscriber_waits_does_not_end_it(make_bridge: BridgeFactory) -> None:
    reader = await make_bridge()
    writer = await make_bridge()
    first = await writer.publish("run", "token", 1)
    stream = reader.subscribe("run", heartbeat_interval=60)
    assert [e.id for e in await take(stream, 1)] == [first]
    pending = asyncio.ensure_future(anext(stream))  # parked waiting for the next event
    await asyncio.sleep(0.05)
    await reader.cleanup("run")
    assert not pending.done()
    second = await writer.publish("run", "token", 2)  # arrives through NOTIFY
    event = await asyncio.wait_for(pending, 10)
    assert event.id == second
    await stream.aclose()  # type: ignore[attr-defined]


async def test_cleanup_with_a_delay_completes(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    before = await table_contents(dsn)
    await asyncio.wait_for(bridge.cleanup("run", delay=0.1), 10)
    assert await table_contents(dsn) == before
