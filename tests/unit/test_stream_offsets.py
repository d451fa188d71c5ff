"""Durable Streams offsets and cursors: pure functions, no database."""

from __future__ import annotations

import pytest

from pgbridge.durable_streams.offsets import Offset, format_offset, parse_offset, response_cursor


def test_offsets_sort_lexicographically_in_stream_order_whatever_their_times() -> None:
    positions = [(0, 0), (1, 1_765_000_000_999), (2, 1_765_000_000_001), (9, 5), (10, 4), (12345, 10**15)]
    offsets = [format_offset(seq, ms) for seq, ms in positions]
    assert sorted(offsets) == offsets
    assert len(set(offsets)) == len(offsets)


def test_offsets_round_trip_and_never_look_like_the_sentinels() -> None:
    for seq, ms in ((0, 0), (1, 1_765_000_000_123), (42, 7), (10**16 - 1, 10**16 - 1)):
        text = format_offset(seq, ms)
        assert parse_offset(text) == Offset("seq", seq, ms)
        assert text not in ("-1", "now")
        assert not set(text) & set(",&=?/")


def test_the_start_is_spelled_as_the_reference_server_spells_it() -> None:
    assert format_offset(0, 0) == "0000000000000000_0000000000000000"


def test_the_sentinels_mean_the_start_and_the_tail() -> None:
    assert (
        parse_offset(None) == parse_offset("-1") == Offset("seq", 0, 0) == parse_offset(format_offset(0, 0))
    )
    assert parse_offset("now") == Offset("now")


def test_a_bare_seq_offset_of_earlier_versions_is_read_without_a_time() -> None:
    assert parse_offset("0000000000000042") == Offset("seq", 42, None)
    assert not parse_offset("0000000000000042").names_another_event(1_765_000_000_000)


def test_an_offset_names_another_event_only_when_both_times_are_known_and_differ() -> None:
    offset = parse_offset(format_offset(3, 1_765_000_000_001))
    assert offset.names_another_event(1_765_000_000_002)  # a failover's replacement, the next timeline
    assert not offset.names_another_event(1_765_000_000_001)
    assert not offset.names_another_event(None)  # deleted, its time not kept


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "-2",
        "abc",
        "00000000000000001",
        "0" * 15 + "x",
        "٣" * 16,
        "NOW",
        "0" * 16 + "_",
        "0" * 16 + "_" + "0" * 15,
        "0" * 16 + "_" + "0" * 16 + "_",
        "_" + "0" * 16,
        "0" * 16 + "_" + "٣" * 16,
        "0" * 16 + "-" + "0" * 16,
    ],
)
def test_malformed_offsets_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_offset(text)


@pytest.mark.parametrize(("seq", "ms"), [(10**16, 0), (-1, 0), (1, -1), (1, 10**16)])
def test_a_position_without_an_offset_raises(seq: int, ms: int) -> None:
    with pytest.raises(ValueError):
        format_offset(seq, ms)


def test_cursors_move_past_an_echoed_cursor() -> None:
    now = 1_800_000_000.0
    current = response_cursor(None, now=now)
    assert current.isdigit()
    assert int(response_cursor(current, now=now)) > int(current)
    later = str(int(current) + 500)
    assert int(response_cursor(later, now=now)) > int(later)
    assert response_cursor("garbage", now=now) == current
