"""Retention (docs/behaviour.md §8), the stale-run reaper (section 7) and gap markers
(section 4), on a real PostgreSQL.

Ages are made by backdating rows with SQL (``backdate_events``,
``backdate_run``), not by sleeping, so no test depends on timing.
"""

from __future__ import annotations

import asyncio

import pytest

from pgbridge import (
    GAP_EVENT,
    BridgeNotStartedError,
    ConfigurationError,
    PostgresStreamBridge,
    ResumeResult,
    RetentionPolicy,
    RetentionReport,
    StreamStatus,
    StreamTerminatedError,
)
from pgbridge.retention.sweep import RetentionPass
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, take, wait_until
from tests.support.sql_helpers import (
    append_without_notify,
    backdate_events,
    backdate_run,
    connected,
    count_runs,
    deletion_rows,
    event_rows,
    hold_retention_lock,
    run_row,
    terminate_backends,
)

HOUR = 3600.0
DAY = 86400.0
#: A policy with every rule off; tests switch on the one they exercise.
NOTHING = RetentionPolicy(ended_run_ttl=None, tombstone_ttl=None)


def only(**rules: object) -> RetentionPolicy:
    """A policy with just *rules* on (timeouts kept at their defaults)."""
    return RetentionPolicy(**{"ended_run_ttl": None, "tombstone_ttl": None, **rules})  # type: ignore[arg-type]


def report(events: int = 0, runs: int = 0, dead: int = 0) -> tuple[int, int, int]:
    """The counts a pass should report (whether it also vacuumed depends on the server)."""
    return (events, runs, dead)


def counts(result: RetentionReport) -> tuple[int, int, int]:
    return (result.events_deleted, result.runs_deleted, result.runs_dead_lettered)


async def publish_many(bridge: PostgresStreamBridge, run_id: str, count: int) -> list[str]:
    return [await bridge.publish(run_id, "token", i) for i in range(count)]


def seqs(rows: list) -> list[int]:  # type: ignore[type-arg]
    return [row["seq"] for row in rows]


# -- defaults -------------------------------------------------------------------


