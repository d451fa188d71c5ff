"""Write an assistant response into pgbridge as the AI SDK's UI message stream.

One :class:`UIMessageWriter` per response: it publishes each UI message chunk
as one event of a run of its own (:mod:`pgbridge.ai_sdk.runs`), moves the
chat's pointer to that run when the response starts, and writes the ending
chunk (``finish``, ``error``, ``abort``) as the run's terminal event. A
``GET /chat/{chat_id}/stream`` on any process (:mod:`pgbridge.ai_sdk.routes`)
then serves the response from its ``start`` chunk on, live::

    async with UIMessageWriter(bridge, chat_id) as response:   # start, and the pointer
        await response.write({"type": "text-start", "id": "t1"})
        async for token in model_tokens():
            await response.write({"type": "text-delta", "id": "t1", "delta": token})
        await response.write({"type": "text-end", "id": "t1"})
    # leaving the block writes "finish" (or "error" if the block raised)

Each ``write`` returns once the chunk is committed: what any reader saw is
stored. Bad chunks raise :class:`~pgbridge.exceptions.InvalidEventError` and
store nothing; a write after the response ended raises
:class:`~pgbridge.exceptions.StreamTerminatedError` (also when someone else ended
its run, say ``bridge.cancel(response.run_id)`` for a stop button: the producer
learns it at its next write).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType

from pgbridge.ai_sdk.chunks import check_chunk, ending_of
from pgbridge.ai_sdk.pointer import point_chat_at
from pgbridge.ai_sdk.runs import MessagePointer, new_response_run_id
from pgbridge.bridge import PostgresStreamBridge
from pgbridge.contract import JSONValue, StreamStatus
from pgbridge.exceptions import InvalidEventError, StreamBridgeError, StreamTerminatedError
from pgbridge.payload import encode_data, validate_name

logger = logging.getLogger(__name__)

#: What a response that raised says to the user: the AI SDK's own default
#: (``onError``) hides exception text from the browser too.
ERROR_TEXT = "An error occurred."

Chunk = Mapping[str, JSONValue]


class UIMessageWriter:
    """One assistant response of a chat, written chunk by chunk into a run of its own."""

    def __init__(self, bridge: PostgresStreamBridge, chat_id: str, *, message_id: str | None = None) -> None:
        """*message_id* is the assistant message's id (the ``start`` chunk's
        ``messageId``); by default a new one, or the one a written ``start`` chunk carries."""
        self._bridge = bridge
        self.chat_id = chat_id
        #: The run holding this response's chunks (new for every writer).
        self.run_id = new_response_run_id(chat_id)
        self.message_id = (
            validate_name("message_id", message_id, 255)
            if message_id is not None
            else f"msg-{uuid.uuid4().hex}"
        )
        self._started = False
        self._ended: StreamStatus | None = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        """Whether the ``start`` chunk is stored and the chat points here."""
        return self._started

    @property
    def ended(self) -> StreamStatus | None:
        """How the response ended (its run's terminal state), or None while it is open."""
        return self._ended

    # -- writing ----------------------------------------------------------------

    async def start(self, *, message_metadata: JSONValue = None) -> str:
        """Write the ``start`` chunk and point the chat at this response; returns its event ID."""
        chunk: dict[str, JSONValue] = {"type": "start", "messageId": self.message_id}
        if message_metadata is not None:
            chunk["messageMetadata"] = message_metadata
        return await self.write(chunk)

    async def write(self, chunk: Chunk) -> str:
        """Store one chunk (an ending one ends the response); returns its event ID.

        A first chunk that is not ``start`` gets one written before it, so a
        replay always begins at ``start`` (the client needs it).
        """
        checked = check_chunk(chunk)
        async with self._lock:
            self._check_open()
            if not self._started:
                if checked["type"] == "start":
                    return await self._open(checked)
                self._check_encodable(checked)  # fail before the start is written
                await self._open({"type": "start"})
            return await self._store(checked)

    async def write_many(self, chunks: Sequence[Chunk]) -> list[str]:
        """Store several chunks in one transaction (an ending one must be last); returns their IDs.

        Every chunk is checked before anything is written.
        """
        checked = [check_chunk(chunk) for chunk in chunks]
        if any(ending_of(chunk) is not None for chunk in checked[:-1]):
            raise InvalidEventError("an ending chunk (finish, error, abort) must be the last one written")
        for chunk in checked:
            self._check_encodable(chunk)
        async with self._lock:
            self._check_open()
            ids: list[str] = []
            if checked and not self._started:
                if checked[0]["type"] == "start":
                    ids.append(await self._open(checked.pop(0)))
                else:
                    await self._open({"type": "start"})
            ending = checked.pop() if checked and ending_of(checked[-1]) is not None else None
            if checked:
                ids += await self._bridge.publish_many(self.run_id, [(_name(c), c) for c in checked])
            if ending is not None:
                ids.append(await self._store(ending))
            return ids

    async def finish(self, *, finish_reason: str | None = None, message_metadata: JSONValue = None) -> str:
        """End the response normally (the ``finish`` chunk)."""
        chunk: dict[str, JSONValue] = {"type": "finish"}
        if finish_reason is not None:
            chunk["finishReason"] = finish_reason
        if message_metadata is not None:
            chunk["messageMetadata"] = message_metadata
        return await self.write(chunk)

    async def error(self, error_text: str = ERROR_TEXT) -> str:
        """End the response with an ``error`` chunk (the client shows *error_text*)."""
        return await self.write({"type": "error", "errorText": error_text})

    async def abort(self, reason: str | None = None) -> str:
        """End the response as stopped (the ``abort`` chunk)."""
        return await self.write({"type": "abort"} if reason is None else {"type": "abort", "reason": reason})

    # -- as a context manager ------------------------------------------------------

    async def __aenter__(self) -> UIMessageWriter:
        if not self._started:
            try:
                await self.start()
            except BaseException as exc:  # cancelled mid-start, say: the block's exit will not run
                if self._started:
                    await self._end_after(exc)
                raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """End a response the block left open: ``finish``, ``abort`` when it was cancelled,
        ``error`` when it raised. A failure to write that ending is logged, never raised
        over the block's own exception."""
        if self._ended is None:
            await self._end_after(exc)

    async def _end_after(self, exc: BaseException | None) -> None:
        try:
            if exc is None:
                await self.finish()
            elif isinstance(exc, asyncio.CancelledError):
                await self.abort()
            else:
                await self.error()
        except StreamBridgeError:
            if exc is None:
                raise
            logger.warning("could not end response run %s after an error", self.run_id, exc_info=True)

    # -- plumbing -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._ended is not None:
            raise StreamTerminatedError(
                f"response {self.message_id!r} of chat {self.chat_id!r} has ended ({self._ended.value}); "
                "nothing more can be written to it"
            )

    def _check_encodable(self, chunk: dict[str, JSONValue]) -> None:
        encode_data(chunk, max_bytes=self._bridge.options.max_payload_bytes)

    async def _open(self, start: dict[str, JSONValue]) -> str:
        """Store the ``start`` chunk (with this response's ``messageId``), then point the chat here.

        The run exists before the pointer names it, so a pointer never leads to
        a run that is not there. A resume in between still sees the previous
        response, which has ended: it answers 204, as it would a moment earlier.
        """
        given = start.get("messageId")
        if isinstance(given, str) and given:
            self.message_id = given
        else:
            start = {**start, "messageId": self.message_id}
        event_id = await self._bridge.publish(self.run_id, "start", start)
        self._started = True
        await point_chat_at(self._bridge, self.chat_id, MessagePointer(self.run_id, self.message_id))
        return event_id

    async def _store(self, chunk: dict[str, JSONValue]) -> str:
        ending = ending_of(chunk)
        if ending is None:
            return await self._bridge.publish(self.run_id, _name(chunk), chunk)
        event_id = await self._bridge.publish_terminal(self.run_id, ending, chunk)
        self._ended = ending
        return event_id


def _name(chunk: Mapping[str, JSONValue]) -> str:
    """A chunk's event name: its type (what the resume route checks, and what
    ``pgbridge events`` shows)."""
    kind = chunk["type"]
    assert isinstance(kind, str)
    return kind
