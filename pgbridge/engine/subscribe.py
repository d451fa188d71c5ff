"""One subscription: resume, replay, follow, heartbeat, report gaps, stop.

A Durable Streams fork's subscription first reads what the fork inherits
(its source chain's events up to the fork point) with its own paged reads,
then follows the fork's feed like any run's: the inherited part never
changes, so only the fork's own tail is shared and woken.

The loop cannot miss a wake-up: the waiter is registered before the first
read, and cleared before every read, so a commit that lands during a read
sets it again and the next wait returns at once. A database outage is not
an error for a subscriber: it heartbeats, retries, and continues from its
cursor once PostgreSQL is back, yielding nothing twice.

Nor does it continue onto another history. Every page says what the run
stores at the subscriber's cursor (``Page.after_ms``); when that is not the
event it last yielded, or the run holds fewer events than its cursor, the
events it yielded are gone (an asynchronous failover promoted a standby that
never had them, or the run was deleted and published again) and their
continuation does not exist: the subscription raises
:class:`~pgbridge.exceptions.RunHistoryChangedError` instead of yielding the
new history as if it followed (docs/behaviour.md §6). A cursor still in the
history (its event survived) goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pgbridge.connector import Backoff
from pgbridge.contract import (
    CANCELLED_SENTINEL,
    END_SENTINEL,
    GAP_EVENT,
    HEARTBEAT_SENTINEL,
    ResumeResult,
    StreamEvent,
)
from pgbridge.engine.feed import FeedRegistry
from pgbridge.exceptions import DatabaseUnavailableError, RunHistoryChangedError
from pgbridge.ids import parse_event_id
from pgbridge.metrics import NO_METRICS, BridgeMetrics
from pgbridge.store.events import LoggedEvent, Page, Record, RunState, event_id

logger = logging.getLogger(__name__)

OnGap = Literal["continue", "stop"]


@dataclass(frozen=True, slots=True)
class Start:
    """Where a subscription starts: the cursor's resolution, and for a fork the seq up
    to which its events are its source chain's (None for a run that is no fork)."""

    resume: ResumeResult
    fork_seq: int | None = None


