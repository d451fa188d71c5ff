"""HTTP for a bridge: resumable SSE streams, run status, and a live run viewer.

Mount :func:`sse_routes` in an existing Starlette or FastAPI app, or serve
:func:`create_app` (``pgbridge serve``). Endpoints:

* ``GET /runs/{run_id}/stream``: the run's events as Server-Sent Events,
  resuming after the ``Last-Event-ID`` header (or ``?last_event_id=``);
  ``?envelope=1`` sends every event unnamed, as ``{"event", "data"}``, for
  ``EventSource`` clients that do not know the event names in advance.
* ``GET /threads/{thread_id}/runs/{run_id}/stream``: the same, at the path the
  LangGraph SDK's ``client.runs.join_stream`` reads (the thread id is not
  checked: pgbridge keys runs by run id alone).
* ``GET /threads/{thread_id}/runs/{run_id}``: the run in LangGraph's terms,
  which that SDK asks after a dropped stream to decide whether to reconnect.
* ``GET /runs`` (``?status=``, ``?limit=``) and ``GET /runs/{run_id}``: JSON.
* ``GET /runs/{run_id}/view``: an HTML page following the run live.
* ``GET /ui/runs``: an HTML page listing the runs, each linked to its viewer.
* ``GET /`` (:func:`create_app`): an index page: the version, links to the pages.
* ``GET /metrics`` (``create_app(..., expose_metrics=True)``): the bridge's
  Prometheus metrics (see :mod:`pgbridge.metrics`).
* ``GET /chat/{chat_id}/stream`` (:func:`create_app`; the path is
  ``StreamSettings.chat_stream_path``): the AI SDK's resume request, the chat's
  response in progress as a UI message stream, or 204 (:mod:`pgbridge.ai_sdk.routes`).

A stream waits for a run that does not exist yet (docs/behaviour.md §6);
with ``?wait=0`` it answers 404 instead. A bad query parameter is a 400
naming what it accepts. Every stream ends after the run's terminal event.
A client that resumes after the terminal event gets ``204 No Content``,
which tells a browser's ``EventSource`` to stop reconnecting. A client that
disconnects releases its subscription at once; the run goes on. This module
holds no SQL: it uses the bridge's public methods.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pgbridge.ai_sdk.routes import DEFAULT_PATH as CHAT_STREAM_PATH
from pgbridge.ai_sdk.routes import ChatResume
from pgbridge.bridge import MAX_LIST_LIMIT, PostgresStreamBridge
from pgbridge.contract import CANCELLED_SENTINEL, END_SENTINEL, GAP_EVENT, HEARTBEAT_SENTINEL
from pgbridge.durable_streams.http import (
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    STREAM_METHODS,
    DurableStreamSettings,
    durable_stream_app_parts,
)
from pgbridge.exceptions import ConfigurationError, InvalidEventError, RunHistoryChangedError
from pgbridge.http.auth import BearerTokenAuth
from pgbridge.http.common import BridgeGetter, bridge_getter, error_response
from pgbridge.http.frames import (
    event_frame,
    gap_frame,
    heartbeat_frame,
    history_changed_frame,
    retry_line,
    stored_event_frame,
)
from pgbridge.http.shutdown import EndReadsOnShutdown
from pgbridge.metrics import exposition, registry_for
from pgbridge.store.events import LoggedEvent, RunInfo

#: LangGraph's run statuses for pgbridge's (an open run is "running" to it).
LANGGRAPH_STATUS = {
    "active": "running",
    "awaiting_input": "running",
    "ended": "success",
    "cancelled": "interrupted",
    "errored": "error",
}

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: A page's URL may carry a token: no Referer takes it to another site.
_PAGE_HEADERS = {"Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}
#: How a yes/no query parameter (``?envelope=``, ``?wait=``) may be written.
_YES, _NO = ("1", "true", "yes"), ("0", "false", "no")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How streams are served."""

    #: Seconds of silence before a heartbeat comment is sent.
    heartbeat_interval: float = 15.0
    #: The ``retry:`` hint, in milliseconds: how soon a client reconnects.
    retry_ms: int = 2000
    #: Where :func:`create_app` answers the AI SDK's resume request (holds ``{chat_id}``).
    chat_stream_path: str = CHAT_STREAM_PATH


