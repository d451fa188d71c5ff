"""AI SDK UI message chunks (pure): which chunks are valid, which end a message.

The AI SDK (npm ``ai``, ``useChat``) streams an assistant message as "UI
message chunks": JSON objects with a ``type`` (``start``, ``text-delta``,
``tool-input-available``, ``finish``...). Its client parses each one against a
union schema (``uiMessageChunkSchema`` in ``ui-message-stream/ui-message-chunks.ts``)
and fails the whole response on a chunk it does not know, so pgbridge checks
chunks when they are written, where a bad one can still be refused with
nothing stored, and never adds a key of its own.

:data:`REQUIRED_FIELDS` is that schema's union over ``ai`` 5.x, 6.x and 7.x:
each type with the fields it cannot do without. A type one major does not know
(``reset-step`` is 7.x only) fails on that major's clients: a producer writes
the chunks its own clients read, as it would without pgbridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pgbridge.contract import JSONValue, StreamStatus
from pgbridge.exceptions import InvalidEventError

#: Each chunk type and its required fields: "str" ones must be strings, "any" ones present.
REQUIRED_FIELDS: Final[Mapping[str, Mapping[str, str]]] = {
    "start": {},
    "finish": {},
    "abort": {},
    "error": {"errorText": "str"},
    "message-metadata": {"messageMetadata": "any"},
    "start-step": {},
    "finish-step": {},
    "reset-step": {},
    "text-start": {"id": "str"},
    "text-delta": {"id": "str", "delta": "str"},
    "text-end": {"id": "str"},
    "reasoning-start": {"id": "str"},
    "reasoning-delta": {"id": "str", "delta": "str"},
    "reasoning-end": {"id": "str"},
    "tool-input-start": {"toolCallId": "str", "toolName": "str"},
    "tool-input-delta": {"toolCallId": "str", "inputTextDelta": "str"},
    "tool-input-available": {"toolCallId": "str", "toolName": "str"},
    "tool-input-error": {"toolCallId": "str", "toolName": "str", "errorText": "str"},
    "tool-approval-request": {"approvalId": "str", "toolCallId": "str"},
    "tool-approval-response": {"approvalId": "str", "approved": "any"},
    "tool-output-available": {"toolCallId": "str"},
    "tool-output-error": {"toolCallId": "str", "errorText": "str"},
    "tool-output-denied": {"toolCallId": "str"},
    "source-url": {"sourceId": "str", "url": "str"},
    "source-document": {"sourceId": "str", "mediaType": "str", "title": "str"},
    "file": {"url": "str", "mediaType": "str"},
    "reasoning-file": {"url": "str", "mediaType": "str"},
    "custom": {"kind": "str"},
    "steering-message": {"id": "str", "parts": "any"},
}

#: ``data-<name>`` chunks: the app's own parts (``data`` is the payload).
DATA_PREFIX: Final = "data-"

#: The chunks that end a message, and the terminal state each gives its run.
ENDINGS: Final[Mapping[str, StreamStatus]] = {
    "finish": StreamStatus.ENDED,
    "error": StreamStatus.ERRORED,
    "abort": StreamStatus.CANCELLED,
}

#: The message a run's terminal event stands for when it carries no ending chunk
#: (ended by ``bridge.cancel``, or dead-lettered by retention's reaper).
INTERRUPTED_TEXT: Final = "the response was interrupted before it finished"


def is_chunk_type(name: str) -> bool:
    """Whether *name* is a chunk type (a known one, or ``data-<name>``)."""
    return name in REQUIRED_FIELDS or (name.startswith(DATA_PREFIX) and len(name) > len(DATA_PREFIX))


def check_chunk(chunk: object) -> dict[str, JSONValue]:
    """*chunk* as a dict (a copy) if it is a UI message chunk, else raise :class:`InvalidEventError`.

    Checks the type and its required fields, not their values' finer rules
    (``finishReason``'s enum changed between majors: the client checks it).
    JSON-ness is checked when the chunk is published.
    """
    if not isinstance(chunk, Mapping):
        raise InvalidEventError(f"a UI message chunk must be a dict, not {type(chunk).__name__}")
    kind = chunk.get("type")
    if not isinstance(kind, str) or not is_chunk_type(kind):
        known = ", ".join(sorted(REQUIRED_FIELDS))
        raise InvalidEventError(f"unknown UI message chunk type {kind!r}; known: {known}, and data-<name>")
    for field, required in REQUIRED_FIELDS.get(kind, {}).items():
        if field not in chunk:
            raise InvalidEventError(f"a {kind!r} chunk needs {field!r}")
        if required == "str" and not isinstance(chunk[field], str):
            raise InvalidEventError(
                f"{kind!r} chunk: {field!r} must be a str, not {type(chunk[field]).__name__}"
            )
    return dict(chunk)


def ending_of(chunk: Mapping[str, JSONValue]) -> StreamStatus | None:
    """The terminal state *chunk* gives its message's run, or None when it does not end it."""
    kind = chunk.get("type")
    return ENDINGS.get(kind) if isinstance(kind, str) else None


def ending_chunk(event: str, data: JSONValue) -> dict[str, JSONValue]:
    """The chunk to send for a run's terminal event *event* with *data*.

    A message ended through :class:`~pgbridge.ai_sdk.writer.UIMessageWriter` stores
    its ending chunk as the terminal event's data, sent as it is. A run ended
    otherwise (``bridge.cancel``, ``publish_end``, the reaper's ``dead_letter``)
    gets the chunk its status means, so the client's stream still ends on a chunk
    it knows: ``abort`` for a cancel, ``finish`` for an end, ``error`` for the rest.
    """
    if isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"] in ENDINGS:
        return data
    if event == "cancel":
        return {"type": "abort"}
    if event == "end":
        return {"type": "finish"}
    return {"type": "error", "errorText": INTERRUPTED_TEXT}
