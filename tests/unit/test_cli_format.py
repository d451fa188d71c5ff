"""How the inspection commands print things (pgbridge.cli.format): pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgbridge.cli.format import EventLine, event_line, event_text, gap_line, human_duration, timestamp


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.25, "250ms"),
        (2, "2.0s"),
        (42, "42s"),
        (185, "3m 05s"),
        (2 * 3600 + 3 * 60 + 9, "2h 03m"),
        (3 * 86400 + 4 * 3600, "3d 04h"),
    ],
)
def test_durations_are_shown_in_their_two_largest_units(seconds: float, shown: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == shown


def test_times_are_shown_in_utc_to_the_millisecond() -> None:
    moment = datetime(2026, 11, 27, 11, 0, 0, 123456, tzinfo=UTC).astimezone()
    assert timestamp(moment) == "2026-11-27T11:00:00.123Z"


def test_an_event_id_alone_gives_the_events_creation_time() -> None:
    line = EventLine.from_id("run", "1764000000123-5", "token", None)
    assert timestamp(line.created_at) == "2025-11-24T16:00:00.123Z"


def test_an_event_line_is_time_id_name_and_data_as_json() -> None:
    line = EventLine.from_id("run", "1764000000123-5", "token", {"text": "héllo"})
    assert event_line(line) == '2025-11-24T16:00:00.123Z  1764000000123-5  token  {"text": "héllo"}'


def test_the_coloured_event_line_has_the_same_text() -> None:
    line = EventLine.from_id("run", "1764000000123-5", "end", [1, None])
    assert event_text(line).plain == event_line(line)


def test_a_gap_line_says_how_many_events_were_deleted_and_where_it_goes_on() -> None:
    data = {"requested_event_id": "1-1", "gap_count": 3, "earliest_available_event_id": "9-5"}
    assert gap_line(data) == "-- gap: 3 event(s) deleted by retention after 1-1; going on from 9-5 --"


def test_stats_shows_the_last_pass_policy_as_the_options_that_give_it() -> None:
    from dataclasses import asdict

    from pgbridge import RetentionPolicy
    from pgbridge.cli.format import stats_view
    from pgbridge.inspection import RetentionPassRecord, Stats

    now = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    record = RetentionPassRecord(now, now, 1, 0, 0, 0, asdict(RetentionPolicy(max_events_per_run=500)), 3)
    shown = plain_text(stats_view(Stats("public", now, [], [], None, record), colour=False))
    assert (
        "policy: --max-events-per-run 500 --max-event-age none --ended-run-ttl 7d --tombstone-ttl 30d "
        "--active-timeout 10m --awaiting-input-timeout 2h" in shown
    )
    assert "604800" not in shown and "None" not in shown


def plain_text(renderable: object) -> str:
    from pgbridge.cli.format import plain

    return plain(renderable)  # type: ignore[arg-type]
