"""The chat → current response pointer, kept as the last event of the chat's run.

See :mod:`pgbridge.ai_sdk.runs` for the runs and why the chat's run is a JSON
Durable Stream. Both functions use the bridge's public API only (no SQL here).
"""

from __future__ import annotations

import json

from pgbridge.ai_sdk.runs import POINTER_EVENT, MessagePointer, chat_run_id
from pgbridge.bridge import PostgresStreamBridge
from pgbridge.durable_streams.messages import JSON_TYPE
from pgbridge.exceptions import StreamExistsError
from pgbridge.store.streams import StreamConfig

#: Enough for one pointer event's data (two ids of at most 255 characters, as JSON).
_POINTER_PAGE_BYTES = 8192


async def point_chat_at(bridge: PostgresStreamBridge, chat_id: str, pointer: MessagePointer) -> str:
    """Make *pointer* the chat's current response; returns the pointer event's ID.

    Creating the chat's run is idempotent (a second create of the same JSON
    stream changes nothing), so every response does it and no process needs to
    know whether the chat is new. A chat run id already used by a run published
    through the bridge raises :class:`~pgbridge.exceptions.StreamExistsError`.
    """
    run_id = chat_run_id(chat_id)
    _, head = await bridge.streams.create(run_id, StreamConfig(JSON_TYPE))
    if head.envelopes:  # a run born from publish reads as a JSON stream too: not a chat's
        raise StreamExistsError(f"run {run_id!r} exists and is no chat's run: it was published to")
    return await bridge.publish(run_id, POINTER_EVENT, pointer.to_json())


async def current_response(bridge: PostgresStreamBridge, chat_id: str) -> MessagePointer | None:
    """The chat's newest response, or None for a chat with none (or whose pointers
    retention deleted). Two reads: the chat run's head, then its last event."""
    run_id = chat_run_id(chat_id)
    head = await bridge.streams.head(run_id)
    if head is None or head.envelopes or head.last_seq < max(head.first_seq, 1):
        return None  # no chat run, one that is no chat's (published to), or no pointer kept
    page = await bridge.streams.read_page(
        run_id, head.last_seq - 1, max_messages=1, max_bytes=_POINTER_PAGE_BYTES
    )
    if page is None or page.count != 1:
        return None
    messages = json.loads(page.body)
    return MessagePointer.from_json(messages[0]) if isinstance(messages, list) and messages else None
