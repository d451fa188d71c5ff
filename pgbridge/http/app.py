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
* ``GET /metrics`` (``create_app(..., expose_metrics=True)``): the bridge's
  Prometheus metrics (see :mod:`pgbridge.metrics`).

Every stream ends after the run's terminal event. A client that resumes
after the terminal event gets ``204 No Content``, which tells a browser's
``EventSource`` to stop reconnecting. A client that disconnects releases its
subscription at once; the run goes on. This module holds no SQL: it uses the
bridge's public methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pgbridge.bridge import PostgresStreamBridge
from pgbridge.contract import CANCELLED_SENTINEL, END_SENTINEL, GAP_EVENT, HEARTBEAT_SENTINEL
from pgbridge.durable_streams.http import DurableStreamSettings, durable_stream_routes
from pgbridge.exceptions import ConfigurationError, InvalidEventError
from pgbridge.http.auth import BearerTokenAuth
from pgbridge.http.common import BridgeGetter, bridge_getter, error_response
from pgbridge.http.frames import event_frame, gap_frame, heartbeat_frame, retry_line
from pgbridge.http.shutdown import EndReadsOnShutdown
from pgbridge.metrics import exposition, registry_for
from pgbridge.store.events import RunInfo

#: LangGraph's run statuses for pgbridge's (an open run is "running" to it).
LANGGRAPH_STATUS = {
    "active": "running",
    "awaiting_input": "running",
    "ended": "success",
    "cancelled": "interrupted",
    "errored": "error",
}

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How streams are served."""

    #: Seconds of silence before a heartbeat comment is sent.
    heartbeat_interval: float = 15.0
    #: The ``retry:`` hint, in milliseconds: how soon a client reconnects.
    retry_ms: int = 2000


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
    ``Authorization: Bearer <token>`` (or ``?access_token=<token>``, for
    ``EventSource``, which cannot set headers). *cors_origins* lists the
    origins browsers may call it from (``["*"]`` for any). With
    *expose_metrics*, ``GET /metrics`` serves the registry the bridge reports
    into (behind the token too: give Prometheus the bearer token). Every run
    is also a Durable Stream under ``/v1/stream/`` (:mod:`pgbridge.durable_streams.http`).
    """
    routes = sse_routes(bridge, settings)
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
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET"],
                allow_headers=["Authorization", "Last-Event-ID", "Cache-Control"],
            )
        )
    if token:
        middleware.append(Middleware(BearerTokenAuth, token=token))
    middleware.append(Middleware(EndReadsOnShutdown))
    routes += durable_stream_routes(bridge, stream_settings)
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
        envelope = request.query_params.get("envelope", "").lower() in ("1", "true", "yes")
        try:
            if cursor is not None and await _is_after_terminal(bridge, run_id, cursor):
                return Response(status_code=204)
            events = bridge.subscribe(
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
            limit = int(request.query_params.get("limit", "100"))
            runs = await self._bridge().list_runs(status=status, limit=limit)
        except (InvalidEventError, ValueError) as exc:
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
        return HTMLResponse(_viewer_html(), headers={"Cache-Control": "no-cache"})


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
    retry = retry_line(retry_ms)
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for item in events:
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


def _viewer_html() -> str:
    return files("pgbridge.http").joinpath("viewer.html").read_text(encoding="utf-8")
