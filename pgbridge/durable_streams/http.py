"""The Durable Streams HTTP protocol (PROTOCOL.md sections 4, 5, 8, 9, 10) over a bridge.

Mount :func:`durable_stream_routes` in a Starlette or FastAPI app (``pgbridge
serve`` mounts it under ``/v1/stream/``). The stream at
``/v1/stream/{path}`` is the run ``path`` (a path may hold ``/``): a run
published with the bridge reads here as a JSON stream of event envelopes,
and a JSON stream appended here reads with ``bridge.subscribe``.

This module translates HTTP to the engine's public API
(:class:`pgbridge.durable_streams.streams.DurableStreams`, ``bridge.streams``) and
back; it holds no SQL. Long-poll and SSE readers wait on the run's shared
feed, so any process's append, close or bridge publish wakes them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import orjson
from starlette._utils import get_route_path
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pgbridge.bridge import PostgresStreamBridge
from pgbridge.durable_streams.forks import ForkRequest
from pgbridge.durable_streams.messages import (
    DEFAULT_TYPE,
    MESSAGE_EVENT,
    bytes_message,
    is_json,
    is_text,
    json_array,
    json_messages,
    normalize_content_type,
)
from pgbridge.durable_streams.offsets import (
    Offset,
    format_offset,
    parse_fork_offset,
    parse_offset,
    response_cursor,
)
from pgbridge.durable_streams.streams import (
    AppendOutcome,
    DurableStreams,
    Producer,
    StreamConfig,
    StreamHead,
    StreamPage,
)
from pgbridge.exceptions import (
    ForkConflictError,
    ForkPositionError,
    ForkSourceNotFoundError,
    InvalidEventError,
    StreamExistsError,
)
from pgbridge.http.common import BridgeGetter, bridge_getter, error_response
from pgbridge.ids import validate_run_id

#: Headers every response carries (section 12.7). Not CORS: that is for the app
#: to configure (``pgbridge serve --cors-origin``; see :data:`CORS_EXPOSE_HEADERS`).
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
#: The methods of a stream's URL.
STREAM_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS")
#: What a browser on an allowed origin may send, and read, in CORS terms.
CORS_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-None-Match",
    "Stream-TTL",
    "Stream-Expires-At",
    "Stream-Closed",
    "Stream-Seq",
    "Stream-Forked-From",
    "Stream-Fork-Offset",
    "Stream-Fork-Sub-Offset",
    "Producer-Id",
    "Producer-Epoch",
    "Producer-Seq",
)
CORS_EXPOSE_HEADERS = (
    "Stream-Next-Offset",
    "Stream-Cursor",
    "Stream-Up-To-Date",
    "Stream-Closed",
    "Stream-TTL",
    "Stream-Expires-At",
    "Stream-SSE-Data-Encoding",
    "Producer-Epoch",
    "Producer-Seq",
    "Producer-Expected-Seq",
    "Producer-Received-Seq",
    "ETag",
    "Location",
    "Content-Type",
)
_CACHEABLE = "public, max-age=60, stale-while-revalidate=300"
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class DurableStreamSettings:
    """How the protocol is served."""

    #: Seconds a long-poll waits for data before answering 204.
    long_poll_timeout: float = 10.0
    #: Seconds an SSE response lasts before the server closes it (clients reconnect; section 10.2).
    sse_max_seconds: float = 60.0
    #: Largest request body accepted (413 beyond).
    max_append_bytes: int = 8 * 1024 * 1024
    #: Bytes of message data one catch-up response or SSE event carries, at most (one message always).
    read_chunk_bytes: int = 1024 * 1024
    #: Messages one catch-up response or SSE event carries, at most.
    read_chunk_messages: int = 4096
    #: Whether a DELETE may delete a run published through the bridge (audit history;
    #: ``pgbridge serve --allow-run-deletion``). Off: 403, and nothing changes. Streams
    #: created by a PUT (and forks) are deletable either way. Every deletion is recorded.
    allow_run_deletion: bool = False


def durable_stream_routes(
    bridge: PostgresStreamBridge | BridgeGetter,
    settings: DurableStreamSettings | None = None,
    *,
    prefix: str = "/v1/stream",
) -> list[BaseRoute]:
    """The routes, for ``Starlette(routes=...)`` or ``app.router.routes.extend(...)``.

    *bridge* is a started bridge, or a function returning one. Starlette's
    :class:`~starlette.endpoints.HTTPEndpoint` picks the handler by method, so
    any other method answers 405 with an ``Allow`` header.
    """
    routes, _ = durable_stream_app_parts(bridge, settings, prefix=prefix)
    return routes


def durable_stream_app_parts(
    bridge: PostgresStreamBridge | BridgeGetter,
    settings: DurableStreamSettings | None = None,
    *,
    prefix: str = "/v1/stream",
) -> tuple[list[BaseRoute], Middleware]:
    """:func:`durable_stream_routes`, and the :class:`AppendLane` middleware that answers
    their appends without Starlette's router (what ``pgbridge serve``'s app mounts:
    pgbridge.http.app)."""
    served = _Handler(bridge_getter(bridge), settings or DurableStreamSettings(), prefix)

    class DurableStreamEndpoint(_StreamEndpoint):
        handler = served

    routes: list[BaseRoute] = [Route(prefix + "/{path:path}", DurableStreamEndpoint)]
    return routes, Middleware(AppendLane, handler=served, prefix=prefix)


class AppendLane:
    """ASGI middleware: a POST under the streams' prefix goes straight to the append handler.

    The append is the protocol's hot request (a producer sends one after another), and
    under load ``pgbridge serve`` is bound by its own process's CPU: Starlette's exception
    middleware, its router trying each route's pattern in turn and the endpoint class
    made per request took about a quarter of it (py-spy, wrk on 100 streams;
    docs/performance.md). The answer is the same request object, handler and response
    as through the route (``scope["path_params"]`` set as the route would); every other
    request goes on to the app. Mounted innermost, so CORS, the token check and the
    shutdown guard run first. The prefix's appends are this lane's: an app that routes
    another POST under it must not mount the lane (mount :func:`durable_stream_routes`).
    """

    def __init__(self, app: ASGIApp, *, handler: _Handler, prefix: str) -> None:
        self.app = app
        self._handler = handler
        self._start = prefix + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = get_route_path(scope)
            if path.startswith(self._start):
                scope["path_params"] = {"path": path[len(self._start) :]}
                response = await _answer(Request(scope, receive), self._handler.post)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _response(
    status: int, body: bytes | str = b"", headers: dict[str, str] | None = None, media_type: str | None = None
) -> Response:
    out = {**_SECURITY_HEADERS, **(headers or {})}
    if media_type is not None:
        out["Content-Type"] = media_type  # as stored: Starlette would add a charset to text/*
    return Response(body, status_code=status, headers=out)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return error_response(status, message, {**_SECURITY_HEADERS, **(headers or {})})


def _gone(run_id: str) -> Response:
    return _error(410, f"stream {run_id!r} was deleted (its forks still read it)")


def _lost_offset() -> Response:
    """The answer to an offset naming an event this stream does not hold: its seq holds
    another event (or none), so reading on would continue another history."""
    return _error(
        410,
        "the offset names an event this stream does not hold (of a history a failover lost, "
        "or of an earlier stream at this path); read from -1",
    )


def _tail_offset(seq: int, ms: int | None) -> str:
    """The offset of *seq* created at *ms*; 0 when the time is not known (such an offset
    is read unchecked, as the time of that seq is not known to any later read either)."""
    return format_offset(seq, ms or 0)


#: A handler of one method: the request and the run id its path names.
_MethodHandler = Callable[[Request, str], Awaitable[Response]]


class _StreamEndpoint(HTTPEndpoint):
    """The methods of a stream's URL; a subclass per route set names its :class:`_Handler`."""

    handler: ClassVar[_Handler]

    async def options(self, request: Request) -> Response:
        """The methods the URL allows, without looking at the stream. A CORS preflight
        is answered by the app's CORS middleware when an origin is configured."""
        return _response(204, headers={"Allow": ", ".join(STREAM_METHODS)})

    async def head(self, request: Request) -> Response:
        return await _answer(request, self.handler.head)

    async def get(self, request: Request) -> Response:
        return await _answer(request, self.handler.get)

    async def put(self, request: Request) -> Response:
        return await _answer(request, self.handler.put)

    async def post(self, request: Request) -> Response:
        return await _answer(request, self.handler.post)

    async def delete(self, request: Request) -> Response:
        return await _answer(request, self.handler.delete)


