"""Expired Durable Streams: the retention pass sweeps them, a bridge publish finds them gone.

An expired stream (past its Expires-At, or idle longer than its TTL) is gone
for every protocol request. A retention pass removes it exactly as a DELETE
would at that moment (soft-deleting a stream forks read, releasing a fork's
source), and a bridge publish to it starts the run anew (as a PUT of the
path recreates it), or refuses while forks still read it. A publish to a
stream whose content type is not JSON is refused and stores nothing.
Streams are expired by moving their clocks back in SQL, so no test sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from pgbridge import (
    PostgresStreamBridge,
    Producer,
    ResumeResult,
    RetentionPolicy,
    StreamContentTypeError,
    StreamGoneError,
)
from pgbridge.durable_streams.forks import ForkRequest
from pgbridge.durable_streams.messages import JSON_TYPE, MESSAGE_EVENT, bytes_message
from pgbridge.durable_streams.streams import StreamConfig
from pgbridge.sql.queries import StreamQueries
from tests.support.sql_helpers import backdate_events, connected, deletion_rows, stream_row

BINARY = "application/octet-stream"
#: Sweeps only: no rule of its own would delete anything of these tests' runs.
SWEEP_ONLY = RetentionPolicy(ended_run_ttl=None, tombstone_ttl=None)


async def make_stream(
    bridge: PostgresStreamBridge, run_id: str, content_type: str = BINARY, *messages: bytes, ttl: int = 60
) -> None:
    """A stream with a sliding TTL and one event per message."""
    texts = [bytes_message(m) if content_type != JSON_TYPE else m.decode() for m in messages]
    created, _ = await bridge.streams.create(
        run_id, StreamConfig(content_type, ttl_seconds=ttl), [(MESSAGE_EVENT, text) for text in texts]
    )
    assert created


async def make_fork(bridge: PostgresStreamBridge, run_id: str, source: str) -> None:
    head = await bridge.streams.head(source)
    assert head is not None
    created, _ = await bridge.streams.create_fork(
        run_id, StreamConfig(head.content_type), ForkRequest(source)
    )
    assert created


async def expire(dsn: str, run_id: str) -> None:
    """Idle for longer than its TTL: its last touch two hours ago."""
    async with connected(dsn) as conn:
        await conn.execute(
            "UPDATE run_streams SET stream_touched_at = now() - interval '2 hours' WHERE run_id = $1", run_id
        )


row_of = stream_row


# -- the retention sweep ------------------------------------------------------------


async def test_a_pass_deletes_an_expired_streams_events_and_run_row(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "idle", BINARY, b"a", b"b", b"c")
    await expire(dsn, "idle")
    report = await bridge.run_retention(SWEEP_ONLY)
    assert await row_of(dsn, "idle") is None
    assert (report.streams_expired, report.events_deleted, report.runs_deleted) == (1, 3, 1)


async def test_a_swept_stream_leaves_a_deletion_record(bridge: PostgresStreamBridge, dsn: str) -> None:
    await make_stream(bridge, "idle", JSON_TYPE, b"1", b"2")
    last_hash = (await row_of(dsn, "idle"))["last_hash"]  # type: ignore[index]
    await expire(dsn, "idle")
    await bridge.run_retention(SWEEP_ONLY)
    [record] = await deletion_rows(dsn, "idle")
    # The sweep trims the events first, then deletes the row: 0 left for the deletion itself.
    assert (record["via"], record["last_seq"], record["last_hash"]) == ("expiry", 2, last_hash)
    assert (await bridge.verify("idle")).verdict == "deleted"


async def test_a_publish_that_finds_a_stream_expired_records_its_deletion(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "old", JSON_TYPE, b"1", b"2", b"3")
    await expire(dsn, "old")
    await bridge.publish("old", "token", "new")
    [record] = await deletion_rows(dsn, "old")
    assert (record["via"], record["last_seq"], record["events_deleted"]) == ("expiry", 3, 3)
    assert (await bridge.verify("old")).ok  # the new run verifies; the record stays


async def test_a_pass_deletes_a_stream_past_its_expires_at(bridge: PostgresStreamBridge, dsn: str) -> None:
    deadline = datetime.now(UTC) + timedelta(hours=1)
    await bridge.streams.create(
        "deadline", StreamConfig(BINARY, expires_at=deadline), [(MESSAGE_EVENT, '"eA=="')]
    )
    async with connected(dsn) as conn:
        await conn.execute(
            "UPDATE run_streams SET stream_expires_at = now() - interval '1 s' WHERE run_id = 'deadline'"
        )
    report = await bridge.run_retention(SWEEP_ONLY)
    assert await row_of(dsn, "deadline") is None
    assert report.streams_expired == 1


async def test_a_pass_leaves_streams_that_have_not_expired_alone(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "fresh", BINARY, b"a")
    await bridge.streams.create(
        "later", StreamConfig(BINARY, expires_at=datetime.now(UTC) + timedelta(hours=1))
    )
    await bridge.publish("plain", "token", 1)
    report = await bridge.run_retention(SWEEP_ONLY)
    assert report.streams_expired == 0 and report.events_deleted == 0
    for run_id in ("fresh", "later", "plain"):
        assert await row_of(dsn, run_id) is not None


async def test_a_pass_deletes_an_expired_streams_events_in_bounded_batches(
    make_bridge: object, dsn: str
) -> None:
    from pgbridge.retention.sweep import RetentionPass

    bridge: PostgresStreamBridge = await make_bridge()  # type: ignore[operator]
    await make_stream(bridge, "long", BINARY, *[b"x"] * 7)
    await expire(dsn, "long")
    batches: list[int] = []
    retention = RetentionPass(
        bridge._db,
        on_dead_lettered=lambda run_id, seq: None,
        on_trimmed=lambda run_id, first_seq: batches.append(first_seq),
        batch_events=3,
    )
    report = await retention.run(SWEEP_ONLY, wait=True)
    assert report is not None and report.events_deleted == 7
    assert batches[:3] == [4, 7, 8]  # three trims of at most 3 events, then the row
    assert await row_of(dsn, "long") is None


async def test_a_pass_soft_deletes_an_expired_source_that_forks_read_and_keeps_its_events(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "source", BINARY, b"a", b"b")
    await make_fork(bridge, "fork", "source")
    await expire(dsn, "source")
    report = await bridge.run_retention(SWEEP_ONLY)
    row = await row_of(dsn, "source")
    assert row is not None and row["stream_deleted_at"] is not None and row["events"] == 2
    assert (report.streams_expired, report.events_deleted, report.runs_deleted) == (1, 0, 0)
    read = await bridge.streams.read_page("fork", 0, max_messages=100, max_bytes=1 << 20)
    assert read is not None and (read.count, read.next_seq) == (2, 2)  # seqs 1 and 2


async def test_sweeping_an_expired_fork_releases_its_source(bridge: PostgresStreamBridge, dsn: str) -> None:
    await make_stream(bridge, "source", BINARY, b"a")
    await make_fork(bridge, "fork", "source")
    await expire(dsn, "fork")
    await bridge.run_retention(SWEEP_ONLY)
    assert await row_of(dsn, "fork") is None
    source = await row_of(dsn, "source")
    assert source is not None and source["fork_refs"] == 0 and source["stream_deleted_at"] is None


async def test_sweeping_the_last_fork_of_a_deleted_source_deletes_the_source_too(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "source", BINARY, b"a", b"b")
    await make_fork(bridge, "fork", "source")
    assert await bridge.streams.delete("source") == "deleted"  # soft: the fork reads it
    await expire(dsn, "fork")
    report = await bridge.run_retention(SWEEP_ONLY)
    assert await row_of(dsn, "fork") is None and await row_of(dsn, "source") is None
    assert (report.streams_expired, report.events_deleted, report.runs_deleted) == (1, 2, 2)


async def test_the_audit_chain_verifies_after_a_sweep(bridge: PostgresStreamBridge, dsn: str) -> None:
    await make_stream(bridge, "source", JSON_TYPE, b"1", b"2")
    await make_fork(bridge, "fork", "source")
    await bridge.streams.append("fork", JSON_TYPE, [(MESSAGE_EVENT, "3")])
    await make_stream(bridge, "gone", JSON_TYPE, b"4")
    await expire(dsn, "source")
    await expire(dsn, "gone")
    await bridge.run_retention(SWEEP_ONLY)
    reports = [report async for report in bridge.verify_all()]
    assert reports and all(report.ok for report in reports), reports
    assert {report.run_id for report in reports} == {"source", "fork"}


# -- publishing into streams -------------------------------------------------------


@pytest.mark.parametrize("content_type", [BINARY, "text/plain"])
async def test_publishing_to_a_non_json_stream_raises_and_stores_nothing(
    bridge: PostgresStreamBridge, dsn: str, content_type: str
) -> None:
    await make_stream(bridge, "bytes", content_type, b"a")
    with pytest.raises(StreamContentTypeError):
        await bridge.publish("bytes", "token", {"t": 1})
    row = await row_of(dsn, "bytes")
    assert row is not None and (row["last_seq"], row["events"]) == (1, 1)


async def test_publish_many_to_a_non_json_stream_raises_and_stores_nothing(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "bytes", BINARY)
    with pytest.raises(StreamContentTypeError):
        await bridge.publish_many("bytes", [("token", 1), ("token", 2)])
    row = await row_of(dsn, "bytes")
    assert row is not None and (row["last_seq"], row["events"]) == (0, 0)


async def test_a_producer_publish_to_a_non_json_stream_raises_and_stores_nothing(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "bytes", BINARY)
    with pytest.raises(StreamContentTypeError):
        await bridge.publish("bytes", "token", 1, producer=Producer("w", 0, 0))
    row = await row_of(dsn, "bytes")
    assert row is not None and row["events"] == 0


async def test_a_refused_publish_leaves_the_other_publishes_of_its_batch_stored(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "bytes", BINARY)
    results = await asyncio.gather(
        *[bridge.publish(f"run-{i}", "token", i) for i in range(20)],
        bridge.publish("bytes", "token", "refused"),
        return_exceptions=True,
    )
    assert isinstance(results[-1], StreamContentTypeError)
    assert all(isinstance(result, str) for result in results[:-1]), results
    assert bridge._publisher.batches < 21


async def test_publishing_to_a_json_stream_appends_after_its_messages(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "json", JSON_TYPE, b"1")
    event_id = await bridge.publish("json", "token", 2)
    assert event_id.endswith("-2")


async def test_publishing_to_an_expired_stream_starts_a_new_run_at_seq_one(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "old", JSON_TYPE, b"1", b"2", b"3")
    await expire(dsn, "old")
    event_id = await bridge.publish("old", "token", "new")
    assert event_id.endswith("-1")
    row = await row_of(dsn, "old")
    assert row is not None and row["events"] == 1 and row["content_type"] is None
    assert row["stream_ttl_seconds"] is None
    read = await bridge.streams.read_page("old", 0, max_messages=100, max_bytes=1 << 20)
    assert read is not None and (read.count, read.next_seq) == (1, 1)  # seq 1 alone
    assert (await bridge.verify("old")).ok


async def test_an_id_from_an_expired_streams_earlier_life_is_unknown_to_the_new_run(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    # docs/behaviour.md §3: an ID of an earlier life of a run id resolves unknown.
    await make_stream(bridge, "lives", JSON_TYPE, b"1", b"2")
    await backdate_events(dsn, "lives", 2, 3600)  # the earlier life: an hour older than the new one
    async with connected(dsn) as conn:
        old_ms = await conn.fetchval("SELECT created_ms FROM run_events WHERE run_id = 'lives' AND seq = 1")
    await expire(dsn, "lives")
    await bridge.publish("lives", "token", "new")
    unknown = ResumeResult(next_offset=1, status="unknown")
    assert await bridge.resolve("lives", f"{old_ms}-1") == unknown  # seq 1 is another event now
    assert await bridge.resolve("lives", f"{old_ms}-2") == unknown  # past the new life's end


async def test_publishing_to_an_expired_binary_stream_starts_a_new_json_run(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "old", BINARY, b"a")
    await expire(dsn, "old")
    assert (await bridge.publish_many("old", [("token", 1), ("token", 2)]))[-1].endswith("-2")
    row = await row_of(dsn, "old")
    assert row is not None and row["content_type"] is None and row["events"] == 2


async def test_a_producer_publish_to_an_expired_stream_starts_a_new_run(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "old", JSON_TYPE, b"1", b"2")
    await expire(dsn, "old")
    assert (await bridge.publish("old", "token", 3, producer=Producer("w", 0, 0))).endswith("-1")
    row = await row_of(dsn, "old")
    assert row is not None and row["content_type"] is None and row["events"] == 1


async def test_publishing_to_an_expired_fork_releases_its_source(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "source", JSON_TYPE, b"1")
    await make_fork(bridge, "fork", "source")
    await expire(dsn, "fork")
    assert (await bridge.publish("fork", "token", 1)).endswith("-1")
    row = await row_of(dsn, "fork")
    assert row is not None and row["fork_source_run_id"] is None and row["events"] == 1
    source = await row_of(dsn, "source")
    assert source is not None and source["fork_refs"] == 0


async def test_publishing_to_an_expired_source_that_forks_read_raises_gone_and_soft_deletes_it(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "source", JSON_TYPE, b"1")
    await make_fork(bridge, "fork", "source")
    await expire(dsn, "source")
    with pytest.raises(StreamGoneError):
        await bridge.publish("source", "token", 2)
    row = await row_of(dsn, "source")
    assert row is not None and row["stream_deleted_at"] is not None and row["events"] == 1


async def test_publishing_to_a_soft_deleted_stream_raises_gone(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "source", JSON_TYPE, b"1")
    await make_fork(bridge, "fork", "source")
    assert await bridge.streams.delete("source") == "deleted"
    with pytest.raises(StreamGoneError):
        await bridge.publish("source", "token", 2)
    with pytest.raises(StreamGoneError):
        await bridge.publish("source", "token", 2, producer=Producer("w", 0, 0))
    row = await row_of(dsn, "source")
    assert row is not None and row["events"] == 1


def test_the_cli_prints_how_many_expired_streams_a_pass_removed() -> None:
    from pgbridge.cli.main import format_report
    from pgbridge.retention.policy import RetentionReport

    line = format_report(RetentionReport(events_deleted=3, runs_deleted=1, streams_expired=1), 0.01)
    assert "events_deleted=3 runs_deleted=1" in line and "streams_expired=1" in line


# -- tombstones of forks ------------------------------------------------------------


async def end_long_ago(dsn: str, run_id: str) -> None:
    """Ended 100 days ago."""
    async with connected(dsn) as conn:
        await conn.execute(
            "UPDATE run_streams SET ended_at = now() - interval '100 days' WHERE run_id = $1", run_id
        )


TOMBSTONES = RetentionPolicy(ended_run_ttl=86_400, tombstone_ttl=86_400)


async def test_deleting_the_tombstone_of_a_closed_fork_releases_its_source(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "source", BINARY, b"a", ttl=10**6)
    await make_fork(bridge, "fork", "source")
    assert (await bridge.streams.append("fork", BINARY, [], close=True)).kind == "closed_now"
    await end_long_ago(dsn, "fork")  # a closed fork with no own events: a tombstone
    report = await bridge.run_retention(TOMBSTONES)
    assert await row_of(dsn, "fork") is None and report.runs_deleted == 1
    source = await row_of(dsn, "source")
    assert source is not None and source["fork_refs"] == 0


async def test_deleting_the_tombstone_of_the_last_fork_of_a_deleted_source_deletes_the_source(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await make_stream(bridge, "source", BINARY, b"a", b"b", ttl=10**6)
    await make_fork(bridge, "fork", "source")
    assert await bridge.streams.delete("source") == "deleted"  # soft: the fork reads it
    assert (await bridge.streams.append("fork", BINARY, [], close=True)).kind == "closed_now"
    await end_long_ago(dsn, "fork")
    report = await bridge.run_retention(TOMBSTONES)
    assert await row_of(dsn, "fork") is None and await row_of(dsn, "source") is None
    assert (report.runs_deleted, report.events_deleted) == (2, 2)


async def test_a_touch_does_not_revive_an_expired_stream(bridge: PostgresStreamBridge, dsn: str) -> None:
    await make_stream(bridge, "idle", JSON_TYPE, b'{"a":1}')
    await expire(dsn, "idle")
    async with connected(dsn) as conn:  # the TTL touch of a read racing the expiry
        await conn.execute(StreamQueries.for_schema("public").touch_stream, "idle")
    assert await bridge.streams.read_page("idle", 0, max_messages=10, max_bytes=1 << 20) is None