def sse_routes(
    bridge: PostgresStreamBridge | BridgeGetter, settings: StreamSettings | None = None
) -> list[BaseRoute]:
    """The routes, for ``Starlette(routes=...)`` or ``app.router.routes.extend(...)``.

    *bridge* is a started bridge, or a function returning one (for apps that
    start it in their lifespan).
    """
    handlers = _Handlers(bridge_getter(bridge), settings or StreamSettings())
    # Run ids may hold "/" (sent as %2F): the more specific routes come first.
    thread_run = "/threads/{thread_id:str}/runs/{run_id:path}"
    return [
        Route("/health", handlers.health, methods=["GET"]),
        Route("/runs", handlers.list_runs, methods=["GET"]),
        Route("/ui/runs", handlers.runs_page, methods=["GET"]),
        Route("/runs/{run_id:path}/stream", handlers.stream, methods=["GET"]),
        Route("/runs/{run_id:path}/view", handlers.view, methods=["GET"]),
        Route("/runs/{run_id:path}", handlers.run_status, methods=["GET"]),
        Route(thread_run + "/stream", handlers.langgraph_stream, methods=["GET"]),
        Route(thread_run, handlers.langgraph_run, methods=["GET"]),
    ]


def create_app(
    bridge: PostgresStreamBridge,
    *,
    token: str | None = None,
    cors_origins: Sequence[str] = (),
    settings: StreamSettings | None = None,
    manage_bridge: bool = True,
    expose_metrics: bool = False,
    stream_settings: DurableStreamSettings | None = None,
) -> Starlette:
    """An ASGI app serving *bridge*; starts and closes it with the app when *manage_bridge*.

    With *token*, every endpoint answers 401 unless the request carries
    ``Authorization: Bearer <token>`` (or, discouraged, ``?access_token=<token>``).
    When the bridge has token keys (its ``token_secrets`` option), a read
    token it issued (``bridge.read_token``) reads its own run, and nothing else,
    in that header or as ``?token=`` (:mod:`pgbridge.http.auth`, docs/security.md);
    with keys and no *token*, read tokens are the only way in. *cors_origins* lists the
    origins browsers may call it from (``["*"]`` for any), on every route
    alike; with none, no response carries CORS headers. With
    *expose_metrics*, ``GET /metrics`` serves the registry the bridge reports
    into (behind the token too: give Prometheus the bearer token). Every run
    is also a Durable Stream under ``/v1/stream/`` (:mod:`pgbridge.durable_streams.http`),
    and the AI SDK's resume request is answered at ``settings.chat_stream_path``.
    """
    settings = settings or StreamSettings()
    chats = ChatResume(bridge, path=settings.chat_stream_path, heartbeat_interval=settings.heartbeat_interval)
    routes: list[BaseRoute] = [
        Route("/", _index, methods=["GET"]),
        *sse_routes(bridge, settings),
        *chats.routes(),
    ]
    if expose_metrics:
        routes.append(metrics_route(bridge))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_bridge:
            async with bridge:
                yield
        else:
            yield

    middleware = []
    if cors_origins:  # outside the auth: a preflight carries no credentials
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=list(STREAM_METHODS),
                allow_headers=["Last-Event-ID", "Cache-Control", *CORS_ALLOW_HEADERS],
                expose_headers=list(CORS_EXPOSE_HEADERS),
            )
        )
    if token or bridge.token_keyring is not None:
        middleware.append(Middleware(BearerTokenAuth, token=token or None, keyring=bridge.token_keyring))
    middleware.append(Middleware(EndReadsOnShutdown))
    stream_routes, append_lane = durable_stream_app_parts(bridge, stream_settings)
    routes += stream_routes
    middleware.append(append_lane)  # innermost: after CORS, the token check, the shutdown guard
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def metrics_route(bridge: PostgresStreamBridge) -> Route:
    """``GET /metrics``: the Prometheus registry *bridge* reports into (it needs ``metrics=``)."""
    registry = registry_for(bridge.options.metrics)
    if registry is None:
        raise ConfigurationError("the bridge has no metrics to expose: create it with metrics=True")

    async def metrics(request: Request) -> Response:
        body, content_type = exposition(registry)
        return Response(body, headers={"Content-Type": content_type})

    return Route("/metrics", metrics, methods=["GET"])


