"""Durable Streams offsets and cursors: pure functions, no database."""

from __future__ import annotations

import pytest

from pgbridge.durable_streams.offsets import Offset, format_offset, parse_offset, response_cursor


def test_offsets_sort_lexicographically_in_stream_order() -> None:
    seqs = [0, 1, 2, 9, 10, 99, 100, 12345, 10**15]
    offsets = [format_offset(seq) for seq in seqs]
    assert sorted(offsets) == offsets
    assert len(set(offsets)) == len(offsets)


def test_offsets_round_trip_and_never_look_like_the_sentinels() -> None:
    for seq in (0, 1, 42, 10**16 - 1):
        text = format_offset(seq)
        assert parse_offset(text) == Offset("seq", seq)
        assert text not in ("-1", "now")
        assert not set(text) & set(",&=?/")


def test_the_sentinels_mean_the_start_and_the_tail() -> None:
    assert parse_offset(None) == parse_offset("-1") == Offset("seq", 0)
    assert parse_offset("now") == Offset("now")


@pytest.mark.parametrize("text", ["", "1", "-2", "abc", "00000000000000001", "0" * 15 + "x", "٣" * 16, "NOW"])
def test_malformed_offsets_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_offset(text)


def test_a_seq_without_an_offset_raises() -> None:
    with pytest.raises(ValueError):
        format_offset(10**16)


def test_cursors_move_past_an_echoed_cursor() -> None:
    now = 1_800_000_000.0
    current = response_cursor(None, now=now)
    assert current.isdigit()
    assert int(response_cursor(current, now=now)) > int(current)
    later = str(int(current) + 500)
    assert int(response_cursor(later, now=now)) > int(later)
    assert response_cursor("garbage", now=now) == current
