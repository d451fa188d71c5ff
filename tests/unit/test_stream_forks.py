"""Durable Streams fork rules (PROTOCOL.md 4.2): pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgbridge.durable_streams.forks import ForkPoint, fork_point, inherited_expiry
from pgbridge.durable_streams.messages import bytes_message
from pgbridge.durable_streams.offsets import Offset, parse_fork_offset
from pgbridge.exceptions import ForkOffsetError

HELLO = bytes_message(b"hello")


def test_fork_offsets_accept_this_servers_offsets_the_start_and_the_tail() -> None:
    assert parse_fork_offset(None) is None  # the source's tail
    assert parse_fork_offset("now") is None
    assert parse_fork_offset("-1") == Offset("seq", 0, 0)
    assert parse_fork_offset("0000000000000000_0000000000000000") == Offset(
        "seq", 0, 0
    )  # the reference's too
    assert parse_fork_offset("0000000000000042_0001765000000123") == Offset("seq", 42, 1_765_000_000_123)
    assert parse_fork_offset("0000000000000042") == Offset("seq", 42, None)  # an earlier version's
    for bad in ("banana", "9999999999999999_", "", "42"):
        with pytest.raises(ValueError):
            parse_fork_offset(bad)


def test_a_json_sub_offset_counts_messages_and_may_not_pass_the_tail() -> None:
    assert fork_point(1, 0, 4, "application/json", None) == ForkPoint(1)
    assert fork_point(1, 2, 4, "application/json", None) == ForkPoint(3)
    assert fork_point(1, 3, 4, None, None) == ForkPoint(4)  # a run born from publish is JSON
    with pytest.raises(ForkOffsetError):
        fork_point(1, 4, 4, "application/json", None)
    with pytest.raises(ForkOffsetError):
        fork_point(5, 0, 4, "application/json", None)


def test_a_binary_sub_offset_cuts_the_next_message_or_passes_it_whole() -> None:
    assert fork_point(0, 3, 1, "text/plain", HELLO) == ForkPoint(0, bytes_message(b"hel"))
    assert fork_point(0, 5, 1, "text/plain", HELLO) == ForkPoint(1)
    with pytest.raises(ForkOffsetError):
        fork_point(0, 6, 1, "text/plain", HELLO)
    with pytest.raises(ForkOffsetError):
        fork_point(1, 1, 1, "text/plain", None)  # nothing after the tail


def test_a_fork_gets_its_own_expiry_or_else_its_sources() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert inherited_expiry(None, None, None, None) == (None, None)
    assert inherited_expiry(None, None, 60, None) == (60, None)
    assert inherited_expiry(None, None, None, at) == (None, at)
    assert inherited_expiry(10, None, None, at) == (10, None)
    assert inherited_expiry(None, at, 60, None) == (None, at)
