"""Optional bearer-token auth for the HTTP surface: 401 for any request without it.

The token comes in ``Authorization: Bearer <token>``, or as
``?access_token=<token>`` for clients that cannot set headers (a browser's
``EventSource``). Compared in constant time. CORS preflight requests carry no
credentials by design, so CORS sits outside this middleware.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pgbridge.exceptions import ConfigurationError


class BearerTokenAuth:
    """ASGI middleware: let through only requests that carry *token*."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        if not token:
            raise ConfigurationError("an empty token would let anyone in")
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._carries_token(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="pgbridge"'},
        )
        await response(scope, receive, send)

    def _carries_token(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token):
                    return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("access_token", [])
        return any(hmac.compare_digest(value.encode(), self._token) for value in given)
