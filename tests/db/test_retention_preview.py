"""``pgbridge retention --dry-run``: :meth:`Inspector.retention_preview` counts what a pass
would do, rule by rule, deletes nothing, and agrees with the pass that follows it."""

from __future__ import annotations

import pytest

from pgbridge import PostgresStreamBridge, RetentionPolicy
from pgbridge.durable_streams.messages import MESSAGE_EVENT, bytes_message
from pgbridge.durable_streams.streams import StreamConfig
from pgbridge.inspection import Inspector
from tests.db.test_stream_expiry import BINARY, expire, make_fork, make_stream
from tests.support.sql_helpers import backdate_events, backdate_run, table_contents

DAY = 86400.0


async def varied_database(bridge: PostgresStreamBridge, dsn: str) -> None:
    """A run for every rule: long runs, old events, old ends, tombstones, silent runs,
    expired streams, forks of deleted and of expired sources."""
    for i in range(6):
        await bridge.publish("long", "token", i)
    for i in range(5):
        await bridge.publish("aged", "token", i)
    await backdate_events(dsn, "aged", 3, 2 * DAY)
    for run_id, ago in (("ended-old", 8 * DAY), ("ended-recent", 1 * DAY), ("tomb", 40 * DAY)):
        for i in range(3):
            await bridge.publish(run_id, "token", i)
        await bridge.publish_end(run_id)
        await backdate_run(dsn, run_id, ago)
    await bridge.publish("silent", "token", 0)
    await backdate_run(dsn, "silent", 3600)
    await make_stream(bridge, "idle", BINARY, b"a", b"b", b"c")
    await expire(dsn, "idle")
    # a deleted source kept for its fork; the fork expires: both go
    await make_stream(bridge, "src", BINARY, b"1", b"2")
    await make_fork(bridge, "fork-of-deleted", "src")
    assert await bridge.streams.delete("src") == "deleted"
    await expire(dsn, "fork-of-deleted")
    # an expired source with a fork: soft-deleted, its events stay
    await make_stream(bridge, "expired-src", BINARY, b"x")
    await make_fork(bridge, "live-fork", "expired-src")
    await bridge.streams.append("live-fork", BINARY, [(MESSAGE_EVENT, bytes_message(b"y"))])
    await expire(dsn, "expired-src")
    created, _ = await bridge.streams.create("fresh", StreamConfig(BINARY, ttl_seconds=60), [])
    assert created


POLICIES = {
    "defaults": RetentionPolicy(),
    "every rule": RetentionPolicy(
        max_events_per_run=4, max_event_age=DAY, ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY
    ),
    "keep none": RetentionPolicy(max_events_per_run=0, ended_run_ttl=None, tombstone_ttl=None),
    "age only": RetentionPolicy(max_event_age=DAY, ended_run_ttl=None, tombstone_ttl=None),
    "zero ttls": RetentionPolicy(ended_run_ttl=0, tombstone_ttl=0, active_timeout=60),
}


@pytest.mark.parametrize("name", POLICIES)
async def test_a_preview_counts_what_the_pass_then_deletes_and_deletes_nothing(
    bridge: PostgresStreamBridge, dsn: str, name: str
) -> None:
    policy = POLICIES[name]
    await varied_database(bridge, dsn)
    before = await table_contents(dsn)
    async with Inspector(dsn) as inspector:
        preview = await inspector.retention_preview(policy)
    assert await table_contents(dsn) == before
    report = await bridge.run_retention(policy)
    assert (
        preview.events_deleted,
        preview.runs_deleted,
        preview.runs_dead_lettered,
        preview.streams_expired,
    ) == (report.events_deleted, report.runs_deleted, report.runs_dead_lettered, report.streams_expired)


async def test_a_preview_says_which_rule_deletes_what(bridge: PostgresStreamBridge, dsn: str) -> None:
    await varied_database(bridge, dsn)
    async with Inspector(dsn) as inspector:
        preview = await inspector.retention_preview(POLICIES["every rule"])
    assert preview.events_by_rule == {
        "max_events_per_run": 2 + 1 + 0,  # long: 6 -> 4; aged: 5 -> 4; silent: dead-lettered, 2 events
        "max_event_age": 2,  # aged: seqs 2-3 (seq 1 went to the first rule)
        "ended_run_ttl": 8,  # ended-old and tomb, 4 events each
        "expired_streams": 3,  # idle (the others have forks, or are forks: fork-of-deleted owns none)
        "deleted_sources": 2,  # src goes with its last fork
    }
    assert (preview.runs_dead_lettered, preview.streams_expired, preview.runs_deleted) == (1, 3, 4)