async def test_default_policy_keeps_recent_history(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_many(bridge, "open", 5)
    await publish_many(bridge, "ended", 3)
    await bridge.publish_end("ended")
    assert counts(await bridge.run_retention()) == report()
    assert len(await event_rows(dsn, "open")) == 5
    assert len(await event_rows(dsn, "ended")) == 4


def test_default_policy_keeps_ended_runs_for_days() -> None:
    policy = RetentionPolicy()
    assert policy.max_events_per_run is None and policy.max_event_age is None
    assert policy.ended_run_ttl == 7 * DAY and policy.tombstone_ttl == 30 * DAY
    assert (policy.active_timeout, policy.awaiting_input_timeout) == (600, 7200)


# -- max_events_per_run -----------------------------------------------------------


async def test_max_events_per_run_keeps_the_newest_n_of_each_run(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_many(bridge, "a", 10)
    await publish_many(bridge, "b", 3)
    assert counts(await bridge.run_retention(only(max_events_per_run=4))) == report(events=6)
    assert seqs(await event_rows(dsn, "a")) == [7, 8, 9, 10]
    assert seqs(await event_rows(dsn, "b")) == [1, 2, 3]


async def test_max_events_per_run_moves_first_seq_so_resume_reports_the_exact_gap(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_many(bridge, "run", 10)
    await bridge.run_retention(only(max_events_per_run=4))
    assert (await run_row(dsn, "run"))["first_seq"] == 7  # type: ignore[index]
    assert await bridge.resolve("run", ids[1]) == ResumeResult(next_offset=7, status="evicted", gap_count=4)
    assert await bridge.resolve("run", ids[5]) == ResumeResult(next_offset=7, status="resumed")


async def test_max_events_per_run_zero_deletes_every_event_but_keeps_the_count(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_many(bridge, "run", 5)
    assert counts(await bridge.run_retention(only(max_events_per_run=0))) == report(events=5)
    assert await event_rows(dsn, "run") == []
    assert await bridge.resolve("run", ids[0]) == ResumeResult(next_offset=6, status="evicted", gap_count=4)


async def test_a_run_trimmed_to_nothing_takes_new_events_after_its_last_seq(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_many(bridge, "run", 3)
    await bridge.run_retention(only(max_events_per_run=0))
    new_id = await bridge.publish("run", "token", "after")
    assert new_id.endswith("-4")
    events = await take(bridge.subscribe("run", last_event_id=ids[0]), 2)
    assert events[0].event == GAP_EVENT
    assert events[0].data["earliest_available_event_id"] == new_id  # type: ignore[index]
    assert events[1].id == new_id


async def test_a_second_pass_with_nothing_new_deletes_nothing(bridge: PostgresStreamBridge) -> None:
    await publish_many(bridge, "run", 10)
    assert counts(await bridge.run_retention(only(max_events_per_run=4))) == report(events=6)
    assert counts(await bridge.run_retention(only(max_events_per_run=4))) == report()


# -- max_event_age ------------------------------------------------------------------


async def test_max_event_age_deletes_older_events_and_keeps_younger_ones(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_many(bridge, "run", 6)
    await backdate_events(dsn, "run", through_seq=4, seconds=2 * HOUR)
    assert counts(await bridge.run_retention(only(max_event_age=HOUR))) == report(events=4)
    assert seqs(await event_rows(dsn, "run")) == [5, 6]


async def test_max_event_age_leaves_runs_with_only_young_events_alone(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_many(bridge, "old", 2)
    await publish_many(bridge, "young", 2)
    await backdate_events(dsn, "old", through_seq=2, seconds=2 * HOUR)
    assert counts(await bridge.run_retention(only(max_event_age=HOUR))) == report(events=2)
    assert seqs(await event_rows(dsn, "young")) == [1, 2]


async def test_max_event_age_deletes_every_old_event_of_a_run_with_more_than_one_batch_of_them(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_many(bridge, "long", 12)
    await backdate_events(dsn, "long", through_seq=11, seconds=2 * HOUR)
    small_batches = RetentionPass(
        bridge._db,
        on_dead_lettered=lambda run_id, seq: None,
        on_trimmed=lambda run_id, seq: None,
        batch_events=5,
    )
    result = await small_batches.run(only(max_event_age=HOUR), wait=True)
    assert result is not None and counts(result) == report(events=11)
    assert seqs(await event_rows(dsn, "long")) == [12]


async def test_max_event_age_updates_the_earliest_event_id(bridge: PostgresStreamBridge, dsn: str) -> None:
    ids = await publish_many(bridge, "run", 5)
    await backdate_events(dsn, "run", through_seq=2, seconds=2 * HOUR)
    await bridge.run_retention(only(max_event_age=HOUR))
    (gap,) = await take(bridge.subscribe("run", last_event_id="0-0"), 1)
    assert gap.data == {
        "requested_event_id": "0-0",
        "gap_count": 2,
        "earliest_available_event_id": ids[2],
        "latest_available_event_id": ids[4],
    }


# -- ended_run_ttl and tombstones ---------------------------------------------------------


async def ended_run(bridge: PostgresStreamBridge, dsn: str, run_id: str, *, ended_ago: float) -> list[str]:
    ids = await publish_many(bridge, run_id, 3)
    ids.append(await bridge.publish_end(run_id))
    await backdate_run(dsn, run_id, ended_ago)
    return ids


async def test_ended_run_ttl_deletes_the_events_of_runs_that_ended_long_ago(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await ended_run(bridge, dsn, "old", ended_ago=8 * DAY)
    await ended_run(bridge, dsn, "recent", ended_ago=1 * DAY)
    await publish_many(bridge, "open", 3)
    await backdate_run(dsn, "open", 8 * DAY)  # silent for long, but open: the reaper's business
    policy = RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY, active_timeout=10 * DAY)
    assert counts(await bridge.run_retention(policy)) == report(events=4)
    assert await event_rows(dsn, "old") == []
    assert len(await event_rows(dsn, "recent")) == 4
    assert len(await event_rows(dsn, "open")) == 3


async def test_a_tombstone_resolves_evicted_with_the_exact_count(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await ended_run(bridge, dsn, "run", ended_ago=8 * DAY)
    await bridge.run_retention(RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY))
    row = await run_row(dsn, "run")
    assert row is not None and (row["first_seq"], row["last_seq"]) == (5, 4)
    assert await bridge.resolve("run", ids[1]) == ResumeResult(next_offset=5, status="evicted", gap_count=2)
    assert await bridge.resolve("run", ids[3]) == ResumeResult(next_offset=5, status="resumed")


async def test_a_subscriber_of_a_tombstone_gets_the_gap_then_the_end(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await ended_run(bridge, dsn, "run", ended_ago=8 * DAY)
    await bridge.run_retention(RetentionPolicy(ended_run_ttl=7 * DAY))
    events = await collect(bridge.subscribe("run", last_event_id=ids[0]))
    assert [e.event for e in events] == [GAP_EVENT, "__end__"]
    assert events[0].data == {
        "requested_event_id": ids[0],
        "gap_count": 3,
        "earliest_available_event_id": None,
        "latest_available_event_id": None,
    }


async def test_tombstones_are_deleted_after_ended_run_ttl_plus_tombstone_ttl(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await ended_run(bridge, dsn, "gone", ended_ago=40 * DAY)
    await ended_run(bridge, dsn, "kept", ended_ago=20 * DAY)
    policy = RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY)
    assert counts(await bridge.run_retention(policy)) == report(events=8, runs=1)
    assert await run_row(dsn, "gone") is None
    assert await run_row(dsn, "kept") is not None


async def test_a_tombstone_retention_deletes_leaves_a_record_verify_reports(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await ended_run(bridge, dsn, "gone", ended_ago=40 * DAY)
    before = await run_row(dsn, "gone")
    assert before is not None
    await bridge.run_retention(RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY))
    [record] = await deletion_rows(dsn, "gone")
    assert (record["via"], record["status"], record["last_seq"]) == ("retention", "ended", 4)
    assert record["last_hash"] == before["last_hash"] and record["events_deleted"] == 0
    report = await bridge.verify("gone")
    assert report.verdict == "deleted" and report.deletion is not None
    assert (report.deletion.via, report.deletion.last_seq) == ("retention", 4)


async def test_a_run_id_reused_after_its_tombstone_went_is_a_new_life(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    old_ids = await ended_run(bridge, dsn, "run", ended_ago=40 * DAY)
    await bridge.run_retention(RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY))
    assert await bridge.resolve("run", old_ids[2]) == ResumeResult(next_offset=1, status="unknown")
    assert (await bridge.publish("run", "token", "new life")).endswith("-1")


@pytest.mark.parametrize(
    "policy",
    [
        RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=None),
        RetentionPolicy(ended_run_ttl=None, tombstone_ttl=0),
    ],
    ids=["no tombstone_ttl", "no ended_run_ttl"],
)
async def test_run_rows_are_never_deleted_when_either_ttl_is_none(
    bridge: PostgresStreamBridge, dsn: str, policy: RetentionPolicy
) -> None:
    await ended_run(bridge, dsn, "run", ended_ago=400 * DAY)
    assert (await bridge.run_retention(policy)).runs_deleted == 0
    assert await count_runs(dsn) == 1


# -- the stale-run reaper -----------------------------------------------------------------


async def test_a_silent_active_run_is_dead_lettered(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_many(bridge, "run", 2)
    await backdate_run(dsn, "run", 601)
    assert counts(await bridge.run_retention(NOTHING)) == report(dead=1)
    rows = await event_rows(dsn, "run")
    assert [(r["seq"], r["event"], r["terminal"]) for r in rows][-1] == (3, "dead_letter", True)
    row = await run_row(dsn, "run")
    assert row is not None and (row["status"], row["terminal_seq"]) == ("errored", 3)
    assert row["ended_at"] is not None


async def test_the_dead_letter_event_says_why(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    await backdate_run(dsn, "run", 601)
    await bridge.run_retention(NOTHING)
    *_, last = await collect(bridge.subscribe("run"))
    assert last.event == "dead_letter"
    assert isinstance(last.data, dict)
    assert last.data["status"] == "active" and last.data["timeout_seconds"] == 600
    assert "worker" in last.data["reason"]


async def test_a_live_subscriber_of_a_dead_lettered_run_gets_the_terminal_and_ends(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    writer, reader = await make_bridge(), await make_bridge(poll_interval=3600)
    await writer.publish("run", "token", 1)
    await backdate_run(dsn, "run", 601)  # before the subscriber reads: backdating changes the event's ID
    stream = reader.subscribe("run")
    assert (await take(stream, 1))[0].event == "token"
    await writer.run_retention(NOTHING)  # the NOTIFY reaches the other bridge's listener
    assert [e.event for e in await collect(stream)] == ["dead_letter"]


async def test_an_active_run_is_not_dead_lettered_before_its_timeout(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish("run", "token", 1)
    await backdate_run(dsn, "run", 599)
    assert counts(await bridge.run_retention(NOTHING)) == report()
    assert (await run_row(dsn, "run"))["status"] == "active"  # type: ignore[index]


async def test_a_run_awaiting_input_gets_the_longer_timeout(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("waiting", "token", 1)
    await bridge.mark_awaiting_input("waiting")
    await backdate_run(dsn, "waiting", 3600)
    assert counts(await bridge.run_retention(NOTHING)) == report()
    await backdate_run(dsn, "waiting", 3601)  # now 7201 s silent
    assert counts(await bridge.run_retention(NOTHING)) == report(dead=1)
    *_, last = await event_rows(dsn, "waiting")
    assert '"status" : "awaiting_input"' in last["data"] or '"status": "awaiting_input"' in last["data"]


async def test_mark_awaiting_input_counts_as_activity(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    await backdate_run(dsn, "run", 601)
    await bridge.mark_awaiting_input("run")
    assert counts(await bridge.run_retention(NOTHING)) == report()


async def test_publishing_to_a_dead_lettered_run_is_refused(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    await backdate_run(dsn, "run", 601)
    await bridge.run_retention(NOTHING)
    with pytest.raises(StreamTerminatedError):
        await bridge.publish("run", "token", 2)
    # A terminal from the producer now returns the dead letter's ID: one terminal per run.
    dead_letter = await bridge.publish_terminal("run", StreamStatus.ENDED)
    assert dead_letter.endswith("-2")


async def test_ended_runs_are_never_dead_lettered(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    await bridge.publish_end("run")
    await backdate_run(dsn, "run", 10 * DAY)
    assert (await bridge.run_retention(NOTHING)).runs_dead_lettered == 0


async def test_reaper_racing_producers_leaves_exactly_one_terminal_per_run(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    producer, reaper = await make_bridge(), await make_bridge()
    runs = [f"run-{i}" for i in range(40)]
    for run_id in runs:
        await producer.publish(run_id, "token", 0)
        await backdate_run(dsn, run_id, 601)

    async def produce(run_id: str, index: int) -> None:
        # Half end their run, half publish late; either may lose to the reaper.
        try:
            if index % 2:
                await producer.publish_end(run_id)
            else:
                await producer.publish(run_id, "token", 1)
        except StreamTerminatedError:
            pass

    results = await asyncio.gather(
        reaper.run_retention(NOTHING), *(produce(r, i) for i, r in enumerate(runs))
    )
    dead_lettered = 0
    for run_id in runs:
        rows = await event_rows(dsn, run_id)
        terminals = [r for r in rows if r["terminal"]]
        assert seqs(rows) == list(range(1, len(rows) + 1)), run_id
        assert len(terminals) <= 1 and (not terminals or terminals[0] is rows[-1]), run_id
        dead_lettered += sum(r["event"] == "dead_letter" for r in rows)
    assert results[0].runs_dead_lettered == dead_lettered


# -- gaps under live subscribers ----------------------------------------------------


async def test_a_live_subscriber_whose_unread_events_are_deleted_gets_a_gap_marker(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    bridge = await make_bridge()
    ids = await publish_many(bridge, "run", 2)
    stream = bridge.subscribe("run", last_event_id=ids[0])
    assert [e.id for e in await take(stream, 1)] == [ids[1]]
    more = await publish_many(bridge, "run", 6)  # seqs 3..8, unread
    await bridge.run_retention(only(max_events_per_run=2))  # keeps 7, 8
    gap, *rest = await take(stream, 3)
    assert gap.event == GAP_EVENT and gap.id == ""
    assert gap.data == {
        "requested_event_id": ids[1],
        "gap_count": 4,
        "earliest_available_event_id": more[4],
        "latest_available_event_id": more[5],
    }
    assert [e.id for e in rest] == more[4:]


async def test_events_of_a_fetched_page_that_retention_deletes_are_not_yielded_after_the_pass(
    bridge: PostgresStreamBridge,
) -> None:
    # docs/behaviour.md §4: the subscriber fetched seqs 1..5 in one page (from the
    # run's shared tail) and has yielded only the first when the pass deletes 1..4.
    ids = await publish_many(bridge, "run", 5)
    stream = bridge.subscribe("run")
    assert [e.id for e in await take(stream, 1)] == ids[:1]
    await bridge.run_retention(only(max_events_per_run=1))  # keeps seq 5
    gap, last = await take(stream, 2)
    assert gap.event == GAP_EVENT and gap.id == ""
    assert gap.data == {
        "requested_event_id": ids[0],
        "gap_count": 3,  # seqs 2..4, fetched but not yielded
        "earliest_available_event_id": ids[4],
        "latest_available_event_id": ids[4],
    }
    assert last.id == ids[4]


async def test_events_of_a_catch_up_page_that_retention_deletes_are_not_yielded_after_the_pass(
    make_bridge: BridgeFactory,
) -> None:
    # The same for a subscriber behind the shared tail, reading a page of its own.
    bridge = await make_bridge(feed_buffer_size=2)
    ids = await publish_many(bridge, "run", 8)
    stream = bridge.subscribe("run", last_event_id=ids[0])
    assert [e.id for e in await take(stream, 1)] == ids[1:2]  # its page holds seqs 2..8
    await bridge.run_retention(only(max_events_per_run=2))  # keeps 7, 8
    gap, *rest = await take(stream, 3)
    assert gap.event == GAP_EVENT
    assert gap.data == {
        "requested_event_id": ids[1],
        "gap_count": 4,  # seqs 3..6
        "earliest_available_event_id": ids[6],
        "latest_available_event_id": ids[7],
    }
    assert [e.id for e in rest] == ids[6:]


async def test_a_fetched_page_in_another_process_stops_at_the_trim_once_its_wake_up_arrived(
    make_bridge: BridgeFactory,
) -> None:
    writer, reader = await make_bridge(), await make_bridge(poll_interval=3600)
    ids = await publish_many(writer, "run", 5)
    stream = reader.subscribe("run")
    assert [e.id for e in await take(stream, 1)] == ids[:1]  # seqs 2..5 fetched, not yielded
    await writer.run_retention(only(max_events_per_run=1))
    feed = reader._feeds.get("run")
    assert feed is not None
    await wait_until(lambda: feed.state.first_seq == 5)  # retention's NOTIFY reached the reader
    gap, last = await take(stream, 2)
    assert gap.event == GAP_EVENT and gap.data["gap_count"] == 3  # type: ignore[index]
    assert last.id == ids[4]


async def test_a_live_subscriber_in_another_process_is_woken_to_report_the_gap(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    writer, reader = await make_bridge(), await make_bridge(poll_interval=3600)
    first = await writer.publish("run", "token", 0)
    stream = reader.subscribe("run")
    assert [e.id for e in await take(stream, 1)] == [first]
    for i in range(5):  # committed without a wake-up: the reader has not read them
        await append_without_notify(dsn, "run", "token", str(i))
    await writer.run_retention(only(max_events_per_run=1))  # its wake-up reaches the reader
    gap, last = await take(stream, 2)
    assert gap.event == GAP_EVENT
    assert gap.data["requested_event_id"] == first and gap.data["gap_count"] == 4  # type: ignore[index]
    assert last.id == gap.data["earliest_available_event_id"] == gap.data["latest_available_event_id"]  # type: ignore[index]


async def test_on_gap_stop_ends_a_live_stream_after_the_marker(bridge: PostgresStreamBridge) -> None:
    ids = await publish_many(bridge, "run", 1)
    stream = bridge.subscribe("run", on_gap="stop")
    assert [e.id for e in await take(stream, 1)] == ids
    await publish_many(bridge, "run", 4)  # unread
    await bridge.run_retention(only(max_events_per_run=1))
    events = await collect(stream)
    assert [e.event for e in events] == [GAP_EVENT]
    assert events[0].data["gap_count"] == 3  # type: ignore[index]


async def test_on_gap_stop_from_an_evicted_cursor_yields_only_the_marker(
    bridge: PostgresStreamBridge,
) -> None:
    ids = await publish_many(bridge, "run", 5)
    await bridge.run_retention(only(max_events_per_run=2))
    events = await collect(bridge.subscribe("run", last_event_id=ids[0], on_gap="stop"))
    assert [e.event for e in events] == [GAP_EVENT]
    assert events[0].data["gap_count"] == 2  # type: ignore[index]


# -- batches --------------------------------------------------------------------------


async def test_a_pass_deletes_in_transactions_of_bounded_size(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_many(bridge, "big", 23)
    for i in range(5):
        await publish_many(bridge, f"small-{i}", 3)
    commits: list[str] = []
    small_batches = RetentionPass(
        bridge._db,
        on_dead_lettered=lambda run_id, seq: None,
        on_trimmed=lambda run_id, first_seq: commits.append(run_id),
        batch_events=5,
        batch_runs=2,
    )
    result = await small_batches.run(only(max_events_per_run=0), wait=True)
    assert counts(result) == report(events=23 + 15)
    assert commits.count("big") == 5  # 23 events, at most 5 per transaction
    async with connected(dsn) as conn:
        assert await conn.fetchval("SELECT count(*) FROM run_events") == 0


async def test_a_large_backlog_of_ended_runs_is_cleared_in_one_pass(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    async with connected(dsn) as conn:
        await conn.execute(
            """
            INSERT INTO run_streams
                (run_id, status, last_seq, last_ms, first_ms, terminal_seq, ended_at, updated_at)
            SELECT 'r' || i, 'ended', 10, 1, 1, 10, now() - interval '40 days', now() - interval '40 days'
            FROM generate_series(1, 450) AS i;
            INSERT INTO run_events (run_id, seq, created_ms, event, data, terminal, hash)
            SELECT 'r' || i, s, 1, CASE WHEN s = 10 THEN 'end' ELSE 'token' END, 'null', s = 10, ''::bytea
            FROM generate_series(1, 450) AS i, generate_series(1, 10) AS s;
            """
        )
    policy = RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY)
    assert counts(await bridge.run_retention(policy)) == report(events=4500, runs=450)
    assert await count_runs(dsn) == 0


# -- bloat: vacuum when autovacuum will not ---------------------------------------------


async def dead_rows(dsn: str, table: str) -> int:
    async with connected(dsn) as conn:
        sql = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = $1"
        return int(await conn.fetchval(sql, table))


async def test_a_pass_vacuums_a_table_whose_autovacuum_is_off_once_dead_rows_pile_up(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    async with connected(dsn) as conn:
        await conn.execute("ALTER TABLE run_events SET (autovacuum_enabled = false)")
    await publish_many(bridge, "run", 200)
    first = await bridge.run_retention(only(max_events_per_run=50))
    assert first.events_deleted == 150
    # A backend that stays busy or idle sends its statistics after up to 10 s; one that exits
    # sends them at once, so end the pass's connections (the bridge opens new ones).
    await terminate_backends(dsn)
    for _ in range(100):
        if await dead_rows(dsn, "run_events") >= 150:
            break
        await asyncio.sleep(0.1)
    second = await bridge.run_retention(only(max_events_per_run=50))
    assert second.events_deleted == 0 and second.tables_vacuumed >= 1
    assert await dead_rows(dsn, "run_events") == 0


# -- the lock: one pass at a time ---------------------------------------------------------


async def test_the_job_skips_its_turn_while_another_pass_holds_the_lock(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    writer = await make_bridge()
    await publish_many(writer, "run", 5)
    async with connected(dsn) as conn:
        assert await hold_retention_lock(conn)
        worker = await make_bridge(retention=only(max_events_per_run=1), retention_interval=0.05)
        job = worker.retention_job
        assert job is not None
        await wait_until(lambda: job.skipped >= 3)
        assert job.passes == 0
        assert len(await event_rows(dsn, "run")) == 5
    await wait_until(lambda: job.passes >= 1)
    assert seqs(await event_rows(dsn, "run")) == [5]


async def test_an_explicit_pass_waits_for_the_running_pass_then_runs_its_own(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_many(bridge, "run", 5)
    async with connected(dsn) as conn:
        assert await hold_retention_lock(conn)
        explicit = asyncio.ensure_future(bridge.run_retention(only(max_events_per_run=1)))
        await asyncio.sleep(0.3)  # long enough for it to have tried the lock several times
        assert not explicit.done()
        assert len(await event_rows(dsn, "run")) == 5
    assert counts(await explicit) == report(events=4)


async def test_jobs_in_two_bridges_never_hold_the_lock_at_the_same_time(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    policy = only(max_events_per_run=1)
    first = await make_bridge(retention=policy, retention_interval=0.01)
    second = await make_bridge(retention=policy, retention_interval=0.01)
    holders: list[int] = []
    # This database's locks only: tests of other databases may share the server.
    held = """
        SELECT count(*) FROM pg_locks
        WHERE locktype = 'advisory' AND granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    """
    async with connected(dsn) as conn:
        for _ in range(200):
            await publish_many(first, "run", 1)
            holders.append(await conn.fetchval(held))
    assert max(holders) <= 1
    assert first.retention_job and second.retention_job
    assert first.retention_job.passes > 0 and second.retention_job.passes > 0


async def test_concurrent_passes_in_two_bridges_add_up_to_what_was_deleted(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    first, second = await make_bridge(), await make_bridge()
    for i in range(30):
        await publish_many(first, f"run-{i}", 10)
        await backdate_run(dsn, f"run-{i}", 601) if i % 3 == 0 else None
    policy = only(max_events_per_run=3)
    reports = await asyncio.gather(*(b.run_retention(policy) for b in (first, second, first, second)))
    assert sum(r.events_deleted for r in reports) == 30 * 7 + 10  # dead letters count as events
    assert sum(r.runs_dead_lettered for r in reports) == 10
    async with connected(dsn) as conn:
        assert await conn.fetchval("SELECT count(*) FROM run_events") == 30 * 3
        assert await conn.fetchval("SELECT count(*) FROM run_events WHERE event = 'dead_letter'") == 10


# -- the job's lifecycle ---------------------------------------------------------------------


async def test_a_bridge_with_a_policy_runs_the_job_between_start_and_close(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    bridge = await make_bridge(retention=only(max_events_per_run=2), retention_interval=0.05)
    job = bridge.retention_job
    assert job is not None
    await publish_many(bridge, "run", 6)
    # Passes may finish while the events are being published; the second
    # pass to finish from now on began after the last publish.
    published_at = job.passes
    await wait_until(lambda: job.passes >= published_at + 2)
    assert seqs(await event_rows(dsn, "run")) == [5, 6]
    await bridge.close()
    passes = job.passes
    await asyncio.sleep(0.2)
    assert job.passes == passes


async def test_a_bridge_without_a_policy_runs_no_job(bridge: PostgresStreamBridge) -> None:
    assert bridge.retention_job is None


async def test_run_retention_uses_the_bridges_policy_when_given_none(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    bridge = await make_bridge(retention=only(max_events_per_run=1), retention_interval=3600)
    await publish_many(bridge, "run", 4)
    await bridge.run_retention()
    assert seqs(await event_rows(dsn, "run")) == [4]


# -- the record of the last pass, and progress ---------------------------------------------------


async def last_pass(dsn: str) -> list[dict[str, object]]:
    async with connected(dsn) as conn:
        rows = await conn.fetch("SELECT *, policy::text AS policy FROM retention_last_pass")
    return [dict(row) for row in rows]


async def test_a_pass_records_its_report_and_policy_as_the_last_pass(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_many(bridge, "run", 4)
    result = await bridge.run_retention(only(max_events_per_run=1))
    (row,) = await last_pass(dsn)
    assert (row["events_deleted"], row["runs_deleted"], row["runs_dead_lettered"]) == counts(result)
    assert row["tables_vacuumed"] == result.tables_vacuumed
    assert row["started_at"] <= row["finished_at"]
    assert '"max_events_per_run": 1' in str(row["policy"]) and '"ended_run_ttl": null' in str(row["policy"])


async def test_each_pass_replaces_the_last_pass_and_counts_the_passes(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_many(bridge, "run", 4)
    await bridge.run_retention(only(max_events_per_run=1))
    await bridge.run_retention(only(max_events_per_run=1))
    (row,) = await last_pass(dsn)
    assert (row["events_deleted"], row["passes"]) == (0, 2)


async def test_a_pass_tells_its_progress_the_running_totals_after_each_batch(
    bridge: PostgresStreamBridge,
) -> None:
    await publish_many(bridge, "big", 12)
    seen: list[RetentionReport] = []
    small_batches = RetentionPass(
        bridge._db,
        on_dead_lettered=lambda run_id, seq: None,
        on_trimmed=lambda run_id, seq: None,
        batch_events=5,
    )
    result = await small_batches.run(only(max_events_per_run=0), wait=True, progress=seen.append)
    assert [r.events_deleted for r in seen if r.events_deleted] == [5, 10, 12]
    assert counts(seen[-1]) == counts(result)


async def test_run_retention_passes_its_progress_callback_to_the_pass(bridge: PostgresStreamBridge) -> None:
    await publish_many(bridge, "run", 3)
    seen: list[RetentionReport] = []
    await bridge.run_retention(only(max_events_per_run=0), progress=seen.append)
    assert seen and seen[-1].events_deleted == 3


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        {"max_events_per_run": -1},
        {"max_events_per_run": 2.5},
        {"max_events_per_run": True},
        {"max_event_age": -1},
        {"max_event_age": float("nan")},
        {"ended_run_ttl": "7d"},
        {"tombstone_ttl": float("inf")},
        {"active_timeout": 0},
        {"awaiting_input_timeout": None},
    ],
)
def test_a_bad_policy_is_refused_when_built(rules: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetentionPolicy(**rules)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{"retention": {"max_events_per_run": 1}}, {"retention_interval": 0}])
def test_bad_retention_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        PostgresStreamBridge("postgresql://localhost/x", **options)


async def test_run_retention_refuses_something_that_is_not_a_policy(bridge: PostgresStreamBridge) -> None:
    with pytest.raises(ConfigurationError):
        await bridge.run_retention({"max_events_per_run": 1})  # type: ignore[arg-type]


async def test_run_retention_before_start_says_to_start(dsn: str) -> None:
    with pytest.raises(BridgeNotStartedError):
        await PostgresStreamBridge(dsn).run_retention()
