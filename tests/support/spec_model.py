"""A small pure-Python model of docs/behaviour.md: what the bridge must answer, from first principles.

Written from the specification, not from the code: it imports nothing from
``pgbridge`` but the public value types, so where the bridge and the model
disagree one of them misreads docs/behaviour.md. ``tests/db/test_state_machine.py`` drives
both with the same random operations and compares every answer.

The model cannot know the database clock, so it learns each event's
millisecond part from the ID the bridge returned, and checks only that seqs
are the ones docs/behaviour.md §2 demands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pgbridge import END_SENTINEL, GAP_EVENT, ResumeResult, StreamEvent

_ID = re.compile(r"([0-9]+)-([0-9]+)")
TERMINAL_EVENT_NAMES = {"ended": "end", "cancelled": "cancel", "errored": "error"}


@dataclass(frozen=True)
class ModelEvent:
    ms: int
    seq: int
    event: str
    data: Any
    terminal: bool

    @property
    def id(self) -> str:
        return f"{self.ms}-{self.seq}"


@dataclass
class ModelRun:
    """One run as docs/behaviour.md sections 2, 3, 5, 7 and 8 describe it."""

    events: list[ModelEvent] = field(default_factory=list)
    first: int = 1
    status: str = "active"

    @property
    def last(self) -> int:
        return len(self.events)

    @property
    def terminal(self) -> ModelEvent | None:
        ended = [e for e in self.events if e.terminal]
        return ended[0] if ended else None

    def event(self, seq: int) -> ModelEvent:
        return self.events[seq - 1]

    def retained(self, start: int) -> list[ModelEvent]:
        """Retained events from seq *start* on."""
        return self.events[max(start, self.first) - 1 :]

    def id_or_none(self, seq: int) -> str | None:
        return self.event(seq).id if self.first <= seq <= self.last else None

    # -- writes ----------------------------------------------------------------

    def append(self, returned_id: str, event: str, data: Any, *, terminal: bool = False) -> None:
        """Record a publish the bridge acknowledged with *returned_id*; check its seq."""
        ms, seq = split_id(returned_id)
        assert seq == self.last + 1, f"publish got seq {seq}, docs/behaviour.md §2 demands {self.last + 1}"
        self.events.append(ModelEvent(ms, seq, event, data, terminal))
        if not terminal:
            self.status = "active"

    def trim_to_newest(self, keep: int) -> int:
        """Retention's ``max_events_per_run``: keep the newest *keep*; return how many went."""
        new_first = max(self.first, self.last - keep + 1)
        deleted = new_first - self.first
        self.first = new_first
        return deleted

    # -- reads -----------------------------------------------------------------

    def resolve(self, cursor: str | None) -> ResumeResult:
        """docs/behaviour.md §3's table."""
        first, last = self.first, self.last
        if cursor is None:
            return ResumeResult(next_offset=first, status="fresh")
        match = _ID.fullmatch(cursor) if len(cursor) <= 64 else None
        if match is None:
            return ResumeResult(next_offset=first, status="invalid")
        ms, seq = int(match.group(1)), int(match.group(2))
        if seq < first - 1:
            return ResumeResult(next_offset=first, status="evicted", gap_count=first - 1 - seq)
        # For s = first - 1 (deleted) the run keeps that event's creation time: checked too.
        if seq > last or (seq >= max(first - 1, 1) and self.event(seq).ms != ms):
            return ResumeResult(next_offset=first, status="unknown")
        return ResumeResult(next_offset=seq + 1, status="resumed")

    def subscription(self, cursor: str | None) -> tuple[list[StreamEvent], bool]:
        """What ``subscribe(run, cursor)`` yields before it must wait: (items, whether it then returns)."""
        resume = self.resolve(cursor)
        items: list[StreamEvent] = []
        if resume.status == "evicted":
            items.append(self.gap_marker(cursor, resume.gap_count))
        terminal = self.terminal
        if terminal is not None and resume.next_offset > terminal.seq:
            return [*items, END_SENTINEL], True
        for stored in self.retained(resume.next_offset):
            items.append(StreamEvent(id=stored.id, event=stored.event, data=stored.data))
        return items, terminal is not None

    def gap_marker(self, requested: str | None, gap_count: int) -> StreamEvent:
        return StreamEvent(
            id="",
            event=GAP_EVENT,
            data={
                "requested_event_id": requested,
                "gap_count": gap_count,
                "earliest_available_event_id": self.id_or_none(self.first),
                "latest_available_event_id": self.id_or_none(self.last),
            },
        )


def split_id(event_id: str) -> tuple[int, int]:
    match = _ID.fullmatch(event_id)
    assert match is not None, f"not an event ID: {event_id!r}"
    return int(match.group(1)), int(match.group(2))
