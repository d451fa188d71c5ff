"""One shared reader per run per process: how many subscribers cost one query.

A :class:`RunFeed` follows the tail of one run for every subscriber of that
run in this process. A wake-up (a NOTIFY, the poll, a listener reconnect)
queues the feed for the :class:`FeedRegistry`'s shared read: one statement
reads, from each woken feed's newest seq, every run that woke since the
previous one (a NOTIFY statement from another process wakes many runs at
once); the events land in each feed's small buffer every subscriber reads
from, and each subscriber's waiter is set. A local publish hands its
committed event straight to the feed, so same-process subscribers need no
query at all unless it does not follow what the feed holds.

Subscribers that are behind the buffer (catching up from an old cursor, or
too slow to keep up) read their own pages directly: catch-up is individual,
the live tail is shared. The buffer never holds events retention has
deleted, so a gap is reported, not papered over.

Every range read goes through a :class:`~pgbridge.engine.replica.ReadRouter` with
what the feed knows of the run from the primary (:class:`~pgbridge.engine.replica.Known`),
so with a ``replica_dsn`` a read goes to the standby only when it is
certain to be current enough.

Every read after the feed's newest event also says what the run stores at
that seq now (``Page.after_ms``). A run whose history changed under the feed
(an asynchronous failover that lost events the feed read, the run deleted and
published again) holds fewer events than the feed read, or another event at
its newest seq: the feed then drops its buffer and follows the new history
from its end, and each subscriber, which checks every page against the event
it last yielded, ends (pgbridge.engine.subscribe).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from pgbridge.engine.listen import Wake
from pgbridge.engine.replica import Known, ReadRouter
from pgbridge.exceptions import DatabaseUnavailableError, StreamBridgeError
from pgbridge.store.events import MAX_BIGINT, EventStore, LoggedEvent, Page, RunState

logger = logging.getLogger(__name__)


#: A waiter's timer may fire this early (the loop's clock resolution) and still expire the wait.
_TIMER_SLACK = 0.001


class Waiter:
    """A subscriber's wake flag. Clear it before reading, wait on it after.

    A future and one timer, not ``asyncio.wait_for`` (which starts a task
    per wait): a run with a thousand subscribers wakes a thousand waiters
    per event, so this is the fan-out's hot loop. The timer is lazy: a busy
    subscriber waits again and again with a later deadline each time (its
    heartbeat is due an interval after its last event), and instead of a new
    timer per wait it keeps the one it has, which on firing early only moves
    itself to the newest deadline. So a subscriber costs one timer per
    heartbeat interval, not one per event. :meth:`close` cancels it.
    """

    __slots__ = ("_deadline", "_future", "_is_set", "_loop", "_timer")

    def __init__(self) -> None:
        self._is_set = False
        self._future: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        #: The loop of the first wait, kept: asking for the running loop costs a getpid() each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    def set(self) -> None:
        self._is_set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(True)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self, timeout: float) -> bool:
        """Wait until set or *timeout* seconds pass; True when woken."""
        if self._is_set:
            return True
        loop = self._loop or self._first_loop()
        return await self.wait_until(loop.time() + timeout)

    def _first_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def wait_until(self, deadline: float) -> bool:
        """Wait until set or the loop's clock reaches *deadline*; True when woken. (A subscriber
        knows its heartbeat's deadline: no second reading of the clock.)"""
        if self._is_set:
            return True
        loop = self._loop or self._first_loop()
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
        future: asyncio.Future[bool] = loop.create_future()
        self._future = future
        try:
            return await future
        finally:
            self._future = None

    def _on_timer(self) -> None:
        """The timer fired: expire the wait if its deadline has come, else wait on to it."""
        self._timer = None
        future = self._future
        if future is None or future.done():
            return
        loop = future.get_loop()
        if loop.time() >= self._deadline - _TIMER_SLACK:
            future.set_result(False)
        else:
            self._timer = loop.call_at(self._deadline, self._on_timer)

    def close(self) -> None:
        """Cancel the timer: the subscriber is gone."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RunFeed:
    """The shared tail of one run: a contiguous buffer of its newest events."""

    def __init__(
        self,
        run_id: str,
        reads: ReadRouter,
        *,
        buffer_size: int,
        page_size: int,
        clock: Callable[[], float],
        refill: Callable[[RunFeed], None],
    ) -> None:
        self.run_id = run_id
        self._reads = reads
        #: Queues this (synced) feed for its registry's next shared read of every woken run.
        self._refill = refill
        #: True while a shared read that includes this feed is in flight.
        self.refilling = False
        self._buffer_size = buffer_size
        self._page_size = page_size
        self._clock = clock
        self.waiters: set[Waiter] = set()
        self.state = RunState()
        #: What the primary has told of the run (routes reads to a replica safely).
        self.known = Known()
        self._buffer: deque[LoggedEvent] = deque()
        #: Newest seq the feed has read; None until a subscriber sets where to start.
        self.high_seq: int | None = None
        self.synced = False
        self.last_read_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._last_error: BaseException | None = None
        #: Range reads this feed ran (for tests and metrics).
        self.reads = 0
        #: Bumped whenever the feed learns that retention deleted events (its
        #: own process's pass, or a read that found the retained start moved):
        #: a subscriber compares it between yields (see :attr:`retained_from`).
        self.trims = 0
        #: Creation time of the event at high_seq, when known (a read from high_seq checks it).
        self.high_ms: int | None = None
        #: Creation time of the event just before the buffer's first, when known.
        self._before_ms: int | None = None
        #: Where the read in flight started: (high_seq, high_ms) then.
        self._read_from: tuple[int, int | None] = (0, None)
        #: Bumped whenever a read finds that the run's history changed under the feed.
        self.histories = 0

    # -- wake-ups ---------------------------------------------------------

    def wake(self, seq: int | None = None, lsn: int | None = None) -> None:
        """Something may have been committed (up to *seq*, at WAL position *lsn*, when known): read it."""
        self.known.learn_wake(seq, lsn)
        if self.high_seq is None:
            return  # nobody has started following yet; the first read syncs
        if seq is not None and self.synced and seq <= self.high_seq:
            return  # already have it (typically our own publish echoed by NOTIFY)
        if self._task is not None or self.refilling:
            self._dirty = True  # a read is in flight: read again once it is done
            return
        if self.synced:
            self._refill(self)  # with every other run that woke: one statement for all
            return
        self._task = asyncio.create_task(self._read_until_current(), name=f"pgbridge-feed:{self.run_id}")

    def offer(self, logged: LoggedEvent, prev_ms: int | None = None) -> None:
        """A local publish committed *logged* (after an event created at *prev_ms*): take it
        without a query if it is next, and follows the event the feed holds last (:meth:`take`)."""
        self.known.learn_wake(logged.seq, None)
        self.take(logged, prev_ms)

    def take(self, logged: LoggedEvent, prev_ms: int | None) -> None:
        """:meth:`offer` for a caller that has told :attr:`known` of the event already (a
        wake-up from another process carrying it): the subscribing process's every event.

        An event that does not follow what the feed holds (the event before it, or the one at
        its seq, is another than the feed's) means the run's history changed (an asynchronous
        failover, the run published anew): the feed reads instead, which finds that out.
        """
        high_seq = self.high_seq
        if not self.synced or high_seq is None:
            self.wake(logged.seq)
            return
        seq = logged.seq
        contradicts = self._contradicts(logged, prev_ms)
        if contradicts or seq != high_seq + 1:
            self.wake(None if contradicts else seq)
            return
        self._append((logged,))
        state = self.state
        state.exists = True
        if state.first_seq > state.last_seq:
            state.first_ms = logged.ms  # nothing was retained: it is the first
        if seq >= state.last_seq:
            state.last_seq, state.last_ms = seq, logged.ms
        if logged.terminal:
            state.terminal_seq = seq
        self.wake_waiters()

    def _contradicts(self, logged: LoggedEvent, prev_ms: int | None) -> bool:
        """Whether a committed local event shows a history other than the feed's."""
        assert self.high_seq is not None
        if logged.seq == self.high_seq + 1:
            return prev_ms is not None and self.high_ms is not None and prev_ms != self.high_ms
        if logged.seq <= self.high_seq:
            first_buffered = self._buffer[0].seq if self._buffer else self.high_seq + 1
            if logged.seq >= first_buffered:
                return self._buffer[logged.seq - first_buffered].ms != logged.ms
        return False

    def moved(self, head: RunState | None) -> bool:
        """Whether the run, as *head* says it stands, holds anything this feed has not read."""
        if not self.synced or self.high_seq is None or self._last_error is not None:
            return True
        if head is None:
            return self.state.exists  # the run row is gone
        return (
            head.last_seq != self.high_seq  # more, or fewer: the history changed
            or head.first_seq != self.state.first_seq
            or head.terminal_seq != self.state.terminal_seq
        )

    @property
    def retained_from(self) -> int:
        """The first seq the feed knows to be retained (what retention has not deleted).

        A subscriber holding a page it read before :attr:`trims` last moved
        must not yield an event below this: retention deleted it after the
        read (docs/behaviour.md §4). An attribute, not a query: the feed
        learns of trims from its own process's pass (:meth:`forget_before`,
        before the pass returns) and from the reads that retention's NOTIFY
        causes (:meth:`_integrate`).
        """
        return self.state.first_seq

    def forget_before(self, first_seq: int) -> None:
        """Retention deleted the events before *first_seq*: drop them, then re-read.

        A subscriber that had not read them yet now reads its own page,
        which reports the gap, instead of being served from memory; one
        that is yielding from a page it read before sees :attr:`trims` move
        and re-reads before its next yield.
        """
        self.known.first_seq = max(self.known.first_seq, first_seq)
        if first_seq > self.state.first_seq:
            self.state.first_seq = first_seq
            self.state.first_ms = None  # unknown until the re-read below
            self.trims += 1
        while self._buffer and self._buffer[0].seq < first_seq:
            self._before_ms = self._buffer.popleft().ms
        self.wake(None)

    # -- reads for subscribers ----------------------------------------------

    def buffered_after(self, cursor: int) -> Page | None:
        """:meth:`read_after` when the buffer answers it (no await: the live path's every
        wake-up), else None."""
        high_seq = self.high_seq
        if not self.synced or high_seq is None or cursor > high_seq:
            return None
        buffer = self._buffer
        first_buffered = buffer[0].seq if buffer else high_seq + 1
        if cursor < first_buffered - 1 or cursor < self.state.first_seq - 1:
            return None
        start = cursor + 1 - first_buffered
        events = [buffer[i] for i in range(start, len(buffer))]
        return Page(
            state=self.state, events=events, shared=True, after_ms=self._ms_at(cursor, first_buffered)
        )

    def following(self, logged: LoggedEvent) -> LoggedEvent | None:
        """The buffered event after *logged* when *logged* is the buffer's own (so the history a
        subscriber yielded is the feed's, and nothing between is missing or trimmed), else None:
        the live path's every delivery (pgbridge.engine.subscribe), no page made."""
        buffer = self._buffer
        if not buffer:
            return None
        index = logged.seq - buffer[0].seq
        if 0 <= index < len(buffer) - 1 and buffer[index] is logged:
            return buffer[index + 1]
        return None

    def caught_up(self, logged: LoggedEvent) -> bool:
        """Whether *logged* is the newest event the feed holds, of a run that has not ended there,
        and the feed is in order: a subscriber that yielded it has nothing to do but wait."""
        buffer = self._buffer
        return (
            self.synced
            and self._last_error is None
            and bool(buffer)
            and buffer[-1] is logged
            and self.state.terminal_seq is None
        )

    async def read_after(self, cursor: int, limit: int | None = None) -> Page:
        """Events after *cursor*: from the buffer when it covers them, else a direct read
        of at most *limit* events (the page size when None)."""
        if not self.synced:
            await self._sync_from(cursor)
        buffered = self.buffered_after(cursor)
        if buffered is not None:
            return buffered
        assert self.high_seq is not None
        if cursor > self.high_seq and cursor >= self.state.first_seq - 1:
            # The subscriber knows of events the feed has not read yet.
            self.wake(cursor)
            return Page(state=self.state, shared=True)
        # Behind the shared tail (or behind retention): read our own page.
        return await self._reads.read_after(self.run_id, cursor, limit or self._page_size, self.known)

    def _ms_at(self, seq: int, first_buffered: int) -> int | None:
        """The creation time of event *seq* (at most high_seq, at least one before the buffer),
        when the feed knows it."""
        if seq >= first_buffered:
            return self._buffer[seq - first_buffered].ms
        if seq == self.high_seq:
            return self.high_ms
        return self._before_ms

    async def read_own(self, cursor: int, limit: int | None = None) -> Page:
        """Events after *cursor* read from the database for one subscriber, never from the
        buffer: what a subscriber reads once the feed found that the run's history changed
        (:attr:`histories`), so its page says what the run stores at its cursor now."""
        if not self.synced:
            await self._sync_from(cursor)
        return await self._reads.read_after(self.run_id, cursor, limit or self._page_size, self.known)

    async def _sync_from(self, cursor: int) -> None:
        if self.high_seq is None:
            self.high_seq = cursor
        if self._task is None:
            self._task = asyncio.create_task(self._read_until_current(), name=f"pgbridge-feed:{self.run_id}")
        # Shielded: a subscriber leaving must not cancel the read others share.
        await asyncio.shield(self._task)
        if not self.synced:
            raise DatabaseUnavailableError(
                f"cannot read run {self.run_id!r}: {self._last_error}"
            ) from self._last_error

    # -- the shared read ------------------------------------------------------

    async def _read_until_current(self) -> None:
        try:
            if not self.synced:
                await self._skip_to_tail()
            while True:
                self._dirty = False
                assert self.high_seq is not None
                self.last_read_at = self._clock()
                self._read_from = (self.high_seq, self.high_ms)
                page = await self._reads.read_after(self.run_id, self.high_seq, self._page_size, self.known)
                self.reads += 1
                self._integrate(page)
                self.synced = True
                self._last_error = None
                self.wake_waiters()
                if not (page.truncated or self._dirty):
                    return
        except StreamBridgeError as exc:
            # Waiters keep heartbeating; the poll or a listener reconnect retries.
            self._last_error = exc
            logger.warning("pgbridge feed for run %r could not read: %s", self.run_id, exc)
        finally:
            self._task = None

    def start_refill(self, now: float) -> tuple[str, int, Known]:
        """This feed joins a shared read (:meth:`FeedRegistry.refill`): what to read."""
        assert self.synced and self.high_seq is not None and self._task is None
        self.refilling = True
        self._dirty = False
        self.last_read_at = now
        self._read_from = (self.high_seq, self.high_ms)
        return self.run_id, self.high_seq, self.known

    def refilled(self, page: Page | None, error: BaseException | None = None) -> bool:
        """The shared read answered *page* for this feed (or failed with *error*).

        Returns whether the feed must be read again at once (its page was cut
        at the limit, or it was woken while the read was in flight).
        """
        self.refilling = False
        if page is None:
            # Waiters keep heartbeating; the poll (which re-reads failed feeds) retries.
            self._last_error = error
            return False
        self.reads += 1
        self._integrate(page)
        self._last_error = None
        self.wake_waiters()
        return page.truncated or self._dirty

    async def _skip_to_tail(self) -> None:
        """Start the shared buffer near the run's end, not at the first subscriber's cursor.

        Catching up is each subscriber's own paged read; replaying a long
        history into a buffer that keeps only its last ``buffer_size`` events
        would read everything twice. Read on the primary: it is the committed
        tail the feed's later reads (perhaps on a replica) must reach.
        """
        head = await self._reads.read_after(self.run_id, MAX_BIGINT, 1, self.known, primary=True)
        self.reads += 1
        if head.state.exists and self.high_seq is not None:
            start = max(self.high_seq, head.state.last_seq - self._buffer_size)
            if start != self.high_seq:
                self.high_seq, self.high_ms = start, None  # learnt from the next read

    def _integrate(self, page: Page) -> None:
        if self._history_changed(page):
            self._restart(page)
            return
        if self._read_from[0] == self.high_seq and self.high_ms is None:
            self.high_ms = page.after_ms  # the first read that says: what later reads must find
        if page.state.exists and page.state.first_seq > self.state.first_seq:
            self.trims += 1  # retention deleted events (another process's pass)
        self.state = page.state
        assert self.high_seq is not None
        events = [e for e in page.events if e.seq > self.high_seq]
        if events and events[0].seq != self.high_seq + 1:
            # Retention deleted events we had not read: the buffer restarts.
            self._buffer.clear()
            self._before_ms = None
        self._append(events)
        if not page.events and page.state.exists and page.state.last_seq > self.high_seq:
            # Everything after high_seq is gone: follow from the new end.
            self._buffer.clear()
            self.high_seq, self.high_ms = page.state.last_seq, page.state.last_ms
            self._before_ms = self.high_ms
        while self._buffer and self._buffer[0].seq < self.state.first_seq:
            self._before_ms = self._buffer.popleft().ms

    def _history_changed(self, page: Page) -> bool:
        """Whether *page*, read from where the feed stood, shows another history than the one the
        feed read: fewer events than it had read, or another event at its newest seq."""
        read_from, read_from_ms = self._read_from
        state = page.state
        if not state.exists or read_from == 0:
            return False
        if state.last_seq < read_from:
            return True
        return read_from_ms is not None and page.after_ms is not None and page.after_ms != read_from_ms

    def _restart(self, page: Page) -> None:
        """The run's history changed: drop what the feed holds and follow the new one from its end.
        Its subscribers find out from their own next page (pgbridge.engine.subscribe)."""
        state = page.state
        logger.warning(
            "pgbridge feed of run %r: the run's history changed (it stores %d event(s), another "
            "event or none at seq %d, which this process read): following its new end",
            self.run_id,
            state.last_seq,
            self._read_from[0],
            extra={"run_id": self.run_id, "last_seq": state.last_seq, "read_seq": self._read_from[0]},
        )
        self.histories += 1
        self._buffer.clear()
        self.state = state
        self.high_seq, self.high_ms = state.last_seq, state.last_ms
        self._before_ms = self.high_ms
        self._read_from = (state.last_seq, state.last_ms)
        self.known.reset(state)

    def _append(self, events: Sequence[LoggedEvent]) -> None:
        for logged in events:
            self._buffer.append(logged)
            self.high_seq, self.high_ms = logged.seq, logged.ms
        while len(self._buffer) > self._buffer_size:
            self._before_ms = self._buffer.popleft().ms

    def wake_waiters(self) -> None:
        for waiter in self.waiters:
            waiter.set()


async def _nothing_to_do() -> None:
    return None


class FeedRegistry:
    """The feeds of one bridge, by run id; a feed lives while it has subscribers."""

    def __init__(
        self,
        store: EventStore,
        *,
        buffer_size: int,
        page_size: int,
        clock: Callable[[], float],
        reads: ReadRouter | None = None,
    ) -> None:
        self._store = store
        self.reads = reads or ReadRouter(store)
        self._buffer_size = buffer_size
        #: Events per range read (a subscriber catching up reads larger pages: pgbridge.engine.subscribe).
        self.page_size = page_size
        self._clock = clock
        self._feeds: dict[str, RunFeed] = {}
        #: Makes other processes' wake-ups reach this one (the bridge's listener LISTENs);
        #: awaited by :meth:`follow_wakeups` before a reader's first read.
        self.listen: Callable[[], Awaitable[None]] = _nothing_to_do
        #: Feeds woken since the shared read in flight began, by run id (in wake-up order).
        self._woken: dict[str, RunFeed] = {}
        self._refill_task: asyncio.Task[None] | None = None
        #: Shared reads run (one statement each, whatever the number of runs in it).
        self.refills = 0

    def __len__(self) -> int:
        return len(self._feeds)

    def get(self, run_id: str) -> RunFeed | None:
        return self._feeds.get(run_id)

    async def follow_wakeups(self) -> None:
        """Before a reader's first read: from now on other processes' commits wake this one."""
        await self.listen()

    def attach(self, run_id: str) -> tuple[RunFeed, Waiter]:
        """Register a subscriber's waiter on *run_id*'s feed, before its first read."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = RunFeed(
                run_id,
                self.reads,
                buffer_size=self._buffer_size,
                page_size=self.page_size,
                clock=self._clock,
                refill=self._queue_refill,
            )
            self._feeds[run_id] = feed
        waiter = Waiter()
        feed.waiters.add(waiter)
        return feed, waiter

    def detach(self, feed: RunFeed, waiter: Waiter) -> None:
        """Drop a subscriber; the feed and its buffer go with the last one."""
        waiter.close()
        feed.waiters.discard(waiter)
        if not feed.waiters and self._feeds.get(feed.run_id) is feed:
            del self._feeds[feed.run_id]

    def discard_if_idle(self, run_id: str) -> None:
        feed = self._feeds.get(run_id)
        if feed is not None and not feed.waiters:
            del self._feeds[run_id]

    # -- the shared read of every run that woke ---------------------------------------

    def _queue_refill(self, feed: RunFeed) -> None:
        """*feed* woke: read it with every other feed that woke, in one statement.

        Wake-ups arrive in bursts (a NOTIFY statement from another process
        carries every run it committed to since its previous one, and the
        listener delivers them one after another): the first starts the
        read task, the rest join the same read, and those that wake while
        it is in flight join the next one.
        """
        self._woken[feed.run_id] = feed
        if self._refill_task is None:
            self._refill_task = asyncio.create_task(self._refill_woken(), name="pgbridge-feeds")

    async def _refill_woken(self) -> None:
        try:
            while self._woken:
                woken, self._woken = self._woken, {}
                feeds = [f for f in woken.values() if self._feeds.get(f.run_id) is f]
                if feeds:
                    await self.refill(feeds)
        finally:
            self._refill_task = None

    async def refill(self, feeds: list[RunFeed]) -> None:
        """One range read for all of *feeds* (each bounded by the page size), then each
        integrates its page and wakes its subscribers; routed per run (pgbridge.engine.replica)."""
        now = self._clock()
        reads = [feed.start_refill(now) for feed in feeds]
        pages: list[Page] | None = None
        error: BaseException | None = None
        try:
            pages = await self.reads.read_many(reads, self.page_size)
            self.refills += 1
        except Exception as exc:
            # Waiters keep heartbeating; the poll or a listener reconnect retries.
            error = exc
            logger.warning("pgbridge feeds of %d run(s) could not read: %s", len(feeds), exc)
        finally:
            for index, feed in enumerate(feeds):
                if feed.refilled(pages[index] if pages is not None else None, error):
                    self._queue_refill(feed)

    def wake(self, run_id: str, seq: int | None = None, lsn: int | None = None) -> None:
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.wake(seq, lsn)

    def receive(self, wake: Wake) -> None:
        """A wake-up from another process: take the events it carries when they follow what the
        run's feed holds (no query: each says when the event before it was created), else read."""
        feed = self._feeds.get(wake.run_id)
        if feed is None:
            return
        feed.known.learn_wake(wake.seq, wake.lsn)  # covers every event it carries
        events = wake.events
        for seq, ms, name, data_text, terminal, prev_ms in events:
            feed.take(LoggedEvent(seq, ms, name, data_text, terminal), prev_ms)
        if not events or events[-1][0] != wake.seq:
            feed.wake(wake.seq, wake.lsn)

    def offer(self, run_id: str, make_event: Callable[[], LoggedEvent], prev_ms: int | None = None) -> None:
        """Hand a committed local event (after an event created at *prev_ms*) to its feed;
        decoded only if someone listens."""
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.offer(make_event(), prev_ms)

    def forget_before(self, run_id: str, first_seq: int) -> None:
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.forget_before(first_seq)

    def wake_all(self) -> None:
        """Re-read every feed now, on the primary (the listener reconnected: anything may have happened)."""
        for feed in self._feeds.values():
            feed.known.distrust()
        self.wake_stale(older_than=float("inf"))

    def wake_stale(self, older_than: float) -> None:
        """Re-read every feed not read since *older_than* (the listener reconnected)."""
        for feed in self.stale(older_than):
            feed.wake(None)
            feed.wake_waiters()

    def stale(self, older_than: float) -> list[RunFeed]:
        """Feeds not read since *older_than*."""
        return [feed for feed in self._feeds.values() if feed.last_read_at < older_than]

    async def poll(self, older_than: float) -> int:
        """The safety net for lost NOTIFYs, in one statement for every run followed here.

        Looks up where each stale feed's run stands and re-reads only those
        that moved (or whose last read failed). Returns how many were woken.
        """
        feeds = self.stale(older_than)
        if not feeds:
            return 0
        try:
            heads = await self._store.run_heads([feed.run_id for feed in feeds])
        except StreamBridgeError:
            heads = None  # cannot tell: re-read them all, their reads will report the trouble
        woken = 0
        for feed in feeds:
            feed.last_read_at = self._clock()
            head = heads.get(feed.run_id) if heads is not None else None
            if head is not None:
                feed.known.learn(head)  # the poll reads the primary
            elif heads is None or feed.state.exists:
                feed.known.distrust()  # cannot tell, or the run row is gone
            if heads is None or feed.moved(head):
                feed.wake(None)
                feed.wake_waiters()
                woken += 1
        return woken

    def wake_waiters_everywhere(self) -> None:
        """Wake every subscriber (bridge close)."""
        for feed in list(self._feeds.values()):
            feed.wake_waiters()
