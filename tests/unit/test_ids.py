"""Event IDs and the resume table (docs/behaviour.md sections 2 and 3), without a database."""

from __future__ import annotations

import pytest

from pgbridge import InvalidEventError, ResumeResult
from pgbridge.ids import (
    EventId,
    RetainedRange,
    format_event_id,
    parse_event_id,
    resolve_cursor,
    validate_run_id,
)

# A run whose retained events are seqs 5..9; event 7 was created at ms 1700.
RETAINED = RetainedRange(first=5, last=9, stored_ms=1700)


def test_event_id_is_ms_dash_seq() -> None:
    assert format_event_id(1700000000123, 42) == "1700000000123-42"


def test_parse_round_trips_format() -> None:
    assert parse_event_id("1700000000123-42") == EventId(ms=1700000000123, seq=42)
    assert str(EventId(ms=5, seq=6)) == "5-6"


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "-",
        "12",
        "12-",
        "-3",
        "a-1",
        "1-b",
        "1-2-3",
        " 1-2",
        "1-2 ",
        "1_2",
        "+1-2",
        "1--2",
        "١-٢",
        "1-2\n",
    ],
)
def test_malformed_cursors_do_not_parse(cursor: str) -> None:
    assert parse_event_id(cursor) is None


def test_cursor_over_64_characters_does_not_parse() -> None:
    assert parse_event_id("1-" + "9" * 63) is None  # 65 characters
    assert parse_event_id("1-" + "9" * 62) == EventId(ms=1, seq=int("9" * 62))  # 64


def test_none_cursor_is_fresh_from_first_retained() -> None:
    assert resolve_cursor(None, RETAINED) == ResumeResult(next_offset=5, status="fresh")


def test_malformed_cursor_is_invalid_from_first_retained() -> None:
    assert resolve_cursor("garbage", RETAINED) == ResumeResult(next_offset=5, status="invalid")


def test_cursor_of_a_retained_event_with_its_ms_resumes_after_it() -> None:
    assert resolve_cursor("1700-7", RETAINED) == ResumeResult(next_offset=8, status="resumed")


def test_cursor_with_another_ms_is_unknown() -> None:
    assert resolve_cursor("1699-7", RETAINED) == ResumeResult(next_offset=5, status="unknown")


def test_cursor_just_before_first_retained_resumes_with_the_deleted_events_kept_ms() -> None:
    kept = RetainedRange(first=5, last=9, trimmed_ms=123)
    assert resolve_cursor("123-4", kept) == ResumeResult(next_offset=5, status="resumed")


def test_cursor_just_before_first_retained_with_another_ms_is_unknown() -> None:
    # An ID of another run, or of another history of this one (a failover), at the deleted seq.
    kept = RetainedRange(first=5, last=9, trimmed_ms=123)
    assert resolve_cursor("124-4", kept) == ResumeResult(next_offset=5, status="unknown")


def test_cursor_just_before_first_retained_resumes_with_any_ms_when_no_time_was_kept() -> None:
    # Trims made before revision 0012 kept no creation time: nothing to compare with.
    assert resolve_cursor("123-4", RetainedRange(first=5, last=9)) == ResumeResult(
        next_offset=5, status="resumed"
    )


def test_seq_zero_resumes_whatever_was_trimmed() -> None:
    assert resolve_cursor("7-0", RetainedRange(first=1, last=3, trimmed_ms=5)) == ResumeResult(
        next_offset=1, status="resumed"
    )


def test_cursor_before_retained_range_is_evicted_with_exact_gap() -> None:
    assert resolve_cursor("1-2", RETAINED) == ResumeResult(next_offset=5, status="evicted", gap_count=2)


def test_cursor_past_last_is_unknown() -> None:
    assert resolve_cursor("1700-10", RETAINED) == ResumeResult(next_offset=5, status="unknown")


def test_fully_evicted_run_still_reports_exact_gap() -> None:
    tombstone = RetainedRange(first=10, last=9)
    assert resolve_cursor("1-3", tombstone) == ResumeResult(next_offset=10, status="evicted", gap_count=6)
    assert resolve_cursor("1-9", tombstone) == ResumeResult(next_offset=10, status="resumed")
    kept = RetainedRange(first=10, last=9, trimmed_ms=1)
    assert resolve_cursor("2-9", kept) == ResumeResult(next_offset=10, status="unknown")


def test_missing_run_resumes_from_zero_and_nothing_else() -> None:
    missing = RetainedRange.missing_run()
    assert resolve_cursor(None, missing) == ResumeResult(next_offset=1, status="fresh")
    assert resolve_cursor("99-0", missing) == ResumeResult(next_offset=1, status="resumed")
    assert resolve_cursor("99-1", missing) == ResumeResult(next_offset=1, status="unknown")
    assert resolve_cursor("x", missing) == ResumeResult(next_offset=1, status="invalid")


@pytest.mark.parametrize("run_id", ["", "a" * 256, "nul\x00", "\ud800", 5, None, b"bytes"])
def test_bad_run_ids_are_rejected(run_id: object) -> None:
    with pytest.raises(InvalidEventError):
        validate_run_id(run_id)


@pytest.mark.parametrize(
    "run_id", ["a", "a" * 255, "thread/1/run 2", "ünïcødé ✓", "'; DROP TABLE run_events; --"]
)
def test_good_run_ids_are_accepted(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id
