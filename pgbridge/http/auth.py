"""Auth for the HTTP surface: the global bearer token, and per-run read tokens (docs/security.md).

Two credentials, either or both configured:

* the **global token** (``pgbridge serve --token``): everything, on every
  route. It comes in ``Authorization: Bearer <token>``; ``?access_token=``
  is still accepted for it, but discouraged (a URL lands in logs, history
  and ``Referer`` headers).
* a **read token** (:mod:`pgbridge.tokens`, signed with the keys of
  ``--token-secret-file``): GET and HEAD of the one run it was issued for,
  on the routes :data:`pgbridge.http.access.READ_TOKEN_ACCESS` lets it use,
  until it expires. It comes in ``Authorization: Bearer <token>`` or as
  ``?token=<token>`` (``EventSource`` cannot set headers). A read response
  still open when the token expires is ended then.

A request with neither answers 401; a read token that is expired, tampered
with or for another run answers 401 ``invalid token`` (no more detail); a
read token on a route or method it may not use answers 403, whatever the
token. Comparisons are constant-time. CORS preflights carry no credentials
by design, so CORS sits outside this middleware.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Sequence
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgbridge.exceptions import ConfigurationError
from pgbridge.http.access import read_target
from pgbridge.http.shutdown import CUT_ON_SHUTDOWN
from pgbridge.tokens import TokenKeyring, check_read_token, looks_like_read_token

#: The query parameter that carries a read token.
READ_TOKEN_PARAMETER = "token"
#: The query parameter that carries the global token (discouraged; kept for existing links).
GLOBAL_TOKEN_PARAMETER = "access_token"

MISSING = "missing or wrong bearer token"
INVALID = "invalid token"
FORBIDDEN = "a read token only reads its own run"


class BearerTokenAuth:
    """ASGI middleware: the global *token* lets anything through; a read token signed by
    *keyring* lets through the reads of its run; anything else is refused."""

    def __init__(
        self, app: ASGIApp, *, token: str | None = None, keyring: TokenKeyring | None = None
    ) -> None:
        if token is not None and not token:
            raise ConfigurationError("an empty token would let anyone in")
        if token is None and keyring is None:
            raise ConfigurationError("give a token, a token keyring, or both")
        self.app = app
        self._token = token.encode() if token else None
        self._keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = _Presented.of(scope)
        if self._token is not None and presented.carries(self._token):
            await self.app(scope, receive, send)
            return
        claims = presented.read_tokens() if self._keyring is not None else set()
        if not claims or self._keyring is None:
            await _refuse(401, MISSING, None, scope, receive, send)
            return
        target = read_target(scope, _routes_of(scope))
        if target is None:
            await _refuse(403, FORBIDDEN, "insufficient_scope", scope, receive, send)
            return
        expires_at = (
            check_read_token(self._keyring, claims.pop(), target.run_id) if len(claims) == 1 else None
        )
        if expires_at is None:
            await _refuse(401, INVALID, "invalid_token", scope, receive, send)
            return
        await _serve_until(self.app, expires_at, scope, receive, send)


class _Presented:
    """The credentials a request carries: bearer values and the two query parameters."""

    __slots__ = ("bearer", "query")

    def __init__(self, bearer: list[bytes], query: dict[str, list[str]]) -> None:
        self.bearer = bearer
        self.query = query

    @classmethod
    def of(cls, scope: Scope) -> _Presented:
        bearer = []
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    bearer.append(credentials.strip())
        return cls(bearer, parse_qs(scope.get("query_string", b"").decode("latin-1")))

    def carries(self, token: bytes) -> bool:
        """Whether the global *token* is among them (in the header or ``?access_token=``)."""
        given = self.bearer + [value.encode() for value in self.query.get(GLOBAL_TOKEN_PARAMETER, [])]
        return any(hmac.compare_digest(value, token) for value in given)

    def read_tokens(self) -> set[str]:
        """The read tokens: every ``?token=``, and each bearer value written as one."""
        found = set(self.query.get(READ_TOKEN_PARAMETER, []))
        for value in self.bearer:
            text = value.decode("latin-1")
            if looks_like_read_token(text):
                found.add(text)
        return found


def _routes_of(scope: Scope) -> Sequence[BaseRoute]:
    """The routes of the Starlette app this request is in (none: no read token gets in)."""
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", None)
    return routes if isinstance(routes, list) else []


async def _refuse(
    status: int, message: str, error: str | None, scope: Scope, receive: Receive, send: Send
) -> None:
    challenge = 'Bearer realm="pgbridge"' + (f', error="{error}"' if error else "")
    response = JSONResponse(
        {"error": message},
        status_code=status,
        headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"},
    )
    await response(scope, receive, send)


async def _serve_until(app: ASGIApp, expires_at: int, scope: Scope, receive: Receive, send: Send) -> None:
    """Run *app* for a read token that expires at *expires_at* (Unix seconds): a response still
    going then is ended (as a finished response: an ``EventSource`` reconnects, and is refused),
    or cut mid-body when it marked itself :data:`~pgbridge.http.shutdown.CUT_ON_SHUTDOWN` (the
    AI SDK resume stream, whose client would take an ended one for a finished message); one
    not started yet is answered 401."""
    started = finished = False

    async def tracked(message: Message) -> None:
        nonlocal started, finished
        if message["type"] == "http.response.start":
            started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            finished = True
        await send(message)

    deadline = asyncio.timeout(expires_at - time.time())
    try:
        async with deadline:
            await app(scope, receive, tracked)
    except TimeoutError:
        if not deadline.expired():
            raise  # the application's own timeout, not the token's
        if finished:
            return
        if started and scope.get(CUT_ON_SHUTDOWN):
            return  # cut, not ended: an AI SDK client takes an ended response for a whole one
        if started:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await _refuse(401, INVALID, "invalid_token", scope, receive, send)
