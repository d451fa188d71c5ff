"""Durable Streams offsets and cursors (PROTOCOL.md sections 8 and 10.1): pure functions.

An offset names the position after an event: the run's seq, zero-padded
to 16 digits, so offsets sort lexicographically in stream order, stay
valid across restarts and processes (they are the stored seq), and never
collide with the sentinels ``-1`` (the start) and ``now`` (the tail).
``0000000000000000`` is the start of every stream.
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
    """A parsed ``offset`` parameter: a seq to read after, or the tail (``now``)."""

    kind: Literal["seq", "now"]
    seq: int = 0


def format_offset(seq: int) -> str:
    """The offset after the event *seq* (0: the start of the stream)."""
    if not 0 <= seq <= MAX_OFFSET_SEQ:
        raise ValueError(f"seq {seq} has no offset")
    return f"{seq:0{OFFSET_DIGITS}d}"


def parse_offset(text: str | None) -> Offset:
    """The offset a client sent; ``ValueError`` when it is not one this server makes."""
    if text is None or text == START:
        return Offset("seq", 0)
    if text == NOW:
        return Offset("now")
    if len(text) != OFFSET_DIGITS or not text.isascii() or not text.isdigit():
        raise ValueError(f"malformed offset {text[:40]!r}")
    return Offset("seq", int(text))


#: The start of a stream as the reference server writes it; the suite forks at it.
_REFERENCE_START: Final = "0000000000000000_0000000000000000"


def parse_fork_offset(text: str | None) -> int | None:
    """A ``Stream-Fork-Offset``: the seq to fork after, or None (the source's tail).

    Besides this server's offsets, ``-1`` and the reference server's
    spelling of the start name the start. ``ValueError`` for anything else.
    """
    if text is None:
        return None
    text = text.strip()
    if text == _REFERENCE_START:
        return 0
    offset = parse_offset(text)
    return None if offset.kind == "now" else offset.seq


def response_cursor(client_cursor: str | None, *, now: float | None = None) -> str:
    """The ``Stream-Cursor`` of a live response: the current interval, always past the client's."""
    current = int(((time.time() if now is None else now) - CURSOR_EPOCH) // CURSOR_INTERVAL_SECONDS)
    if client_cursor is not None and client_cursor.isascii() and client_cursor.isdigit():
        echoed = int(client_cursor)
        if echoed >= current:
            jitter_seconds = random.randint(1, 3600)
            return str(echoed + max(1, jitter_seconds // CURSOR_INTERVAL_SECONDS))
    return str(current)