class _Handlers:
    def __init__(self, get_bridge: BridgeGetter, settings: StreamSettings) -> None:
        self._bridge = get_bridge
        self._settings = settings

    # -- streams ----------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await self._stream(request, run_id, location=f"/runs/{_segment(run_id)}/stream")

    async def langgraph_stream(self, request: Request) -> Response:
        run_id, thread_id = request.path_params["run_id"], request.path_params["thread_id"]
        location = f"/threads/{_segment(thread_id)}/runs/{_segment(run_id)}/stream"
        return await self._stream(request, run_id, location=location)

    async def _stream(self, request: Request, run_id: str, *, location: str) -> Response:
        """Serve a run's stream. *location* is the stream's own path (relative to the
        mount point): the LangGraph SDK reconnects there, with ``Last-Event-ID``,
        after a dropped connection."""
        bridge = self._bridge()
        cursor = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or None
        try:
            envelope = _yes_or_no(request, "envelope", default=False)
            wait = _yes_or_no(request, "wait", default=True)
            if not wait and await bridge.run_info(run_id) is None:
                return error_response(404, f"no run {run_id!r} (and ?wait=0: not waiting for it)")
            if cursor is not None and await _is_after_terminal(bridge, run_id, cursor):
                return Response(status_code=204)
            # Events with their stored JSON text: frames send it as it is (never decoded here).
            events = bridge.subscribe_stored(
                run_id, last_event_id=cursor, heartbeat_interval=self._settings.heartbeat_interval
            )
        except InvalidEventError as exc:
            return error_response(400, str(exc))
        headers = {**_STREAM_HEADERS, "Location": request.scope.get("root_path", "") + location}
        return StreamingResponse(
            _frames(events, self._settings.retry_ms, envelope=envelope),
            media_type="text/event-stream",
            headers=headers,
        )

    # -- status -------------------------------------------------------------------

    async def run_status(self, request: Request) -> Response:
        found = await self._find_run(request.path_params["run_id"])
        return found if isinstance(found, Response) else JSONResponse(self._run_json(found))

    async def list_runs(self, request: Request) -> Response:
        status = request.query_params.get("status") or None
        try:
            limit = _whole_number(request, "limit", default=100, maximum=MAX_LIST_LIMIT)
            runs = await self._bridge().list_runs(status=status, limit=limit)
        except InvalidEventError as exc:
            return error_response(400, str(exc))
        return JSONResponse({"runs": [self._run_json(run) for run in runs]})

    async def langgraph_run(self, request: Request) -> Response:
        run_id, thread_id = request.path_params["run_id"], request.path_params["thread_id"]
        info = await self._find_run(run_id)
        if isinstance(info, Response):
            return info
        return JSONResponse(
            {
                "run_id": run_id,
                "thread_id": thread_id,
                "status": LANGGRAPH_STATUS[info.status],
                "created_at": info.created_at.isoformat(),
                "updated_at": info.updated_at.isoformat(),
                "pgbridge": self._run_json(info),
            }
        )

    async def _find_run(self, run_id: str) -> RunInfo | Response:
        """The run, or the error response: 400 for a bad run id, 404 for a missing run."""
        try:
            info = await self._bridge().run_info(run_id)
        except InvalidEventError as exc:
            return error_response(400, str(exc))
        return info if info is not None else error_response(404, f"no run {run_id!r}")

    async def health(self, request: Request) -> Response:
        await self._bridge().list_runs(limit=1)  # the database answers
        return JSONResponse({"ok": True})

    def _run_json(self, info: RunInfo) -> dict[str, Any]:
        return {**info.to_json(), "local_subscribers": self._bridge().local_subscribers(info.run_id)}

    # -- the viewer -----------------------------------------------------------------

    async def view(self, request: Request) -> Response:
        return HTMLResponse(_page("viewer.html"), headers=_PAGE_HEADERS)

    async def runs_page(self, request: Request) -> Response:
        return HTMLResponse(_page("runs.html"), headers=_PAGE_HEADERS)


