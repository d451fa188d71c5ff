"""The payload every contender carries: an agent's token chunk, about 200 bytes of JSON.

The publisher's wall clock goes into the payload (``t``) just before the
publish call, so a subscriber in another process on the same machine can
tell how long the event took to reach it without any other channel.
"""

from __future__ import annotations

import json
import time

from pgbridge.contract import JSONValue

#: Text the chunks are cut from, so consecutive events differ as real tokens do.
_PASSAGE = (
    "The durable log keeps every event of an agent run in order, so a reader that reconnects "
    "resumes exactly where it stopped, whichever process serves it and whenever it comes back. "
)
_CHUNK_CHARS = 120


def token_payload(index: int) -> dict[str, JSONValue]:
    """Token chunk number *index*, stamped with the publisher's clock now."""
    start = (index * 7) % len(_PASSAGE)
    text = (_PASSAGE + _PASSAGE)[start : start + _CHUNK_CHARS]
    return {"type": "token", "index": index, "run_step": "model", "text": text, "t": time.time()}


def payload_bytes() -> int:
    """Size of one encoded payload, for the report."""
    return len(json.dumps(token_payload(12345), separators=(",", ":")).encode())


def sent_at(data: JSONValue) -> float | None:
    """The publisher's clock stamp of a received payload; None for events without one."""
    if isinstance(data, dict):
        stamp = data.get("t")
        if isinstance(stamp, float):
            return stamp
    return None


def index_of(data: JSONValue) -> int:
    """The token number of a received payload (-1 for other events)."""
    if isinstance(data, dict):
        index = data.get("index")
        if isinstance(index, int):
            return index
    return -1
