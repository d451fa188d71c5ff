"""Publishing (docs/behaviour.md sections 2 and 5) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import sys
import time

import pytest

from pgbridge import (
    ConfigurationError,
    InvalidEventError,
    PostgresStreamBridge,
    StreamStatus,
    StreamTerminatedError,
)
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, seq_of
from tests.support.sql_helpers import count_runs, event_rows, run_row


async def test_ids_are_ms_dash_gapless_seq(bridge: PostgresStreamBridge) -> None:
    ids = [await bridge.publish("run", "token", i) for i in range(5)]
    assert all(re.fullmatch(r"[0-9]+-[0-9]+", i) for i in ids)
    assert [seq_of(i) for i in ids] == [1, 2, 3, 4, 5]


async def test_id_ms_is_the_servers_clock_and_stored_with_the_row(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    before = int(time.time() * 1000)
    event_id = await bridge.publish("run", "token", None)
    after = int(time.time() * 1000)
    ms = int(event_id.split("-")[0])
    assert before - 5000 <= ms <= after + 5000  # same machine; allows clock skew, not units
    rows = await event_rows(dsn, "run")
    assert f"{rows[0]['created_ms']}-{rows[0]['seq']}" == event_id


async def test_published_event_is_committed_when_publish_returns(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish("run", "token", {"a": 1})
    rows = await event_rows(dsn, "run")  # another connection sees it at once
    assert [(r["event"], r["data"]) for r in rows] == [("token", '{"a":1}')]


async def test_first_publish_creates_an_active_run(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    row = await run_row(dsn, "run")
    assert row is not None
    assert (row["status"], row["last_seq"], row["first_seq"], row["terminal_seq"]) == ("active", 1, 1, None)


async def test_replayed_data_equals_published_data_with_key_order(bridge: PostgresStreamBridge) -> None:
    data = {"z": 1, "a": [1, 2.5, None, True], "m": {"é": "✓", "b": {}}, "n": 2**62}
    await bridge.publish("run", "token", data)
    await bridge.publish_end("run")
    events = await collect(bridge.subscribe("run"))
    assert events[0].data == data
    assert list(events[0].data) == ["z", "a", "m", "n"]  # type: ignore[arg-type]


async def test_tuple_data_replays_as_a_list(bridge: PostgresStreamBridge) -> None:
    await bridge.publish("run", "token", {"t": (1, 2)})  # type: ignore[dict-item]
    await bridge.publish_end("run")
    events = await collect(bridge.subscribe("run"))
    assert events[0].data == {"t": [1, 2]}


@pytest.mark.parametrize(
    ("run_id", "event", "data"),
    [
        ("", "token", 1),
        ("r" * 256, "token", 1),
        ("nul\x00", "token", 1),
        ("run", "", 1),
        ("run", "e" * 256, 1),
        ("run", "__reserved", 1),
        ("run", "token", float("nan")),
        ("run", "token", float("inf")),
        ("run", "token", "nul\x00char"),
        ("run", "token", {1: "int key"}),
        ("run", "token", {"set": {1}}),
        ("run", "token", "\ud800"),
        ("run", "token", "x" * 200),  # over the 100-byte limit configured below
    ],
)
async def test_bad_input_raises_and_leaves_the_run_unchanged(
    make_bridge: BridgeFactory, dsn: str, run_id: str, event: str, data: object
) -> None:
    bridge = await make_bridge(max_payload_bytes=100)
    await bridge.publish("run", "token", "before")
    before = (await run_row(dsn, "run"), await event_rows(dsn, "run"))
    with pytest.raises(InvalidEventError):
        await bridge.publish(run_id, event, data)  # type: ignore[arg-type]
    assert (await run_row(dsn, "run"), await event_rows(dsn, "run")) == before
    assert await count_runs(dsn) == 1  # no other run was created either


async def test_bad_terminal_kind_is_a_value_error_and_writes_nothing(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    for kind in (StreamStatus.ACTIVE, StreamStatus.CLOSED, "finished"):
        with pytest.raises(ValueError):
            await bridge.publish_terminal("run", kind)  # type: ignore[arg-type]
    assert await run_row(dsn, "run") is None


async def test_terminal_writes_a_replayable_event_and_sets_status(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish("run", "token", 1)
    end_id = await bridge.publish_terminal("run", StreamStatus.ERRORED, {"why": "boom"})
    rows = await event_rows(dsn, "run")
    assert [(r["event"], r["terminal"]) for r in rows] == [("token", False), ("error", True)]
    assert f"{rows[-1]['created_ms']}-{rows[-1]['seq']}" == end_id
    row = await run_row(dsn, "run")
    assert row is not None
    assert (row["status"], row["terminal_seq"]) == ("errored", 2)
    assert row["ended_at"] is not None


@pytest.mark.parametrize(
    ("call", "name", "status"),
    [("publish_end", "end", "ended"), ("cancel", "cancel", "cancelled")],
)
async def test_end_and_cancel_are_terminal_events(
    bridge: PostgresStreamBridge, dsn: str, call: str, name: str, status: str
) -> None:
    await getattr(bridge, call)("run")
    rows = await event_rows(dsn, "run")
    assert [(r["event"], r["terminal"], r["data"]) for r in rows] == [(name, True, "null")]
    row = await run_row(dsn, "run")
    assert row is not None and row["status"] == status


async def test_terminal_on_a_new_run_creates_it_with_the_terminal_first(bridge: PostgresStreamBridge) -> None:
    end_id = await bridge.publish_end("fresh")
    assert seq_of(end_id) == 1
    assert [e.id for e in await collect(bridge.subscribe("fresh"))] == [end_id]


async def test_first_terminal_wins_and_later_ones_return_its_id(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    first = await bridge.publish_end("run")
    assert await bridge.publish_terminal("run", StreamStatus.ERRORED, {"late": True}) == first
    await bridge.cancel("run")
    assert len(await event_rows(dsn, "run")) == 1
    row = await run_row(dsn, "run")
    assert row is not None and row["status"] == "ended"


async def test_publish_after_terminal_raises_and_writes_nothing(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish_end("run")
    with pytest.raises(StreamTerminatedError):
        await bridge.publish("run", "token", 1)
    assert len(await event_rows(dsn, "run")) == 1


async def test_ordinary_event_named_error_is_not_terminal(bridge: PostgresStreamBridge) -> None:
    await bridge.publish("run", "error", {"message": "tool failed, retrying"})
    await bridge.publish("run", "end", "not the end either")
    later = await bridge.publish("run", "token", "still going")
    assert seq_of(later) == 3


async def test_four_bridges_publishing_to_one_run_get_distinct_consecutive_seqs(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    bridges = [await make_bridge() for _ in range(4)]

    async def publish_many(b: PostgresStreamBridge, tag: int) -> list[str]:
        return [await b.publish("run", "token", {"b": tag, "i": i}) for i in range(50)]

    results = await asyncio.gather(*(publish_many(b, n) for n, b in enumerate(bridges)))
    seqs = sorted(seq_of(i) for ids in results for i in ids)
    assert seqs == list(range(1, 201))
    for ids in results:  # each publisher's own events keep its order
        assert [seq_of(i) for i in ids] == sorted(seq_of(i) for i in ids)
    rows = await event_rows(dsn, "run")
    assert [r["seq"] for r in rows] == list(range(1, 201))


async def test_terminal_race_between_bridges_has_exactly_one_winner(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    bridges = [await make_bridge() for _ in range(4)]
    for attempt in range(5):
        run = f"race-{attempt}"
        await bridges[0].publish(run, "token", 0)
        kinds = [StreamStatus.ENDED, StreamStatus.CANCELLED, StreamStatus.ERRORED, StreamStatus.ENDED]
        ids = await asyncio.gather(*(b.publish_terminal(run, k) for b, k in zip(bridges, kinds, strict=True)))
        assert len(set(ids)) == 1
        rows = await event_rows(dsn, run)
        assert [r["terminal"] for r in rows] == [False, True]


async def test_publisher_in_another_process_is_seen_in_order(bridge: PostgresStreamBridge, dsn: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.processes.publish_events",
        dsn,
        "run",
        "30",
        "--end",
        stdout=asyncio.subprocess.PIPE,
    )
    events = await collect(bridge.subscribe("run"), timeout=30)
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    printed = stdout.decode().split()
    assert [e.id for e in events] == printed
    assert [e.data for e in events[:-1]] == [{"from": "p", "i": i} for i in range(30)]
    assert events[-1].event == "end"


def test_unknown_bridge_option_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown option"):
        PostgresStreamBridge("postgresql://postgres@localhost/db", pool_sise=3)


def test_bridge_connects_nothing_until_started() -> None:
    bridge = PostgresStreamBridge("postgresql://postgres@127.0.0.1:1/unreachable")
    assert bridge.options.pool_max_size == 10  # constructed without touching the network