async def _index(request: Request) -> Response:
    """``GET /``: what this server is and where its pages are."""
    root = request.scope.get("root_path", "")
    token = request.query_params.get("access_token")
    query = "?" + urlencode({"access_token": token}) if token else ""

    def link(path: str, text: str) -> str:
        return f'<a href="{html.escape(root + path + query)}">{html.escape(text)}</a>'

    body = _page("index.html")
    for name, value in {
        "version": html.escape(f"pgbridge {_version()}"),
        "runs_page": link("/ui/runs", "runs"),
        "runs_json": link("/runs", "/runs"),
        "health": link("/health", "/health"),
        "base": html.escape(root),
        "query": html.escape(query),
    }.items():
        body = body.replace("{{" + name + "}}", value)
    return HTMLResponse(body, headers=_PAGE_HEADERS)


def _version() -> str:
    try:
        return version("pgbridge")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree not installed
        return "(version unknown)"


def _yes_or_no(request: Request, name: str, *, default: bool) -> bool:
    """A yes/no query parameter; InvalidEventError (a 400) for anything else."""
    given = request.query_params.get(name)
    if not given:
        return default
    if given.lower() in _YES:
        return True
    if given.lower() in _NO:
        return False
    raise InvalidEventError(f"{name} must be one of {', '.join(_YES + _NO)}, not {given!r}")


def _whole_number(request: Request, name: str, *, default: int, maximum: int) -> int:
    """A whole-number query parameter from 1 to *maximum*; InvalidEventError (a 400) otherwise."""
    given = request.query_params.get(name)
    if given is None:
        return default
    if not given.isascii() or not given.isdigit() or not 1 <= int(given) <= maximum:
        raise InvalidEventError(f"{name} must be a whole number from 1 to {maximum}, not {given!r}")
    return int(given)


async def _is_after_terminal(bridge: PostgresStreamBridge, run_id: str, cursor: str) -> bool:
    """Whether *cursor* names the run's terminal event (or later): nothing more will come."""
    info = await bridge.run_info(run_id)
    if info is None or info.terminal_seq is None:
        return False
    resume = await bridge.resolve(run_id, cursor)
    return resume.status == "resumed" and resume.next_offset > info.terminal_seq


async def _frames(events: AsyncIterator[Any], retry_ms: int, *, envelope: bool) -> AsyncIterator[str]:
    """The SSE text of a subscription; closing it (client gone) closes the subscription.

    The ``retry:`` hint rides on the first frame that carries data: a block
    with nothing but ``retry:`` dispatches no event by the SSE rules, but some
    client libraries (httpx-sse) hand it out as an empty message anyway.
    """
    frames = _event_frames(events, retry_line(retry_ms), envelope=envelope)
    async with contextlib.aclosing(events), contextlib.aclosing(frames):  # type: ignore[type-var]
        try:
            async for frame in frames:
                yield frame
        except RunHistoryChangedError as exc:
            # Its continuation does not exist (docs/behaviour.md §6): say so, and end the response.
            yield history_changed_frame(str(exc))


async def _event_frames(events: AsyncIterator[Any], retry: str, *, envelope: bool) -> AsyncIterator[str]:
    """The frames of *events* (see :func:`_frames`), the ``retry:`` hint on the first with data."""
    async for item in events:
        if isinstance(item, LoggedEvent):  # the stored JSON text goes out as it is
            yield retry + stored_event_frame(item.id, item.name, item.data_text, envelope=envelope)
            retry = ""
            continue
        if item == HEARTBEAT_SENTINEL:
            yield heartbeat_frame()
            continue
        if item in (END_SENTINEL, CANCELLED_SENTINEL):
            return
        frame = gap_frame(item) if item.event == GAP_EVENT else event_frame(item, envelope=envelope)
        yield retry + frame
        retry = ""


def _segment(text: str) -> str:
    """*text* as one URL path segment ("/" in a run id becomes %2F)."""
    return quote(text, safe="")


def _page(name: str) -> str:
    return files("pgbridge.http").joinpath(name).read_text(encoding="utf-8")
