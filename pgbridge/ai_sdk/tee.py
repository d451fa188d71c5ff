"""Tee an AI SDK UI message stream your server already produces into pgbridge.

For apps whose Python endpoint already answers ``POST /api/chat`` with the UI
message stream (SSE text it builds itself, or relays from a model service):
wrap the body, and every chunk in it is stored (:class:`UIMessageWriter`) before
its bytes go on to the browser, so ``GET /chat/{chat_id}/stream`` can serve the
response to a browser that reloads::

    response = StreamingResponse(my_ui_message_stream(), headers=UI_MESSAGE_STREAM_HEADERS)
    return tee_response(bridge, chat_id, response)

The stream is read by a task of its own, not by the response: when the
browser goes away (a reload, a closed tab) the response stops, but the task
goes on reading the stream to its end and storing it, which is what lets the
reloaded page resume it. The bytes the browser gets are the stream's own,
unchanged (comments, keep-alives and all); pgbridge stores the chunks.

If storing fails (the database is away), the browser still gets the stream: the
error is logged, storing stops, and a resume serves what was stored. A stream
that ends without an ending chunk is stored with a ``finish`` (its browser saw
it end normally); one that raises gets an ``error`` chunk, and the browser's
response breaks as it would have without the tee.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

from pgbridge.ai_sdk.chunks import check_chunk, ending_of
from pgbridge.ai_sdk.sse import DONE, SSEDataParser
from pgbridge.ai_sdk.writer import UIMessageWriter
from pgbridge.bridge import PostgresStreamBridge
from pgbridge.contract import JSONValue
from pgbridge.exceptions import InvalidEventError, StreamBridgeError

if TYPE_CHECKING:
    from starlette.responses import StreamingResponse

logger = logging.getLogger(__name__)

#: The tees still reading their streams (a task needs a reference, or it may be collected).
_RUNNING: set[asyncio.Task[None]] = set()


class _End:
    """The stream ended (queued after its last bytes)."""


_END = _End()


class UIMessageTee:
    """The browser's copy of a UI message stream that a task of its own stores into pgbridge.

    Iterate it for the response body (once). :attr:`writer` is the response's
    writer (its ``run_id``, ``message_id``); ``await tee.stored()`` waits until the
    stream has been read to its end and stored.
    """

    def __init__(
        self,
        bridge: PostgresStreamBridge,
        chat_id: str,
        body: AsyncIterable[Any],
        *,
        message_id: str | None = None,
    ) -> None:
        self.writer = UIMessageWriter(bridge, chat_id, message_id=message_id)
        self._body = body
        self._queue: asyncio.Queue[bytes | BaseException | _End] = asyncio.Queue()
        self._attached = True
        self._storing = True
        self._task = asyncio.create_task(self._pump(), name=f"pgbridge-ai-sdk-tee:{self.writer.run_id}")
        _RUNNING.add(self._task)
        self._task.add_done_callback(_RUNNING.discard)

    async def stored(self) -> None:
        """Wait until the stream is read to its end and stored (or storing gave up)."""
        await asyncio.shield(self._task)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._forward()

    async def _forward(self) -> AsyncIterator[bytes]:
        """The stream's bytes as the task reads (and stores) them. Closing this (the browser
        left) detaches it: the task keeps reading and storing."""
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._attached = False
            while not self._queue.empty():
                self._queue.get_nowait()

    async def _pump(self) -> None:
        parser = SSEDataParser()
        try:
            async for piece in self._body:
                raw = piece.encode() if isinstance(piece, str) else bytes(piece)
                await self._store([c for c in map(_chunk_of, parser.feed(raw)) if c is not None])
                self._send(raw)
            await self._end(self.writer.finish)
        except asyncio.CancelledError:
            await self._end(self.writer.abort)
            raise
        except Exception as exc:
            logger.warning(
                "the UI message stream of response run %s raised", self.writer.run_id, exc_info=True
            )
            self._send(exc)
            await self._end(self.writer.error)
        finally:
            self._send(_END)

    async def _store(self, chunks: list[dict[str, JSONValue]]) -> None:
        """Store the chunks one read of the stream completed (one transaction), up to an ending."""
        if not self._storing or not chunks or self.writer.ended is not None:
            return
        for index, chunk in enumerate(chunks):
            if ending_of(chunk) is not None:
                del chunks[index + 1 :]  # its client stops at the ending too
                break
        try:
            try:
                await self.writer.write_many(chunks)
            except InvalidEventError:  # one chunk the bridge refuses (too large, NaN): store the rest
                for chunk in chunks:
                    await self._store_alone(chunk)
        except StreamBridgeError:
            self._storing = False
            logger.error(
                "storing response run %s failed; the browser still gets the stream, "
                "a resume gets what was stored",
                self.writer.run_id,
                exc_info=True,
            )

    async def _store_alone(self, chunk: dict[str, JSONValue]) -> None:
        try:
            await self.writer.write(chunk)
        except InvalidEventError as exc:
            logger.warning("not storing a chunk of response run %s: %s", self.writer.run_id, exc)

    async def _end(self, ending: Any) -> None:
        """Write *ending* (a writer method) unless the stream ended itself or storing gave up."""
        if self._storing and self.writer.ended is None:
            with contextlib.suppress(StreamBridgeError):
                await ending()

    def _send(self, item: bytes | BaseException | _End) -> None:
        if self._attached:
            self._queue.put_nowait(item)


def tee_ui_message_stream(
    bridge: PostgresStreamBridge, chat_id: str, body: AsyncIterable[Any], *, message_id: str | None = None
) -> UIMessageTee:
    """Store the UI message stream *body* (SSE text as ``bytes`` or ``str`` pieces) as a new
    response of *chat_id* while passing it on; iterate the result for the response body.
    Call it inside the request (it starts a task on the running loop)."""
    return UIMessageTee(bridge, chat_id, body, message_id=message_id)


def tee_response(
    bridge: PostgresStreamBridge, chat_id: str, response: StreamingResponse
) -> StreamingResponse:
    """*response* (a Starlette/FastAPI ``StreamingResponse`` of a UI message stream) with its
    body teed into pgbridge as a new response of *chat_id*; returns the same response."""
    response.body_iterator = tee_ui_message_stream(bridge, chat_id, response.body_iterator)
    return response


def _chunk_of(data: str) -> dict[str, JSONValue] | None:
    """The chunk an SSE event's data holds; None for ``[DONE]`` and for what is no chunk
    (logged: the stream's own client would reject it too)."""
    if data == DONE:
        return None
    try:
        return check_chunk(json.loads(data))
    except (ValueError, InvalidEventError) as exc:
        logger.warning("not storing an SSE event that is no UI message chunk (%s): %.200s", exc, data)
        return None
