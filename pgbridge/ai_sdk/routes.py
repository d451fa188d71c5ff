"""``GET /chat/{chat_id}/stream``: the AI SDK's resume request, served from PostgreSQL.

``useChat({ resume: true })`` (``@ai-sdk/react``; ``AbstractChat.resumeStream``
in ``ai``) asks this when a page mounts, through ``DefaultChatTransport.reconnectToStream``
(``ai``'s ``http-chat-transport.ts``): ``GET {api}/{chatId}/stream``, no body,
no ``Last-Event-ID``. The answer:

* ``204`` when the chat has no response in progress (none ever, or its newest
  one has ended): the client stays idle;
* else ``200``, a UI message stream (:data:`~pgbridge.ai_sdk.sse.UI_MESSAGE_STREAM_HEADERS`):
  the current response replayed from its ``start`` chunk, then followed live,
  one ``data: <chunk>`` frame per chunk, ``: keep-alive`` comments while it
  is quiet, and after its ending chunk ``data: [DONE]``, then the body closes.
  The client rebuilds the message from that ``start`` (a delta whose part it
  never saw start would be an error), so a resume always replays it whole.

Every ``data:`` line is a chunk: an event whose name is no chunk type (not
written by :class:`~pgbridge.ai_sdk.writer.UIMessageWriter`) is skipped with a
comment, and a run ended without an ending chunk (``bridge.cancel``, the
reaper) ends on the chunk its status means (:func:`~pgbridge.ai_sdk.chunks.ending_chunk`).
A response whose first chunks retention deleted cannot be rebuilt: it is
answered with one ``error`` chunk saying so.

Any number of these GETs may read one chat at once (React StrictMode mounts
twice), on any process: each is its own subscription to the response's run.

**Authorisation.** With ``pgbridge serve --token``, the bearer token covers this
route like every other. For a per-run read token the run is the chat's run
(:func:`~pgbridge.ai_sdk.runs.chat_run_id`: ``chat:<chat id>``):
:meth:`ChatResume.run_read_by` maps a request to it, from the path alone
(no database read), and the route reads that run and the response run its
last event names, nothing else.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from pgbridge.ai_sdk.chunks import ending_chunk, is_chunk_type
from pgbridge.ai_sdk.pointer import current_response
from pgbridge.ai_sdk.runs import chat_run_id
from pgbridge.ai_sdk.sse import DONE_FRAME, KEEPALIVE_FRAME, UI_MESSAGE_STREAM_HEADERS, data_frame
from pgbridge.bridge import PostgresStreamBridge
from pgbridge.contract import CANCELLED_SENTINEL, END_SENTINEL, GAP_EVENT, HEARTBEAT_SENTINEL, JSONValue
from pgbridge.exceptions import ConfigurationError, InvalidEventError, RunHistoryChangedError
from pgbridge.http.common import BridgeGetter, bridge_getter, error_response
from pgbridge.http.shutdown import CUT_ON_SHUTDOWN
from pgbridge.store.events import LoggedEvent

#: Where ``pgbridge serve`` answers the resume request (``--chat-stream-path``).
DEFAULT_PATH = "/chat/{chat_id}/stream"
#: The run statuses of a response that has ended: nothing to resume.
_ENDED = frozenset({"ended", "cancelled", "errored"})


class ChatResume:
    """The resume route for a bridge: ``routes()`` to mount, ``run_read_by()`` for auth."""

    def __init__(
        self,
        bridge: PostgresStreamBridge | BridgeGetter,
        *,
        path: str = DEFAULT_PATH,
        heartbeat_interval: float = 15.0,
    ) -> None:
        """*path* holds ``{chat_id}`` once (the AI SDK asks ``{api}/{chatId}/stream``, so
        mounting at ``/api/chat/{chat_id}/stream`` needs no client option). *bridge* is a
        started bridge or a function returning one."""
        if not isinstance(path, str) or not path.startswith("/") or path.count("{chat_id}") != 1:
            raise ConfigurationError(
                f"the chat stream path must start with / and hold {{chat_id}} once, not {path!r}"
            )
        if path.count("{") != 1:
            raise ConfigurationError(f"the chat stream path may hold no parameter but {{chat_id}}: {path!r}")
        if not heartbeat_interval > 0:
            raise ConfigurationError(f"heartbeat_interval must be positive, not {heartbeat_interval!r}")
        self._bridge = bridge_getter(bridge)
        self._heartbeat = heartbeat_interval
        # A chat id holding "/" comes as %2F, which the server decodes: match it whole.
        self.route = Route(path.replace("{chat_id}", "{chat_id:path}"), self.resume, methods=["GET"])

    def routes(self) -> list[BaseRoute]:
        """For ``Starlette(routes=...)`` or ``app.router.routes.extend(...)``."""
        return [self.route]

    def run_read_by(self, scope: Scope) -> str | None:
        """The run a per-run read token must name to let this request through: the chat's
        run, when *scope* is a GET of this route; None for any other request (and for a
        chat id that names no run, which the route answers 400)."""
        match, child = self.route.matches(scope)
        if match is not Match.FULL:
            return None
        try:
            return chat_run_id(child["path_params"]["chat_id"])
        except InvalidEventError:
            return None

    async def resume(self, request: Request) -> Response:
        """204, or the chat's current response from its ``start`` chunk, live."""
        bridge = self._bridge()
        try:
            pointer = await current_response(bridge, request.path_params["chat_id"])
            info = await bridge.run_info(pointer.run_id) if pointer is not None else None
            if pointer is None or info is None or info.status in _ENDED:
                return Response(status_code=204)
            return response_stream(
                bridge, pointer.run_id, deleted=info.events_deleted, heartbeat_interval=self._heartbeat
            )
        except InvalidEventError as exc:
            return error_response(400, str(exc))


