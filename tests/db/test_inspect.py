"""pgbridge.inspection: runs, events and stats, read-only, through the views of revision 0005."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import timedelta

import pytest
import pytest_asyncio

from pgbridge import (
    InvalidEventError,
    PostgresStreamBridge,
    RetentionPolicy,
    SchemaNotMigratedError,
    StreamNotFoundError,
    StreamStatus,
)
from pgbridge.inspection import EventRow, Inspector, RunSummary
from pgbridge.sql import RUN_STATUSES
from tests.support.catalog import EVENTS_VIEW_COLUMNS, RUNS_VIEW_COLUMNS
from tests.support.postgres_server import DatabaseFactory
from tests.support.run_seeds import HOUR, MINUTE, set_run_times
from tests.support.sql_helpers import backdate_run, evict_prefix


@pytest_asyncio.fixture
async def inspector(dsn: str) -> AsyncIterator[Inspector]:
    async with Inspector(dsn) as inspector:
        yield inspector


async def publish_tokens(bridge: PostgresStreamBridge, run_id: str, count: int) -> list[str]:
    return [await bridge.publish(run_id, "token", {"i": i}) for i in range(count)]


async def listed(inspector: Inspector, run_id: str, **options: object) -> list[EventRow]:
    async with inspector.read_events(run_id, **options) as listing:  # type: ignore[arg-type]
        return [event async for event in listing.events]


# -- the dataclasses are the views ------------------------------------------------


#: What a RunSummary adds to the view's columns: the Durable Streams facts a read of the
#: stream depends on (docs/cli.md "Forks and deleted streams").
STREAM_COLUMNS = ("fork_of", "events_inherited", "deleted", "expired")


def test_a_run_summary_has_the_columns_of_the_runs_view_then_the_streams_facts() -> None:
    assert [f.name for f in fields(RunSummary)] == [*RUNS_VIEW_COLUMNS, *STREAM_COLUMNS]


def test_an_event_row_has_the_columns_of_the_events_view() -> None:
    assert [f.name for f in fields(EventRow)] == list(EVENTS_VIEW_COLUMNS)


# -- one run ------------------------------------------------------------------------


async def test_an_open_run_shows_its_counts_and_first_and_last_ids(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    ids = await publish_tokens(bridge, "run", 3)
    run = await inspector.run("run")
    assert run is not None
    assert (run.status, run.events_published, run.events_retained, run.events_deleted) == ("active", 3, 3, 0)
    assert (run.first_event_id, run.last_event_id, run.terminal_event_id) == (ids[0], ids[-1], None)
    assert run.ended_at is None and run.terminal_event is None and not run.awaiting_input


async def test_an_ended_run_shows_its_terminal_event_and_how_long_it_took(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    await publish_tokens(bridge, "run", 2)
    await bridge.publish_terminal("run", StreamStatus.ENDED, None)
    await set_run_times(dsn, "run", started_ago=10 * MINUTE, until_ago=8 * MINUTE, ended=True)
    run = await inspector.run("run")
    assert run is not None
    assert (run.status, run.terminal_event, run.terminal_seq) == ("ended", "end", 3)
    assert run.terminal_event_id == run.last_event_id
    assert run.duration == timedelta(minutes=2)
    assert run.last_event_at == run.ended_at


async def test_a_dead_lettered_run_shows_dead_letter_as_its_terminal_event(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    await publish_tokens(bridge, "run", 1)
    await backdate_run(dsn, "run", HOUR)
    await bridge.run_retention(RetentionPolicy())
    run = await inspector.run("run")
    assert run is not None and (run.status, run.terminal_event) == ("errored", "dead_letter")


async def test_a_run_awaiting_input_is_flagged_with_the_time_it_started_waiting(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    await publish_tokens(bridge, "run", 1)
    await bridge.mark_awaiting_input("run")
    run = await inspector.run("run")
    assert run is not None
    assert (run.status, run.awaiting_input) == ("awaiting_input", True)
    assert run.awaiting_input_since is not None and run.awaiting_input_since >= run.started_at


async def test_a_trimmed_run_counts_what_retention_deleted_and_names_the_retained_range(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 5)
    await evict_prefix(dsn, "run", keep_from_seq=4)
    run = await inspector.run("run")
    assert run is not None
    assert (run.events_published, run.events_retained, run.events_deleted) == (5, 2, 3)
    assert (run.first_seq, run.first_event_id, run.last_event_id) == (4, ids[3], ids[4])


async def test_a_run_with_every_event_deleted_keeps_its_terminal_id_but_has_no_retained_ids(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    await publish_tokens(bridge, "run", 2)
    end = await bridge.publish_end("run")
    await evict_prefix(dsn, "run", keep_from_seq=4)
    run = await inspector.run("run")
    assert run is not None
    assert (run.events_retained, run.first_event_id, run.last_event_id) == (0, None, None)
    assert (run.terminal_event_id, run.terminal_event) == (end, None)


async def test_a_run_that_does_not_exist_is_none(inspector: Inspector) -> None:
    assert await inspector.run("nothing") is None


# -- listing runs --------------------------------------------------------------------


async def test_runs_are_listed_most_recently_active_first(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    for run_id, ago in (("old", 3 * HOUR), ("new", MINUTE), ("middle", HOUR)):
        await publish_tokens(bridge, run_id, 1)
        await bridge.publish_end(run_id)
        await set_run_times(dsn, run_id, started_ago=ago + 1, until_ago=ago, ended=True)
    await publish_tokens(bridge, "open", 1)
    await set_run_times(dsn, "open", started_ago=2 * HOUR, until_ago=2 * HOUR, ended=False)
    assert [r.run_id for r in await inspector.runs()] == ["new", "middle", "open", "old"]


async def test_runs_keeps_only_the_status_asked_for(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    await publish_tokens(bridge, "open", 1)
    await bridge.publish_terminal("failed", StreamStatus.ERRORED, {"message": "boom"})
    await bridge.publish_end("done")
    assert [r.run_id for r in await inspector.runs(status="errored")] == ["failed"]
    assert [r.run_id for r in await inspector.runs(status="active")] == ["open"]


async def test_runs_since_keeps_the_runs_active_in_that_window(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    for run_id in ("quiet", "busy", "ended-long-ago", "ended-lately"):
        await publish_tokens(bridge, run_id, 1)
    await bridge.publish_end("ended-long-ago")
    await bridge.publish_end("ended-lately")
    await set_run_times(dsn, "quiet", started_ago=3 * HOUR, until_ago=2 * HOUR, ended=False)
    await set_run_times(dsn, "ended-long-ago", started_ago=3 * HOUR, until_ago=2 * HOUR, ended=True)
    await set_run_times(dsn, "ended-lately", started_ago=3 * HOUR, until_ago=10 * MINUTE, ended=True)
    assert {r.run_id for r in await inspector.runs(since=HOUR)} == {"busy", "ended-lately"}


async def test_runs_returns_at_most_limit_runs(bridge: PostgresStreamBridge, inspector: Inspector) -> None:
    for i in range(4):
        await publish_tokens(bridge, f"run-{i}", 1)
    assert len(await inspector.runs(limit=2)) == 2


@pytest.mark.parametrize(
    "options", [{"status": "dead"}, {"since": -1}, {"since": float("nan")}, {"limit": 0}, {"limit": True}]
)
async def test_runs_refuses_bad_options(inspector: Inspector, options: dict[str, object]) -> None:
    with pytest.raises(InvalidEventError):
        await inspector.runs(**options)  # type: ignore[arg-type]


# -- a run's events --------------------------------------------------------------------


async def test_read_events_lists_every_event_in_order_with_its_public_id(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    ids = await publish_tokens(bridge, "run", 3)
    ids.append(await bridge.publish_end("run"))
    events = await listed(inspector, "run")
    assert [e.event_id for e in events] == ids
    assert [(e.seq, e.event, e.terminal) for e in events] == [
        (1, "token", False),
        (2, "token", False),
        (3, "token", False),
        (4, "end", True),
    ]


async def test_read_events_gives_the_data_as_published(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    data = {"z": 1, "a": [1.5, None, "é"], "big": 2**70}
    await bridge.publish("run", "token", data)
    (event,) = await listed(inspector, "run")
    assert event.data == data and list(event.data) == ["z", "a", "big"]  # type: ignore[arg-type]


async def test_read_events_after_an_id_starts_with_the_event_after_it(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    ids = await publish_tokens(bridge, "run", 5)
    async with inspector.read_events("run", after=ids[1]) as listing:
        assert listing.resume.status == "resumed"
        assert [e.event_id async for e in listing.events] == ids[2:]


async def test_read_events_returns_at_most_limit_events(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    ids = await publish_tokens(bridge, "run", 5)
    assert [e.event_id for e in await listed(inspector, "run", after=ids[0], limit=2)] == ids[1:3]


async def test_read_events_after_a_deleted_id_reports_the_gap_and_starts_at_the_first_retained(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 6)
    await evict_prefix(dsn, "run", keep_from_seq=5)
    async with inspector.read_events("run", after=ids[0]) as listing:
        assert (listing.resume.status, listing.resume.gap_count) == ("evicted", 3)
        assert [e.event_id async for e in listing.events] == ids[4:]


async def test_read_events_of_a_run_that_does_not_exist_raises_not_found(inspector: Inspector) -> None:
    with pytest.raises(StreamNotFoundError, match="nothing"):
        await listed(inspector, "nothing")


@pytest.mark.parametrize("cursor", ["abc", "12-", "-3", "1-2-3", "1" * 70 + "-1"])
async def test_read_events_refuses_a_malformed_id(
    bridge: PostgresStreamBridge, inspector: Inspector, cursor: str
) -> None:
    await publish_tokens(bridge, "run", 1)
    with pytest.raises(InvalidEventError, match="not an event ID"):
        await listed(inspector, "run", after=cursor)


async def test_read_events_refuses_an_id_of_another_run(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    await publish_tokens(bridge, "run", 3)
    other = await publish_tokens(bridge, "other", 2)
    with pytest.raises(InvalidEventError, match="not an event ID of run 'run'"):
        await listed(inspector, "run", after=f"{int(other[1].split('-')[0]) + 1}-2")


async def test_read_events_refuses_an_id_past_the_newest_event(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    ids = await publish_tokens(bridge, "run", 2)
    with pytest.raises(InvalidEventError, match="not an event ID of run"):
        await listed(inspector, "run", after=ids[1].split("-")[0] + "-9")


# -- stats ------------------------------------------------------------------------------


async def test_stats_counts_runs_and_events_by_status(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    await publish_tokens(bridge, "open-1", 3)
    await publish_tokens(bridge, "open-2", 1)
    await publish_tokens(bridge, "done", 4)
    await bridge.publish_end("done")
    await evict_prefix(dsn, "done", keep_from_seq=3)
    by_status = {c.status: c for c in (await inspector.stats()).by_status}
    assert list(by_status) == list(RUN_STATUSES)
    assert (by_status["active"].runs, by_status["active"].events_retained) == (2, 4)
    assert (
        by_status["ended"].runs,
        by_status["ended"].events_retained,
        by_status["ended"].events_published,
    ) == (
        1,
        3,
        5,
    )
    assert by_status["errored"].runs == 0


async def test_stats_measures_every_pgbridge_table(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    await publish_tokens(bridge, "run", 3)
    tables = {t.name: t for t in (await inspector.stats()).tables}
    assert set(tables) == {"run_events", "run_streams", "retention_last_pass"}
    events = tables["run_events"]
    assert events.total_bytes >= events.table_bytes + events.index_bytes > 0


async def test_stats_names_the_oldest_retained_event(
    bridge: PostgresStreamBridge, inspector: Inspector, dsn: str
) -> None:
    await publish_tokens(bridge, "young", 1)
    await publish_tokens(bridge, "old", 2)
    await set_run_times(dsn, "old", started_ago=2 * HOUR, until_ago=HOUR, ended=False)
    await evict_prefix(dsn, "old", keep_from_seq=2)
    oldest = (await inspector.stats()).oldest_event
    assert oldest is not None
    assert (oldest.run_id, oldest.event_id.split("-")[1]) == ("old", "2")


async def test_stats_has_no_last_retention_pass_before_the_first(inspector: Inspector) -> None:
    assert (await inspector.stats()).last_retention_pass is None


async def test_stats_shows_the_last_retention_pass_and_its_policy(
    bridge: PostgresStreamBridge, inspector: Inspector
) -> None:
    await publish_tokens(bridge, "run", 5)
    report = await bridge.run_retention(RetentionPolicy(max_events_per_run=2))
    last = (await inspector.stats()).last_retention_pass
    assert last is not None
    assert (last.events_deleted, last.passes, last.policy["max_events_per_run"]) == (
        report.events_deleted,
        1,
        2,
    )


async def test_stats_to_json_is_plain_json(bridge: PostgresStreamBridge, inspector: Inspector) -> None:
    import json

    await publish_tokens(bridge, "run", 1)
    await bridge.run_retention()
    assert json.loads(json.dumps((await inspector.stats()).to_json()))["by_status"][0]["status"] == "active"


# -- connecting ----------------------------------------------------------------------------


async def test_an_inspector_on_an_unmigrated_database_says_to_migrate(databases: DatabaseFactory) -> None:
    empty = await databases.create_empty()
    try:
        with pytest.raises(SchemaNotMigratedError, match="pgbridge migrate"):
            await Inspector(empty).start()
    finally:
        await databases.drop(empty)