class Switch:
    """A flag the hot loops read as an attribute (a call per event cost a replay ~3 %)."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False


@dataclass(frozen=True, slots=True)
class SubscriptionContext:
    """What a subscription needs from its bridge."""

    feeds: FeedRegistry
    #: Resolve a cursor (docs/behaviour.md §3); a fork's against its stitched view.
    start: Callable[[str, str | None], Awaitable[Start]]
    #: A fork's inherited events after a seq: (run_id, cursor seq, fork_seq) -> Page.
    read_inherited: Callable[[str, int, int], Awaitable[Page]]
    #: On once the bridge is closed: every subscription yields CANCELLED_SENTINEL and ends.
    closed: Switch
    backoff: Backoff
    metrics: BridgeMetrics = NO_METRICS


def gap_marker(requested_event_id: str | None, gap_count: int, state: RunState) -> StreamEvent:
    """The ``__gap__`` marker of docs/behaviour.md §4, from the read that found the gap."""
    return StreamEvent(
        id="",
        event=GAP_EVENT,
        data={
            "requested_event_id": requested_event_id,
            "gap_count": gap_count,
            "earliest_available_event_id": state.earliest_event_id,
            "latest_available_event_id": state.latest_event_id,
        },
    )


def start_cursor(resume: ResumeResult) -> int:
    """The seq a subscription reads after. An evicted cursor stays where the
    client was, so the first read reports the gap (with counts as of that read)."""
    return resume.next_offset - 1 - resume.gap_count


#: A subscriber behind the shared tail reads pages that grow (doubling) while each one
#: comes back full, up to this many times the configured page size: fewer statements and
#: hops per event for a long replay, the usual page again once it has caught up.
CATCH_UP_GROWTH = 8

#: While a catch-up page is yielded with the next one being read, the event loop gets a turn
#: every this many rows, so the next page arrives (and is decoded) meanwhile.
LOOP_TURN_EVERY = 512


async def subscription(
    ctx: SubscriptionContext,
    run_id: str,
    last_event_id: str | None,
    heartbeat_interval: float,
    on_gap: OnGap,
    *,
    stored: bool = False,
    before_start: Callable[[], None] | None = None,
) -> AsyncGenerator[StreamEvent | LoggedEvent, None]:
    """The events of *run_id* after *last_event_id*, then live ones, until terminal.

    With *stored*, events come as :class:`~pgbridge.store.events.LoggedEvent`
    (their data as the stored JSON text, never decoded: the HTTP surfaces
    send it as it is); sentinels and gap markers are StreamEvents either way.
    *before_start* runs at the first read of the iterator (the bridge's
    is-it-running check), before anything is attached.
    """
    if before_start is not None:
        before_start()
    loop = asyncio.get_running_loop()
    closed = ctx.closed
    await ctx.feeds.follow_wakeups()
    feed, waiter = ctx.feeds.attach(run_id)
    ctx.metrics.subscriber_started()
    logger.debug(
        "pgbridge subscriber of run %r started after %r",
        run_id,
        last_event_id,
        extra={"run_id": run_id, "last_event_id": last_event_id},
    )
    position = last_event_id  # what a gap marker reports as requested
    last: LoggedEvent | Record | None = None  # the last event yielded (position is its ID)
    fork_seq: int | None = None  # set for a fork: the seqs up to it are read from its sources
    page_size = ctx.feeds.page_size
    limit = page_size  # grows while catch-up pages come back full
    #: The next catch-up page, read (after the page being yielded) while this one is yielded.
    ahead: asyncio.Task[Page] | None = None
    ahead_after = ahead_trims = 0
    #: The resumed cursor and its event's creation time (what the first page must find there).
    start_at: tuple[int, int] | None = None
    #: The feed's count of history changes this subscriber has checked its cursor against.
    histories_seen = feed.histories
    try:
        cursor: int | None = None
        heartbeat_due = loop.time() + heartbeat_interval
        failures = 0
        while True:
            if closed.on:
                yield CANCELLED_SENTINEL
                return
            live = ahead is None and not failures and feed.histories == histories_seen
            if live and type(last) is LoggedEvent:
                # The live tail: the event this subscriber yielded last is the feed's own, so the
                # next is the one after it in the buffer, without a page (the generic path
                # below for everything else: catch-up, gaps, trims, a changed history, the end).
                waiter.clear()  # before looking: an event arriving from here on sets it again
                following = feed.following(last)
                if following is not None:
                    yield following if stored else following.event
                    cursor, last = following.seq, following
                    if following.terminal:
                        return
                    heartbeat_due = loop.time() + heartbeat_interval
                    continue
                if feed.caught_up(last):
                    if loop.time() >= heartbeat_due:
                        yield HEARTBEAT_SENTINEL
                        heartbeat_due = loop.time() + heartbeat_interval
                        continue
                    await waiter.wait_until(heartbeat_due)
                    continue
            page: Page | None = None
            # Trims the feed learns of from here on may cover events of the page read below.
            trims_seen: int | None = None
            try:
                if ahead is not None:
                    # Read while the previous page was yielded, after its last event (the
                    # cursor); the waiter was cleared before that read began.
                    task, ahead, trims_seen = ahead, None, ahead_trims
                    page = await task
                else:
                    waiter.clear()
                    if cursor is None:
                        start = await ctx.start(run_id, last_event_id)
                        cursor, fork_seq = start_cursor(start.resume), start.fork_seq
                        start_at = _resumed_at(start.resume, last_event_id)
                    if fork_seq is not None and cursor < fork_seq:
                        page = await ctx.read_inherited(run_id, cursor, fork_seq)
                    elif feed.histories != histories_seen:
                        # The feed found the run's history changed: check this cursor against
                        # what the run stores now (the buffer follows the new history's end).
                        histories_seen, trims_seen = feed.histories, feed.trims
                        page = await feed.read_own(cursor, limit)
                    else:
                        trims_seen = feed.trims
                        page = feed.buffered_after(cursor)
                        if page is None:
                            page = await feed.read_after(cursor, limit)
                failures = 0
            except DatabaseUnavailableError:
                failures += 1
            if closed.on:
                yield CANCELLED_SENTINEL
                return
            if page is not None and cursor is not None:
                if cursor > 0 and _history_changed(page, cursor, _ms_at_cursor(cursor, last, start_at)):
                    _log_history_change(run_id, cursor, page)
                    raise RunHistoryChangedError(
                        f"run {run_id!r} no longer stores event {_event_id_at(cursor, last, start_at)} "
                        f"that this subscriber yielded (it stores {page.state.last_seq} event(s), another "
                        "event or none at that seq): a failover to a standby that never received it, or "
                        "the run deleted and published again. Its continuation does not exist; resuming "
                        "from that ID resolves unknown (docs/behaviour.md §3)"
                    )
                if page.state.exists and cursor < page.state.first_seq - 1:
                    if last is not None:
                        position = event_id(last)
                    marker = gap_marker(position, page.state.first_seq - 1 - cursor, page.state)
                    _log_gap(run_id, marker)
                    yield marker
                    heartbeat_due = loop.time() + heartbeat_interval
                    if on_gap == "stop":
                        return
                    cursor = page.state.first_seq - 1
                tail = page.tail()
                if page.truncated and trims_seen is not None and tail is not None and not tail[1]:
                    # Catching up: read the next (larger) page while this one is yielded, so
                    # PostgreSQL's work on it overlaps this process's.
                    limit = min(limit * 2, page_size * CATCH_UP_GROWTH)
                    waiter.clear()  # before the read: a commit during it sets it again
                    ahead_after, ahead_trims = tail[0], feed.trims
                    ahead = loop.create_task(feed.read_after(ahead_after, limit))
                    ahead.add_done_callback(_retrieve)
                # The hot loops of a replay: per event, one comparison of the feed's trim
                # count, the yield and the close check; the rest is per page.
                trimmed = False
                yielded = last
                rows = page.rows
                if rows is not None:
                    # A page read for this subscriber alone: each event is made from its row as
                    # it is yielded and kept by nobody here (no object a row to walk for the
                    # garbage collector, nothing made for rows never yielded).
                    seq_at, terminal_at = rows.seq_at, rows.terminal_at
                    make = rows.logged if stored else rows.stream_event
                    for index, row in enumerate(rows.records):
                        if ahead is not None and index and not index % LOOP_TURN_EVERY:
                            # Yielding without awaiting gives the event loop no turn: the next
                            # page's rows would wait in the socket (and PostgreSQL's send on
                            # them) until this page ends, instead of arriving meanwhile.
                            await asyncio.sleep(0)
                        seq = row[seq_at]
                        if seq <= cursor:
                            continue
                        if trims_seen is not None and feed.trims != trims_seen and seq < feed.retained_from:
                            trimmed = True  # as below
                            break
                        yield make(row)
                        cursor, last = seq, row
                        if row[terminal_at]:
                            return
                        if closed.on:
                            break
                else:
                    shared = page.shared
                    for logged in page.events:
                        seq = logged.seq
                        if seq <= cursor:
                            continue
                        if trims_seen is not None and feed.trims != trims_seen and seq < feed.retained_from:
                            # Retention deleted this event after the page was read (docs/behaviour.md
                            # §4): read again, which reports the gap, instead of yielding it.
                            trimmed = True
                            break
                        yield logged if stored else logged.event if shared else logged.new_event()
                        cursor, last = seq, logged
                        if logged.terminal:
                            return
                        if closed.on:
                            break
                if last is not yielded:
                    heartbeat_due = loop.time() + heartbeat_interval
                if ahead is not None and cursor != ahead_after:
                    ahead.cancel()  # stopped before the page's end (a trim, a close): read anew
                    ahead = None
                if trimmed:
                    continue
                terminal_seq = page.state.terminal_seq
                if terminal_seq is not None and cursor >= terminal_seq:
                    yield END_SENTINEL
                    return
                if page.truncated:
                    continue
                limit = page_size
                if closed.on:
                    continue
            remaining = heartbeat_due - loop.time()
            if remaining <= 0:
                yield HEARTBEAT_SENTINEL
                heartbeat_due = loop.time() + heartbeat_interval
                continue
            if failures:
                remaining = min(remaining, max(ctx.backoff.delay(failures), 0.01))
                await waiter.wait(remaining)
            else:
                await waiter.wait_until(heartbeat_due)
    finally:
        if ahead is not None:
            ahead.cancel()
        ctx.feeds.detach(feed, waiter)
        ctx.metrics.subscriber_ended()
        if last is not None:
            position = event_id(last)
        logger.debug(
            "pgbridge subscriber of run %r ended after %r",
            run_id,
            position,
            extra={"run_id": run_id, "last_event_id": position},
        )


def _resumed_at(resume: ResumeResult, last_event_id: str | None) -> tuple[int, int] | None:
    """The cursor's seq and its event's creation time, for a cursor that resumed after an event."""
    if resume.status != "resumed" or last_event_id is None:
        return None
    parsed = parse_event_id(last_event_id)
    if parsed is None or parsed.seq == 0:
        return None
    return parsed.seq, parsed.ms


def _ms_at_cursor(
    cursor: int, last: LoggedEvent | Record | None, start_at: tuple[int, int] | None
) -> int | None:
    """The creation time of the event at *cursor* as this subscriber knows it: the last event it
    yielded, or the event it resumed after; None when its cursor names no event it saw (a fresh
    start, a gap marker moved it)."""
    if last is not None:
        if isinstance(last, LoggedEvent):
            return last.ms if last.seq == cursor else None
        return int(last["created_ms"]) if last["seq"] == cursor else None
    if start_at is not None and start_at[0] == cursor:
        return start_at[1]
    return None


def _event_id_at(cursor: int, last: LoggedEvent | Record | None, start_at: tuple[int, int] | None) -> str:
    ms = _ms_at_cursor(cursor, last, start_at)
    return f"{ms}-{cursor}" if ms is not None else f"seq {cursor}"


def _history_changed(page: Page, cursor: int, expected_ms: int | None) -> bool:
    """Whether *page* shows that the event at *cursor* (created at *expected_ms*) is gone: the
    run stores another event there, or (a read of the database, not the feed's memory) fewer
    events than *cursor*."""
    if expected_ms is None:
        return False
    if page.after_ms is not None and page.after_ms != expected_ms:
        return True
    return not page.shared and page.state.exists and page.state.last_seq < cursor


def _log_history_change(run_id: str, cursor: int, page: Page) -> None:
    logger.warning(
        "pgbridge subscriber of run %r ended: the run no longer stores the event at seq %d that it "
        "yielded (the run stores %d event(s)); a failover lost it, or the run was published anew",
        run_id,
        cursor,
        page.state.last_seq,
        extra={"run_id": run_id, "seq": cursor, "last_seq": page.state.last_seq},
    )


def _retrieve(task: asyncio.Task[Page]) -> None:
    """A read ahead's outcome, taken so a failure nobody awaits is not reported as lost
    (the subscriber that awaits it gets the error, as from any read)."""
    if not task.cancelled():
        task.exception()


def _log_gap(run_id: str, marker: StreamEvent) -> None:
    """A subscriber is told it missed events: say so, with the marker's figures."""
    data = marker.data
    assert isinstance(data, dict)
    logger.info(
        "pgbridge subscriber of run %r got a gap marker: %s event(s) after %r were deleted "
        "by retention (earliest retained: %r)",
        run_id,
        data["gap_count"],
        data["requested_event_id"],
        data["earliest_available_event_id"],
        extra={
            "run_id": run_id,
            "gap_count": data["gap_count"],
            "requested_event_id": data["requested_event_id"],
            "earliest_available_event_id": data["earliest_available_event_id"],
        },
    )
