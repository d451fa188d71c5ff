"""Durable Streams offsets and cursors (PROTOCOL.md sections 8 and 10.1): pure functions.

An offset names the position after an event: the run's seq and the
event's creation time in milliseconds, each zero-padded to 16 digits,
``<seq>_<ms>``. The seq first makes offsets sort lexicographically in
stream order; both stay valid across restarts and processes (they are
stored), and never collide with the sentinels ``-1`` (the start) and
``now`` (the tail). ``0000000000000000_0000000000000000`` is the start of
every stream (the reference server's spelling of it too).

The time makes an offset name one event of one history, as an event ID
does (docs/behaviour.md §3): after an asynchronous failover lost events,
the new primary numbers new events with the lost seqs, and their times
differ (odd on odd timelines, even on even ones), so a reader holding the
offset of a lost event is told (``410``) instead of being continued in
another history. An offset of the bare 16-digit seq (what pgbridge made
before) is still read, unchecked.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Final, Literal

OFFSET_DIGITS: Final = 16
START: Final = "-1"
NOW: Final = "now"
#: Largest seq an offset can name.
MAX_OFFSET_SEQ: Final = 10**OFFSET_DIGITS - 1

#: Cursor intervals (section 10.1): 20 s counted from 2024-10-09T00:00:00Z.
CURSOR_INTERVAL_SECONDS: Final = 20
CURSOR_EPOCH: Final = 1728432000


@dataclass(frozen=True, slots=True)
class Offset:
    """A parsed ``offset`` parameter: a seq to read after, or the tail (``now``).

    ``ms`` is the creation time of the event at ``seq`` the offset names (0
    at the start); None for a bare-seq offset, which names no time.
    """

    kind: Literal["seq", "now"]
    seq: int = 0
    ms: int | None = 0

    def names_another_event(self, stored_ms: int | None) -> bool:
        """Whether the event stored at this offset's seq, created at *stored_ms* (None:
        not known, retention deleted it), is not the one this offset names."""
        return names_another_event(self.ms, stored_ms)


def names_another_event(named_ms: int | None, stored_ms: int | None) -> bool:
    """Whether an offset naming time *named_ms* names another event than the one stored
    at its seq, created at *stored_ms* (either None: nothing to compare)."""
    return named_ms is not None and stored_ms is not None and named_ms != stored_ms


def format_offset(seq: int, ms: int) -> str:
    """The offset after the event *seq* created at *ms* (0, 0: the start of the stream)."""
    if not 0 <= seq <= MAX_OFFSET_SEQ or not 0 <= ms <= MAX_OFFSET_SEQ:
        raise ValueError(f"seq {seq} at {ms} ms has no offset")
    return f"{seq:0{OFFSET_DIGITS}d}_{ms:0{OFFSET_DIGITS}d}"


def _digits(text: str) -> bool:
    return len(text) == OFFSET_DIGITS and text.isascii() and text.isdigit()


def parse_offset(text: str | None) -> Offset:
    """The offset a client sent; ``ValueError`` when it is not one this server makes."""
    if text is None or text == START:
        return Offset("seq", 0, 0)
    if text == NOW:
        return Offset("now")
    seq_text, separator, ms_text = text.partition("_")
    if not _digits(seq_text) or (separator and not _digits(ms_text)):
        raise ValueError(f"malformed offset {text[:40]!r}")
    return Offset("seq", int(seq_text), int(ms_text) if ms_text else None)


def parse_fork_offset(text: str | None) -> Offset | None:
    """A ``Stream-Fork-Offset``: the offset to fork after, or None (the source's tail).

    ``-1`` names the start. ``ValueError`` for anything else this server does not make.
    """
    if text is None:
        return None
    offset = parse_offset(text.strip())
    return None if offset.kind == "now" else offset


def response_cursor(client_cursor: str | None, *, now: float | None = None) -> str:
    """The ``Stream-Cursor`` of a live response: the current interval, always past the client's."""
    current = int(((time.time() if now is None else now) - CURSOR_EPOCH) // CURSOR_INTERVAL_SECONDS)
    if client_cursor is not None and client_cursor.isascii() and client_cursor.isdigit():
        echoed = int(client_cursor)
        if echoed >= current:
            jitter_seconds = random.randint(1, 3600)
            return str(echoed + max(1, jitter_seconds // CURSOR_INTERVAL_SECONDS))
    return str(current)