def response_stream(
    bridge: PostgresStreamBridge, run_id: str, *, deleted: int = 0, heartbeat_interval: float = 15.0
) -> StreamingResponse:
    """A response's run as a UI message stream: from its ``start`` chunk, then live, to ``[DONE]``.

    What the resume route answers, and what an app's own ``POST /api/chat`` can answer
    too: start the producer as a task of its own (so it outlives the request: the page
    may reload), then return this for its :attr:`~pgbridge.ai_sdk.UIMessageWriter.run_id`.
    *deleted* is how many of the run's events retention deleted (``RunInfo.events_deleted``).
    """
    events = bridge.subscribe_stored(run_id, heartbeat_interval=heartbeat_interval)
    body = resume_frames(events, deleted=deleted)
    # The SDK's own headers exactly (a media_type would add "; charset=utf-8").
    return _UIMessageStreamResponse(body, headers=UI_MESSAGE_STREAM_HEADERS)


class _UIMessageStreamResponse(StreamingResponse):
    """Cut, not ended, when the server shuts down (:data:`~pgbridge.http.shutdown.CUT_ON_SHUTDOWN`):
    a UI message stream that ends properly is a finished message to the AI SDK's
    client, which would then show a half answer as whole; a cut one is a disconnect,
    which its next resume (a reload) picks up, on this process restarted or another."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[CUT_ON_SHUTDOWN] = True
        await super().__call__(scope, receive, send)


async def resume_frames(events: AsyncIterator[Any], *, deleted: int = 0) -> AsyncIterator[str]:
    """The UI message stream of a response run's subscription (from its first event).

    *deleted*: events of the run retention deleted before the read (its
    ``start`` among them when not 0). Closing this (the client left) closes
    the subscription; the response goes on.
    """
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        if deleted:
            yield _lost(f"the first {deleted} chunks of this response were deleted by retention")
            return
        frames = _chunk_frames(events)
        try:
            async with contextlib.aclosing(frames):
                async for frame in frames:
                    yield frame
        except RunHistoryChangedError:
            # A failover lost chunks this stream sent (docs/reliability.md): they cannot be sent again.
            yield _lost("chunks this stream sent are no longer stored (a failover lost them)")


async def _chunk_frames(events: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
    """The frames of :func:`resume_frames` for each item of the subscription."""
    async for item in events:
        if isinstance(item, LoggedEvent):
            if item.terminal:
                yield data_frame(_json(ending_chunk(item.name, item.event.data)))
                yield DONE_FRAME
                return
            if is_chunk_type(item.name):
                yield data_frame(_one_line(item.data_text))
            else:
                yield ": skipped an event that is no UI message chunk\n\n"
        elif item is HEARTBEAT_SENTINEL:
            yield KEEPALIVE_FRAME
        elif item is END_SENTINEL or item is CANCELLED_SENTINEL:
            return  # the bridge is closing (the server stops): the client resumes elsewhere
        elif item.event == GAP_EVENT:
            count = item.data.get("gap_count") if isinstance(item.data, dict) else None
            yield _lost(f"{count or 'some'} chunks of this response were deleted by retention")
            return


def _lost(why: str) -> str:
    """An ``error`` chunk and the end: a response that cannot be replayed whole."""
    return data_frame(_json({"type": "error", "errorText": f"{why}; it cannot be replayed"})) + DONE_FRAME


def _json(value: JSONValue) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _one_line(text: str) -> str:
    """Stored JSON text on one line: a raw line break can only be whitespace between tokens."""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text
