"""A run's shared tail (pgbridge.engine.feed.RunFeed) as the live path uses it: events taken
from wake-ups, and the next event a subscriber yields found without a page.

No database: the feed's reads are never reached here (a feed that must read queues
itself with ``refill``, recorded instead).
"""

from __future__ import annotations

import time
from typing import cast

from pgbridge.engine.feed import RunFeed
from pgbridge.engine.replica import ReadRouter
from pgbridge.store.events import LoggedEvent, RunState

MS = 1_700_000_000_000


def event(seq: int, *, terminal: bool = False) -> LoggedEvent:
    return LoggedEvent(seq, MS + seq, "end" if terminal else "token", f'{{"i": {seq}}}', terminal)


def synced_feed(events: int, *, buffer_size: int = 8) -> tuple[RunFeed, list[RunFeed]]:
    """A feed that has read a run of *events* events (all in its buffer), and the refills it asks."""
    refills: list[RunFeed] = []
    feed = RunFeed(
        "run",
        cast(ReadRouter, None),
        buffer_size=buffer_size,
        page_size=10,
        clock=time.monotonic,
        refill=refills.append,
    )
    feed.synced, feed.high_seq, feed.state = True, 0, RunState(exists=True)
    for seq in range(1, events + 1):
        feed.take(event(seq), MS + seq - 1 if seq > 1 else None)
    return feed, refills


def test_an_event_that_follows_the_newest_is_taken_without_a_read() -> None:
    feed, refills = synced_feed(2)
    feed.take(event(3), MS + 2)
    assert feed.high_seq == 3
    assert (feed.state.last_seq, feed.state.last_ms) == (3, MS + 3)
    assert refills == []


def test_an_event_after_another_event_than_the_newest_makes_the_feed_read() -> None:
    """Its prev_ms names another event at the feed's newest seq: another history."""
    feed, refills = synced_feed(2)
    feed.take(event(3), MS + 999)
    assert feed.high_seq == 2
    assert refills == [feed]


def test_an_event_past_a_gap_makes_the_feed_read() -> None:
    feed, refills = synced_feed(2)
    feed.take(event(5), MS + 4)
    assert feed.high_seq == 2
    assert refills == [feed]


def test_a_taken_terminal_event_ends_the_run_in_the_feeds_state() -> None:
    feed, _ = synced_feed(2)
    feed.take(event(3, terminal=True), MS + 2)
    assert feed.state.terminal_seq == 3


def test_the_event_after_a_buffered_one_is_found_from_it() -> None:
    feed, _ = synced_feed(3)
    first = feed.buffered_after(0)
    assert first is not None
    following = feed.following(first.events[0])
    assert following is not None and following.seq == 2


def test_the_newest_event_has_none_after_it_and_is_caught_up() -> None:
    feed, _ = synced_feed(3)
    page = feed.buffered_after(2)
    assert page is not None
    (newest,) = page.events
    assert feed.following(newest) is None
    assert feed.caught_up(newest)


def test_an_equal_event_that_is_not_the_feeds_own_has_nothing_after_it() -> None:
    """A subscriber that yielded another object for that seq (another read, another history)
    takes the generic path, which compares the pages."""
    feed, _ = synced_feed(3)
    assert feed.following(event(1)) is None
    assert not feed.caught_up(event(3))


def test_an_event_the_buffer_dropped_has_nothing_after_it() -> None:
    feed, _ = synced_feed(3, buffer_size=2)
    assert feed.buffered_after(0) is None  # seq 1 left the buffer
    page = feed.buffered_after(1)
    assert page is not None
    kept = page.events[0]
    feed.forget_before(3)  # retention deleted seq 1 and 2
    assert feed.following(kept) is None


def test_a_run_that_ended_at_the_newest_event_is_not_caught_up() -> None:
    """The generic path yields the end sentinel there."""
    feed, _ = synced_feed(2)
    feed.take(event(3, terminal=True), MS + 2)
    page = feed.buffered_after(2)
    assert page is not None
    assert not feed.caught_up(page.events[0])
