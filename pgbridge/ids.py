"""Event IDs, run ids, and the resume table of docs/behaviour.md §3.

Pure functions only: given what the database says about a run, decide how a
``Last-Event-ID`` cursor resolves. The bridge does the one read and calls
:func:`resolve_cursor`; tests exercise every row of the table here without a
database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgbridge.contract import ResumeResult
from pgbridge.payload import validate_name

#: Longest cursor string we try to parse; longer ones are ``invalid``.
MAX_CURSOR_LENGTH = 64
#: Longest run id (in characters) a run may have.
MAX_RUN_ID_LENGTH = 255

# [0-9], not \d: \d also matches non-ASCII digits such as "٣".
_EVENT_ID = re.compile(r"([0-9]+)-([0-9]+)", re.ASCII)


@dataclass(frozen=True, slots=True)
class EventId:
    """A parsed ``"<ms>-<seq>"`` event ID."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return format_event_id(self.ms, self.seq)


def format_event_id(ms: int, seq: int) -> str:
    """The public form of an event ID: creation time in ms, then the run's seq."""
    return f"{ms}-{seq}"


def parse_event_id(cursor: str) -> EventId | None:
    """Parse a cursor, or return ``None`` when it is not a well-formed ID."""
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH:
        return None
    match = _EVENT_ID.fullmatch(cursor)
    if match is None:
        return None
    return EventId(ms=int(match.group(1)), seq=int(match.group(2)))


def validate_run_id(run_id: object) -> str:
    """Return *run_id* if it can name a run, else raise :class:`InvalidEventError`."""
    return validate_name("run_id", run_id, MAX_RUN_ID_LENGTH)


@dataclass(frozen=True, slots=True)
class RetainedRange:
    """What the database says about a run when a cursor is resolved.

    ``first..last`` are the retained seqs (``first == last + 1`` when nothing
    is retained); ``stored_ms`` is the creation time of the event the cursor
    names, when that event is retained; ``trimmed_ms`` that of the last event
    retention deleted (seq ``first - 1``), kept beside its hash (None when
    retention deleted nothing, or before revision 0012 kept it). A run that
    does not exist has ``first=1, last=0``.

    For a Durable Streams fork the range is the one of its stitched view
    (its source chain's events up to ``fork_seq``, then its own): ``first``
    is where that view starts after any retention of the chain before the
    fork existed, and ``stored_ms`` comes from whichever run holds the seq.
    The cursor table is the same; ``fork_seq`` tells the subscriber where
    the inherited part ends (None for a run that is no fork).
    """

    first: int
    last: int
    stored_ms: int | None = None
    fork_seq: int | None = None
    trimmed_ms: int | None = None

    @classmethod
    def missing_run(cls) -> RetainedRange:
        return cls(first=1, last=0)


def resolve_cursor(cursor: str | None, retained: RetainedRange) -> ResumeResult:
    """Resolve *cursor* against *retained*: the table of docs/behaviour.md §3."""
    first, last = retained.first, retained.last
    if cursor is None:
        return ResumeResult(next_offset=first, status="fresh")
    parsed = parse_event_id(cursor)
    if parsed is None:
        return ResumeResult(next_offset=first, status="invalid")
    seq = parsed.seq
    if seq < first - 1:
        return ResumeResult(next_offset=first, status="evicted", gap_count=first - 1 - seq)
    if seq > last:
        return ResumeResult(next_offset=first, status="unknown")
    if seq >= first and retained.stored_ms != parsed.ms:
        # Same seq, another creation time: an ID of another run, of an earlier
        # life of this run id, or of a history a failover lost.
        return ResumeResult(next_offset=first, status="unknown")
    if seq == first - 1 and seq > 0 and retained.trimmed_ms is not None and retained.trimmed_ms != parsed.ms:
        # The event retention deleted last, whose creation time the run keeps:
        # the same check, against the kept time.
        return ResumeResult(next_offset=first, status="unknown")
    return ResumeResult(next_offset=seq + 1, status="resumed")
