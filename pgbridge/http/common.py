"""What both HTTP surfaces share: the SSE app (:mod:`pgbridge.http.app`) and the
Durable Streams routes (:mod:`pgbridge.durable_streams.http`).

Both accept a started bridge or a function returning one (an app that starts
its bridge in its lifespan has none when it builds its routes), and both
answer an error as ``{"error": message}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.responses import JSONResponse

from pgbridge.bridge import PostgresStreamBridge

#: A function returning the started bridge that serves a request.
BridgeGetter = Callable[[], PostgresStreamBridge]


def bridge_getter(bridge: PostgresStreamBridge | BridgeGetter) -> BridgeGetter:
    """*bridge* as a function: itself when it is one, else a function returning it."""
    return bridge if callable(bridge) else (lambda: bridge)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with *status* (and *headers*)."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)
