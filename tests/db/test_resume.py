"""Resume resolution (docs/behaviour.md §3) through ``bridge.resolve`` on a real PostgreSQL.

Every row of the table, at its boundaries, against runs the bridge wrote and
that retention (``evict_prefix``) trimmed.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgbridge import InvalidEventError, PostgresStreamBridge, ResumeResult
from tests.support.helpers import seq_of
from tests.support.sql_helpers import evict_prefix, table_contents


def ms_of(event_id: str) -> int:
    return int(event_id.split("-")[0])


def result(status: str, next_offset: int, gap_count: int = 0) -> ResumeResult:
    return ResumeResult(next_offset=next_offset, status=status, gap_count=gap_count)  # type: ignore[arg-type]


async def publish_run(bridge: PostgresStreamBridge, run_id: str, count: int) -> list[str]:
    return [await bridge.publish(run_id, "token", i) for i in range(count)]


# -- fresh and resumed ----------------------------------------------------------


async def test_no_cursor_is_fresh_from_the_first_event(bridge: PostgresStreamBridge) -> None:
    await publish_run(bridge, "run", 5)
    assert await bridge.resolve("run", None) == result("fresh", 1)


async def test_cursor_of_a_retained_event_resumes_after_it(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, "run", 5)
    for event_id in ids:
        assert await bridge.resolve("run", event_id) == result("resumed", seq_of(event_id) + 1)


async def test_cursor_of_the_last_event_resumes_at_last_plus_one(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, "run", 3)
    assert await bridge.resolve("run", ids[-1]) == result("resumed", 4)


async def test_cursor_of_the_terminal_event_resumes_past_it(bridge: PostgresStreamBridge) -> None:
    await publish_run(bridge, "run", 2)
    end = await bridge.publish_end("run")
    assert seq_of(end) == 3
    assert await bridge.resolve("run", end) == result("resumed", 4)


@pytest.mark.parametrize("cursor", ["0-0", "1-0", "1700000000000-0", "99999999999999-0", "00-00"])
async def test_seq_zero_with_any_ms_resumes_from_the_start(bridge: PostgresStreamBridge, cursor: str) -> None:
    await publish_run(bridge, "run", 3)
    assert await bridge.resolve("run", cursor) == result("resumed", 1)


async def test_cursor_with_leading_zeros_up_to_64_chars_resumes(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, "run", 2)
    padded = ids[0].rjust(64, "0")
    assert len(padded) == 64
    assert await bridge.resolve("run", padded) == result("resumed", 2)


# -- invalid ------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "1",
        "1-",
        "-1",
        "-1-2",
        "1--2",
        "1-2-3",
        "1_2",
        "1:2",
        "1.5-2",
        "1-2.0",
        "+1-2",
        "1-+2",
        " 1-2",
        "1-2 ",
        "1-2\n",
        "1 -2",
        "0x1-2",
        "1e3-2",
        "١-٢",  # Arabic-Indic digits are digits to \d, not to the spec
        "１-２",  # fullwidth digits
        "null",
        "1-2\x00",
    ],
)
async def test_malformed_cursor_is_invalid_from_the_first_event(
    bridge: PostgresStreamBridge, cursor: str
) -> None:
    await publish_run(bridge, "run", 3)
    assert await bridge.resolve("run", cursor) == result("invalid", 1)


async def test_well_formed_cursor_over_64_chars_is_invalid(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, "run", 2)
    padded = ids[0].rjust(65, "0")  # would name event 1 if its length were allowed
    assert await bridge.resolve("run", padded) == result("invalid", 1)
    assert await bridge.resolve("run", "1" * 70 + "-1") == result("invalid", 1)


async def test_invalid_cursor_on_an_evicted_run_starts_at_the_first_retained(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_run(bridge, "run", 6)
    await evict_prefix(dsn, "run", 4)
    assert await bridge.resolve("run", "garbage") == result("invalid", 4)


# -- unknown ------------------------------------------------------------------


async def test_cursor_past_the_last_event_is_unknown(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, "run", 3)
    ms = ms_of(ids[-1])
    assert await bridge.resolve("run", f"{ms}-4") == result("unknown", 1)
    assert await bridge.resolve("run", f"{ms}-1000") == result("unknown", 1)


async def test_right_seq_with_another_ms_is_unknown(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, "run", 3)
    ms = ms_of(ids[1])
    for other in (ms - 1, ms + 1, 0):
        assert await bridge.resolve("run", f"{other}-2") == result("unknown", 1)


async def test_id_from_another_run_with_the_same_seq_is_unknown(bridge: PostgresStreamBridge) -> None:
    ours = await publish_run(bridge, "run", 3)
    await asyncio.sleep(0.01)  # the server clock moves on: the other run's IDs get other ms
    theirs = await publish_run(bridge, "other", 3)
    assert all(ms_of(a) != ms_of(b) for a, b in zip(ours, theirs, strict=True))
    for event_id in theirs:
        assert await bridge.resolve("run", event_id) == result("unknown", 1)
    for event_id in ours:
        assert await bridge.resolve("other", event_id) == result("unknown", 1)


async def test_id_from_an_earlier_life_of_the_run_id_is_unknown(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    old = await publish_run(bridge, "run", 3)
    conn = await asyncpg.connect(dsn)
    try:  # the run and its tombstone are gone, as retention leaves them
        await conn.execute("SET pgbridge.retention = 'on'")  # the owner lifting the guard
        await conn.execute("DELETE FROM run_events WHERE run_id = 'run'")
        await conn.execute("DELETE FROM run_streams WHERE run_id = 'run'")
    finally:
        await conn.close()
    await asyncio.sleep(0.01)
    new = await publish_run(bridge, "run", 3)
    assert all(ms_of(a) != ms_of(b) for a, b in zip(old, new, strict=True))
    assert await bridge.resolve("run", old[1]) == result("unknown", 1)
    assert await bridge.resolve("run", new[1]) == result("resumed", 3)


@pytest.mark.parametrize(
    "cursor",
    [
        "1-99999999999999999999999",  # seq beyond bigint
        "1-9223372036854775808",  # bigint max + 1
        "1-9223372036854775807",  # bigint max: well-formed, past the last event
    ],
)
async def test_seq_beyond_the_run_even_beyond_bigint_is_unknown(
    bridge: PostgresStreamBridge, cursor: str
) -> None:
    await publish_run(bridge, "run", 3)
    assert await bridge.resolve("run", cursor) == result("unknown", 1)


async def test_ms_beyond_bigint_with_a_retained_seq_is_unknown(bridge: PostgresStreamBridge) -> None:
    await publish_run(bridge, "run", 3)
    assert await bridge.resolve("run", "99999999999999999999999-2") == result("unknown", 1)


async def test_seq_beyond_bigint_on_a_missing_run_is_unknown(bridge: PostgresStreamBridge) -> None:
    assert await bridge.resolve("missing", "1-99999999999999999999999") == result("unknown", 1)


# -- evicted ------------------------------------------------------------------


async def test_cursor_before_the_retained_range_is_evicted_with_exact_gap(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_run(bridge, "run", 10)
    await evict_prefix(dsn, "run", 6)  # retained: 6..10
    assert await bridge.resolve("run", ids[0]) == result("evicted", 6, gap_count=4)
    assert await bridge.resolve("run", ids[1]) == result("evicted", 6, gap_count=3)
    assert await bridge.resolve("run", ids[3]) == result("evicted", 6, gap_count=1)


async def test_seq_zero_on_an_evicted_run_is_evicted_with_everything_deleted_counted(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_run(bridge, "run", 10)
    await evict_prefix(dsn, "run", 6)
    assert await bridge.resolve("run", "0-0") == result("evicted", 6, gap_count=5)


async def test_evicted_cursor_ms_does_not_matter(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_run(bridge, "run", 10)
    await evict_prefix(dsn, "run", 6)
    # A deleted event has no stored ms to compare: the seq alone decides.
    assert await bridge.resolve("run", "123-2") == result("evicted", 6, gap_count=3)


async def test_cursor_just_before_the_first_retained_resumes_only_with_the_deleted_events_ms(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    """docs/behaviour.md §3: for s = first - 1 the run keeps the deleted event's creation time
    (trimmed_ms, revision 0012), so an ID of another run or another history there is unknown."""
    ids = await publish_run(bridge, "run", 10)
    await evict_prefix(dsn, "run", 6)
    assert await bridge.resolve("run", ids[4]) == result("resumed", 6)  # s = first - 1
    assert await bridge.resolve("run", f"{ms_of(ids[4]) + 1}-5") == result("unknown", 6)
    assert await bridge.resolve("run", "1-5") == result("unknown", 6)
    assert await bridge.resolve("run", "1-0") == result("evicted", 6, gap_count=5)


async def test_a_fully_evicted_run_checks_the_ms_of_its_last_event_too(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_run(bridge, "run", 4)
    await evict_prefix(dsn, "run", 5)  # first = last + 1 = 5
    assert await bridge.resolve("run", ids[3]) == result("resumed", 5)
    assert await bridge.resolve("run", f"{ms_of(ids[3]) + 2}-4") == result("unknown", 5)


async def test_retained_events_still_resume_and_check_ms_after_eviction(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_run(bridge, "run", 10)
    await evict_prefix(dsn, "run", 6)
    assert await bridge.resolve("run", ids[5]) == result("resumed", 7)
    assert await bridge.resolve("run", ids[9]) == result("resumed", 11)
    assert await bridge.resolve("run", f"{ms_of(ids[5]) + 1}-6") == result("unknown", 6)
    assert await bridge.resolve("run", f"{ms_of(ids[9])}-11") == result("unknown", 6)
    assert await bridge.resolve("run", None) == result("fresh", 6)


async def test_fully_evicted_run_still_resolves_evicted_with_exact_count(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_run(bridge, "run", 4)
    await evict_prefix(dsn, "run", 5)  # past the last: nothing retained, first = last + 1
    assert await bridge.resolve("run", ids[0]) == result("evicted", 5, gap_count=3)
    assert await bridge.resolve("run", ids[2]) == result("evicted", 5, gap_count=1)
    assert await bridge.resolve("run", "0-0") == result("evicted", 5, gap_count=4)
    assert await bridge.resolve("run", ids[3]) == result("resumed", 5)  # s = last = first - 1
    assert await bridge.resolve("run", f"{ms_of(ids[3])}-5") == result("unknown", 5)
    assert await bridge.resolve("run", None) == result("fresh", 5)
    assert await bridge.resolve("run", "nope") == result("invalid", 5)


async def test_fully_evicted_ended_run_resolves_evicted_with_exact_count(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_run(bridge, "run", 4)
    end = await bridge.publish_end("run")
    await evict_prefix(dsn, "run", 6)
    assert await bridge.resolve("run", ids[1]) == result("evicted", 6, gap_count=3)
    assert await bridge.resolve("run", end) == result("resumed", 6)


# -- a run that does not exist ------------------------------------------------


async def test_missing_run_no_cursor_is_fresh_at_one(bridge: PostgresStreamBridge) -> None:
    assert await bridge.resolve("missing", None) == result("fresh", 1)


@pytest.mark.parametrize("cursor", ["0-0", "1700000000000-0"])
async def test_missing_run_seq_zero_is_resumed_at_one(bridge: PostgresStreamBridge, cursor: str) -> None:
    assert await bridge.resolve("missing", cursor) == result("resumed", 1)


@pytest.mark.parametrize("cursor", ["1700000000000-1", "0-1", "5-42"])
async def test_missing_run_other_well_formed_id_is_unknown_at_one(
    bridge: PostgresStreamBridge, cursor: str
) -> None:
    assert await bridge.resolve("missing", cursor) == result("unknown", 1)


async def test_missing_run_malformed_cursor_is_invalid_at_one(bridge: PostgresStreamBridge) -> None:
    assert await bridge.resolve("missing", "not-an-id") == result("invalid", 1)


async def test_id_of_an_existing_run_is_unknown_on_a_missing_run(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, "run", 2)
    assert await bridge.resolve("missing", ids[0]) == result("unknown", 1)


# -- no side effects, bad arguments ----------------------------------------------


async def test_resolve_has_no_side_effects(bridge: PostgresStreamBridge, dsn: str) -> None:
    ids = await publish_run(bridge, "run", 10)
    await evict_prefix(dsn, "run", 4)
    await bridge.mark_awaiting_input("run")
    await bridge.publish_end("ended")
    before = await table_contents(dsn)
    cursors = [None, ids[0], ids[2], ids[5], ids[-1], "0-0", "garbage", "1-99", "1-99999999999999999999999"]
    for run_id in ("run", "ended", "missing", "another-missing"):
        for cursor in cursors:
            await bridge.resolve(run_id, cursor)
    assert await table_contents(dsn) == before  # no row created, changed or deleted


async def test_resolving_a_missing_run_creates_no_row(bridge: PostgresStreamBridge, dsn: str) -> None:
    assert await bridge.resolve("missing", "0-0") == result("resumed", 1)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM run_streams") == 0
        assert await conn.fetchval("SELECT count(*) FROM run_events") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("cursor", [5, 1.5, b"1-1", ["1-1"], ("1", "1"), object()])
async def test_non_str_cursor_raises_invalid_event_error(
    bridge: PostgresStreamBridge, cursor: object
) -> None:
    await publish_run(bridge, "run", 1)
    with pytest.raises(InvalidEventError):
        await bridge.resolve("run", cursor)  # type: ignore[arg-type]


@pytest.mark.parametrize("run_id", ["", "r" * 256, "nul\x00", "\ud800", 5, None])
async def test_bad_run_id_raises_invalid_event_error(bridge: PostgresStreamBridge, run_id: object) -> None:
    with pytest.raises(InvalidEventError):
        await bridge.resolve(run_id, None)  # type: ignore[arg-type]


async def test_run_id_of_255_chars_resolves(bridge: PostgresStreamBridge) -> None:
    run_id = "r" * 255
    first = await bridge.publish(run_id, "token", 1)
    assert await bridge.resolve(run_id, first) == result("resumed", 2)
