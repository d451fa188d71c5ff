"""Durable Streams forks (PROTOCOL.md 4.2): what a fork request asks for, and its pure rules.

A fork is a run whose reads give its source's events up to ``fork_seq`` and
then its own (revision 0007; the engine is :mod:`pgbridge.durable_streams.streams`).
This module holds the rules that need no database: the TTL/expiry a fork
gets, and where a sub-offset puts the fork point.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pgbridge.durable_streams.messages import bytes_message, is_json, stored_bytes
from pgbridge.exceptions import ForkOffsetError


@dataclass(frozen=True, slots=True)
class ForkRequest:
    """A PUT with ``Stream-Forked-From``: the source run, the offset (None: its tail), the
    sub-offset, and the creation time of the event the offset names (None: not named)."""

    source_run_id: str
    offset_seq: int | None = None
    sub_offset: int = 0
    offset_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ForkPoint:
    """Where a fork branches: the source's events up to *fork_seq* are inherited, and
    *prefix* (a stored message text), when there is one, is the fork's first own event:
    the part of the source's next message a binary sub-offset takes."""

    fork_seq: int
    prefix: str | None = None


def inherited_expiry(
    ttl_seconds: int | None,
    expires_at: datetime | None,
    source_ttl_seconds: int | None,
    source_expires_at: datetime | None,
) -> tuple[int | None, datetime | None]:
    """The fork's TTL and expiry (the table of section 4.2): its own when it asks for
    either, else the source's (a TTL value refreshed independently, or the same deadline)."""
    if ttl_seconds is not None or expires_at is not None:
        return ttl_seconds, expires_at
    return source_ttl_seconds, source_expires_at


def fork_point(
    anchor_seq: int,
    sub_offset: int,
    source_last_seq: int,
    source_content_type: str | None,
    next_message: str | None,
) -> ForkPoint:
    """The fork point for an anchor and sub-offset on a source.

    *next_message* is the stored data text of the source's event
    ``anchor_seq + 1`` (None when there is none); only a binary sub-offset
    needs it. A JSON sub-offset counts messages (one event each); a binary
    one counts the bytes of the next message: all of them moves the fork
    point past it, fewer keep that part as the fork's first own event.
    """
    if anchor_seq > source_last_seq:
        raise ForkOffsetError("Stream-Fork-Offset is past the source stream's tail")
    if sub_offset == 0:
        return ForkPoint(anchor_seq)
    if is_json(source_content_type):
        if anchor_seq + sub_offset > source_last_seq:
            raise ForkOffsetError("Stream-Fork-Sub-Offset is past the source stream's last message")
        return ForkPoint(anchor_seq + sub_offset)
    if next_message is None:
        raise ForkOffsetError("Stream-Fork-Sub-Offset is past the source stream's tail")
    data = stored_bytes(next_message)
    if sub_offset > len(data):
        raise ForkOffsetError("Stream-Fork-Sub-Offset is past the end of the message at the offset")
    if sub_offset == len(data):
        return ForkPoint(anchor_seq + 1)
    return ForkPoint(anchor_seq, bytes_message(data[:sub_offset]))