async def _answer(request: Request, handle: _MethodHandler) -> Response:
    """*handle*'s response for the run the path names, or the error a bad request gets."""
    try:
        return await handle(request, validate_run_id(request.path_params["path"]))
    except _BadRequest as exc:
        return _error(exc.status, str(exc), exc.headers)
    except InvalidEventError as exc:
        return _error(400, str(exc))


class _Handler:
    """The protocol's answers, one method per HTTP method, over the bridge's Durable Streams."""

    def __init__(self, get_bridge: BridgeGetter, settings: DurableStreamSettings, prefix: str) -> None:
        self._bridge = get_bridge
        self._settings = settings
        self._prefix = prefix

    def _streams(self) -> DurableStreams:
        return self._bridge().streams

    # -- writes -----------------------------------------------------------------

    async def put(self, request: Request, run_id: str) -> Response:
        headers = request.headers
        if headers.get("stream-forked-from") is not None:
            return await self.put_fork(request, run_id)
        for name in ("Stream-Fork-Offset", "Stream-Fork-Sub-Offset"):
            if headers.get(name) is not None:
                return _error(400, f"{name} needs Stream-Forked-From")
        content_type = normalize_content_type(headers.get("content-type")) or DEFAULT_TYPE
        ttl, expires_at = _expiry(headers.get("stream-ttl"), headers.get("stream-expires-at"))
        closed = _flag(headers.get("stream-closed"))
        body = await self._body(request)
        events = self._events(content_type, body, creating=True)
        config = StreamConfig(content_type, ttl_seconds=ttl, expires_at=expires_at, closed=closed)
        try:
            created, head = await self._streams().create(run_id, config, events)
        except StreamExistsError as exc:
            return _error(409, str(exc))
        return _created(request, created, head)

    async def put_fork(self, request: Request, run_id: str) -> Response:
        """Create a fork (section 4.2): a stream reading its source up to the fork point."""
        headers = request.headers
        fork = self._fork_request(
            headers["stream-forked-from"],
            headers.get("stream-fork-offset"),
            headers.get("stream-fork-sub-offset"),
        )
        ttl, expires_at = _expiry(headers.get("stream-ttl"), headers.get("stream-expires-at"))
        closed = _flag(headers.get("stream-closed"))
        streams = self._streams()
        content_type = normalize_content_type(headers.get("content-type"))
        if content_type is None:  # the source's, checked again under its lock
            source = await streams.head(fork.source_run_id)
            if source is None:
                return _error(404, f"no stream {fork.source_run_id!r} to fork")
            content_type = source.content_type
        body = await self._body(request)
        events = self._events(content_type, body, creating=True)
        config = StreamConfig(content_type, ttl_seconds=ttl, expires_at=expires_at, closed=closed)
        try:
            created, head = await streams.create_fork(run_id, config, fork, events)
        except ForkSourceNotFoundError as exc:
            return _error(404, str(exc))
        except ForkPositionError as exc:
            return _error(400, str(exc))
        except (ForkConflictError, StreamExistsError) as exc:
            return _error(409, str(exc))
        return _created(request, created, head)

    def _fork_request(self, forked_from: str, offset: str | None, sub_offset: str | None) -> ForkRequest:
        """The fork a PUT asks for: the source's path (under this prefix, or the run id itself)."""
        source = forked_from.strip()
        prefix = self._prefix.rstrip("/") + "/"
        if source.startswith(prefix):
            source = source[len(prefix) :]
        try:
            source_id = validate_run_id(source)
        except InvalidEventError as exc:
            raise _BadRequest(400, f"Stream-Forked-From: {exc}") from None
        try:
            named = parse_fork_offset(offset)
        except ValueError as exc:
            raise _BadRequest(400, f"Stream-Fork-Offset: {exc}") from None
        sub = 0
        if sub_offset is not None:
            if not _DECIMAL.fullmatch(sub_offset) or int(sub_offset) > _MAX_SAFE_INTEGER:
                raise _BadRequest(400, "Stream-Fork-Sub-Offset must be a whole number from 0 to 2^53-1")
            sub = int(sub_offset)
        if named is None:
            return ForkRequest(source_id, None, sub)
        return ForkRequest(source_id, named.seq, sub, named.ms)

    async def post(self, request: Request, run_id: str) -> Response:
        headers = request.headers
        close = _flag(headers.get("stream-closed"))
        producer = _producer(headers)
        body = await self._body(request)
        if not body and not close:
            raise _BadRequest(400, "an append needs a body (or Stream-Closed: true to close)")
        content_type = normalize_content_type(headers.get("content-type"))
        events: list[tuple[str, str]] = []
        if body:
            if content_type is None:
                raise _BadRequest(400, "an append with a body needs a Content-Type")
            events = self._events(content_type, body, creating=False)
        outcome = await self._streams().append(
            run_id,
            content_type if body else None,
            events,
            close=close,
            stream_seq=headers.get("stream-seq"),
            producer=producer,
        )
        if outcome.last_seq and outcome.last_ms is None:
            # A fork with no event of its own keeps no time in its row: its head finds it.
            head = await self._streams().head(run_id)
            if head is not None and head.last_seq == outcome.last_seq:
                outcome = dataclasses.replace(outcome, last_ms=head.last_ms)
        return _append_response(outcome, producer)

    async def delete(self, request: Request, run_id: str) -> Response:
        allowed = self._settings.allow_run_deletion
        outcome = await self._streams().delete(run_id, allow_published=allowed, via="http")
        if outcome == "published":
            return _error(
                403,
                f"run {run_id!r} was published through the bridge and is audit history; start the "
                "server with --allow-run-deletion (DurableStreamSettings(allow_run_deletion=True)) "
                "to delete it",
            )
        if outcome == "gone":
            return _gone(run_id)
        if outcome == "not_found":
            return _error(404, f"no stream {run_id!r}")
        return _response(204)

    def _events(self, content_type: str, body: bytes, *, creating: bool) -> list[tuple[str, str]]:
        if not body:
            return []
        if is_json(content_type):
            limit = self._settings.max_append_bytes
            texts = json_messages(body, max_bytes=limit, allow_empty=creating)
            return [(MESSAGE_EVENT, text) for text in texts]
        return [(MESSAGE_EVENT, bytes_message(body))]

    async def _body(self, request: Request) -> bytes:
        limit = self._settings.max_append_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _BadRequest(413, f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _BadRequest(413, f"the body is over {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise _BadRequest(400, "the client went away mid-body") from None
        return b"".join(chunks)

    # -- reads ------------------------------------------------------------------

    async def head(self, request: Request, run_id: str) -> Response:
        head = await self._streams().head(run_id)
        if head is None:
            return _response(404, headers={"Cache-Control": "no-store"})
        if head.soft_deleted:
            return _response(410, headers={"Cache-Control": "no-store"})
        out = {
            "Stream-Next-Offset": _tail_offset(head.last_seq, head.last_ms),
            "Cache-Control": "no-store",
            **_expiry_headers(head),
        }
        if head.closed:
            out["Stream-Closed"] = "true"
        return _response(200, headers=out, media_type=head.content_type)

    async def get(self, request: Request, run_id: str) -> Response:
        params = request.query_params
        offsets = params.getlist("offset")
        if len(offsets) > 1:
            raise _BadRequest(400, "give one offset")
        live = params.get("live")
        if live not in (None, "long-poll", "sse"):
            raise _BadRequest(400, f"live must be long-poll or sse, not {live!r}")
        if live is not None and not offsets:
            raise _BadRequest(400, f"live={live} needs an offset")
        try:
            offset = parse_offset(offsets[0] if offsets else None)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        streams = self._streams()
        now = offset.kind == "now"
        after = offset.seq
        if now:
            head = await streams.head(run_id)
            if head is None:
                return _error(404, f"no stream {run_id!r}")
            if head.soft_deleted:
                return _gone(run_id)
            after = head.last_seq
            offset = Offset("seq", after, head.last_ms)
        page = await self._read(run_id, after)
        if page is None:
            head = await streams.head(run_id)
            if head is not None and head.soft_deleted:
                return _gone(run_id)
            return _error(404, f"no stream {run_id!r}")
        if after > page.head.last_seq:
            if offset.ms is not None:  # an offset this server made, past the tail: lost
                return _lost_offset()
            raise _BadRequest(400, "the offset is past the stream's tail")
        if after < page.oldest_seq:
            return _error(410, "the data at this offset was deleted by retention; read from -1")
        if offset.names_another_event(page.at_ms):
            return _lost_offset()
        at_ms = page.at_ms if page.at_ms is not None else offset.ms
        cursor = params.get("cursor")
        if live == "sse":
            return self._sse(run_id, Offset("seq", after, at_ms), page, cursor)
        if now:  # what is there now is not read: only what comes after
            page = _nothing_after(page, after, at_ms)
        if live == "long-poll" and not page.count and not page.head.closed:
            waited = await self._long_poll(run_id, after)
            if waited is None:
                return _error(404, f"no stream {run_id!r}")
            if offset.names_another_event(waited.at_ms):  # a failover while it waited
                return _lost_offset()
            page = waited
        if live == "long-poll" and not page.count:
            out = {
                "Stream-Next-Offset": _tail_offset(after, at_ms),
                "Stream-Up-To-Date": "true",
                "Cache-Control": "no-store",
            }
            if page.head.closed:
                out["Stream-Closed"] = "true"
            else:
                out["Stream-Cursor"] = response_cursor(cursor)
            return _response(204, headers=out)
        return self._catch_up(
            request, Offset("seq", after, at_ms), page, live=live is not None, now=now, cursor=cursor
        )

    async def _read(self, run_id: str, after: int) -> StreamPage | None:
        """One response's worth of the stream after *after*, within the read budgets."""
        return await self._streams().read_page(
            run_id,
            after,
            max_messages=self._settings.read_chunk_messages,
            max_bytes=self._settings.read_chunk_bytes,
        )

    def _catch_up(
        self, request: Request, offset: Offset, page: StreamPage, *, live: bool, now: bool, cursor: str | None
    ) -> Response:
        head = page.head
        after = offset.seq
        next_seq = page.next_seq
        up_to_date = page.up_to_date
        next_offset = _tail_offset(next_seq, page.next_ms if page.count else offset.ms)
        out = {"Stream-Next-Offset": next_offset}
        if up_to_date:
            out["Stream-Up-To-Date"] = "true"
        closed = up_to_date and head.closed
        if closed:
            out["Stream-Closed"] = "true"
        if live or not closed:
            out["Stream-Cursor"] = response_cursor(cursor)
        if now or (up_to_date and next_seq == after):
            out["Cache-Control"] = "no-store"
        else:
            out["Cache-Control"] = _CACHEABLE
        if not now:
            closure = ":c" if closed else ""
            etag = f'"{head.created_us}:{_tail_offset(after, offset.ms)}:{next_offset}{closure}"'
            out["ETag"] = etag
            if _etag_matches(request.headers.get("if-none-match"), etag):
                return _response(304, headers=out)
        return _response(200, page.body, out, head.content_type)

    async def _read_following(self, run_id: str, position: Offset) -> StreamPage | None:
        """:meth:`_read` after *position*; None when the stream is gone, or when it holds
        another event at the position than the one this response sent (a failover lost it)."""
        page = await self._read(run_id, position.seq)
        if page is None or position.names_another_event(page.at_ms):
            return None
        return page

    async def _long_poll(self, run_id: str, after: int) -> StreamPage | None:
        """Wait until the stream has data after *after*, closes, or the timeout passes."""
        streams = self._streams()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.long_poll_timeout
        async with streams.watch(run_id, after) as waiter:
            while True:
                waiter.clear()
                page = await self._read(run_id, after)
                if page is None or page.count or page.head.closed:
                    return page
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return page
                await waiter.wait(remaining)

    def _sse(self, run_id: str, after: Offset, first: StreamPage, cursor: str | None) -> Response:
        head = first.head
        out = {
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "Content-Type": "text/event-stream",
            **_SECURITY_HEADERS,
        }
        if not is_text(head.stored_content_type):
            out["Stream-SSE-Data-Encoding"] = "base64"
        return StreamingResponse(self._sse_frames(run_id, after, first, cursor), headers=out)

    async def _sse_frames(
        self, run_id: str, after: Offset, first: StreamPage, cursor: str | None
    ) -> AsyncIterator[str]:
        """Data and control events from *after*: the first read's at once, then as the stream moves.

        The first frames go out before the shared feed is joined, so a reader
        sees history without waiting for anything else. A read that finds
        another event at the position reached (a failover lost what was sent)
        ends the response: the client's reconnect with its last offset is
        then answered ``410``, never continued in the other history.
        """
        streams = self._streams()
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + self._settings.sse_max_seconds
        frames, position, up_to_date, closed = _sse_step(first, after, cursor, first_control=True)
        for frame in frames:
            yield frame
        if closed:
            return
        async with streams.watch(run_id, position.seq) as waiter:
            while True:
                if up_to_date:  # wait for an append, a close, or the end of this response
                    remaining = ends_at - loop.time()
                    if remaining <= 0:
                        return
                    waiter.clear()
                    page = await self._read_following(run_id, position)
                    if page is not None and not page.count and not page.head.closed:
                        if not await waiter.wait(min(remaining, 15.0)):
                            yield ": keep-alive\n\n"
                        continue
                else:
                    page = await self._read_following(run_id, position)
                if page is None:
                    return  # the stream was deleted, or lost the position reached
                frames, position, up_to_date, closed = _sse_step(page, position, cursor)
                for frame in frames:
                    yield frame
                if closed:
                    return


def _nothing_after(page: StreamPage, after: int, at_ms: int | None) -> StreamPage:
    """*page* emptied: an ``offset=now`` read answers where the stream stands, with no data."""
    body = json_array(()) if is_json(page.head.stored_content_type) else b""
    return dataclasses.replace(page, body=body, count=0, next_seq=after, next_ms=at_ms)


def _sse_step(
    page: StreamPage, position: Offset, cursor: str | None, *, first_control: bool = False
) -> tuple[list[str], Offset, bool, bool]:
    """The frames for *page* read after *position*: a data event (when there is data)
    paired with its control event; returns them, the new position, up-to-date and closed."""
    moved = page.next_seq > position.seq
    reached = Offset("seq", page.next_seq, page.next_ms) if moved else position
    up_to_date = page.up_to_date
    closed = up_to_date and page.head.closed
    frames = []
    if moved:
        frames.append(_sse_data(page.body, page.head))
    if moved or first_control or closed:
        control: dict[str, object] = {"streamNextOffset": _tail_offset(reached.seq, reached.ms)}
        if closed:
            control["streamClosed"] = True
        else:
            control["streamCursor"] = response_cursor(cursor)
        if up_to_date:
            control["upToDate"] = True
        frames.append("event: control\ndata:" + orjson.dumps(control).decode() + "\n\n")
    return frames, reached, up_to_date, closed


def _sse_data(body: bytes, head: StreamHead) -> str:
    if is_text(head.stored_content_type):
        text = body.decode("utf-8", errors="replace")
        lines = re.split(r"\r\n|\r|\n", text)
    else:
        encoded = base64.b64encode(body).decode("ascii")
        lines = [encoded[i : i + 4096] for i in range(0, len(encoded), 4096)] or [""]
    # "data:" then the line; a line that starts with a space gets one more
    # (a reader drops one space after the colon).
    return (
        "event: data\n"
        + "".join(f"data: {line}\n" if line[:1] == " " else f"data:{line}\n" for line in lines)
        + "\n"
    )


def _created(request: Request, created: bool, head: StreamHead) -> Response:
    """The answer to a create or a fork: 201 with Location when it is new, 200 when it
    confirms an existing stream of the same configuration."""
    out = {"Stream-Next-Offset": _tail_offset(head.last_seq, head.last_ms), **_expiry_headers(head)}
    if head.closed:
        out["Stream-Closed"] = "true"
    if created:
        out["Location"] = str(request.url.replace(query=""))
    return _response(201 if created else 200, headers=out, media_type=head.content_type)


def _append_response(outcome: AppendOutcome, producer: Producer | None) -> Response:
    out: dict[str, str] = {}
    if outcome.last_seq is not None:
        out["Stream-Next-Offset"] = _tail_offset(outcome.last_seq, outcome.last_ms)
    if outcome.closed:
        out["Stream-Closed"] = "true"
    kind = outcome.kind
    if kind in ("appended", "closed_now", "duplicate"):
        if producer is not None:
            out["Producer-Epoch"] = str(outcome.producer_epoch)
            out["Producer-Seq"] = str(outcome.producer_seq)
        status = 200 if kind == "appended" and producer is not None else 204
        return _response(status, headers=out)
    if kind == "already_closed":
        return _response(204, headers=out)
    if kind == "closed":
        return _error(409, "the stream is closed", out)
    if kind == "not_found":
        return _error(404, "no such stream")
    if kind == "gone":
        return _error(410, "the stream was deleted (its forks still read it)")
    if kind == "stale_epoch":
        return _error(403, "stale producer epoch", {"Producer-Epoch": str(outcome.producer_epoch)})
    if kind == "gap":
        return _error(
            409,
            "producer sequence gap",
            {
                "Producer-Expected-Seq": str(outcome.producer_epoch),
                "Producer-Received-Seq": str(outcome.producer_seq),
            },
        )
    if kind == "bad_epoch_seq":
        return _error(400, "a new producer epoch must start at Producer-Seq 0")
    if kind == "content_type":
        return _error(409, "the Content-Type is not the stream's")
    return _error(409, "Stream-Seq must be greater than the last one")


def _producer(headers: object) -> Producer | None:
    get = headers.get  # type: ignore[attr-defined]
    values = [get("producer-id"), get("producer-epoch"), get("producer-seq")]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise _BadRequest(400, "Producer-Id, Producer-Epoch and Producer-Seq go together")
    producer_id, epoch, seq = values
    if not producer_id:
        raise _BadRequest(400, "Producer-Id must not be empty")
    numbers = []
    for name, value in (("Producer-Epoch", epoch), ("Producer-Seq", seq)):
        if not _DECIMAL.fullmatch(value) or int(value) > _MAX_SAFE_INTEGER:
            raise _BadRequest(400, f"{name} must be a whole number from 0 to 2^53-1")
        numbers.append(int(value))
    return Producer(producer_id, numbers[0], numbers[1])


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def _expiry(ttl: str | None, expires_at: str | None) -> tuple[int | None, datetime | None]:
    if ttl is not None and expires_at is not None:
        raise _BadRequest(400, "give Stream-TTL or Stream-Expires-At, not both")
    if ttl is not None:
        if not _DECIMAL.fullmatch(ttl) or len(ttl) > 15:
            raise _BadRequest(400, "Stream-TTL must be a whole number of seconds, without sign or zeros")
        return int(ttl), None
    if expires_at is not None:
        try:
            moment = datetime.fromisoformat(expires_at.strip())
        except ValueError:
            raise _BadRequest(400, "Stream-Expires-At must be an RFC 3339 time") from None
        if moment.tzinfo is None or "T" not in expires_at.upper():
            raise _BadRequest(400, "Stream-Expires-At must be an RFC 3339 time with a time zone")
        return None, moment.astimezone(UTC)
    return None, None


def _expiry_headers(head: StreamHead) -> dict[str, str]:
    out = {}
    if head.ttl_seconds is not None:
        out["Stream-TTL"] = str(head.ttl_seconds)
    if head.expires_at is not None:
        out["Stream-Expires-At"] = head.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    return any(candidate.strip() in (etag, "*", "W/" + etag) for candidate in header.split(","))
