"""What a read token may do on each route: read the run a path parameter names, or nothing.

:data:`READ_TOKEN_ACCESS` decides, per route (its path template) and method,
whether a read token is let in, and which path parameter names the run it
must be for (or a route's endpoint says which run it reads: see
:func:`run_read_by_endpoint`). A route or method it does not list takes the global token only:
a new route grants a read token nothing until it is added here (and
tests/db/test_read_token_routes.py fails until it is). docs/security.md shows
the same table.

:func:`read_target` finds the route a request goes to the way Starlette's
router does (the first route that matches the path and method, tried in
order, on the same decoded path), so the run a token is checked against is
exactly the run the handler serves: ``%2F`` in a run id, a run id that
looks like a route's suffix, and the Durable Streams path (the run id as
:mod:`pgbridge.durable_streams.http` reads it) need no parsing of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

#: Nothing for a read token: the global token only.
GLOBAL_ONLY: None = None

_READ_METHODS = ("GET", "HEAD")


def _reads(parameter: str) -> dict[str, str | None]:
    return dict.fromkeys(_READ_METHODS, parameter)


def _global(*methods: str) -> dict[str, str | None]:
    return dict.fromkeys(methods, GLOBAL_ONLY)


#: Per route template, per method: the path parameter naming the run a read
#: token must be for, or GLOBAL_ONLY. Starlette answers HEAD on every GET route.
READ_TOKEN_ACCESS: Mapping[str, Mapping[str, str | None]] = {
    "/": _global("GET", "HEAD"),
    "/health": _global("GET", "HEAD"),
    "/runs": _global("GET", "HEAD"),
    "/ui/runs": _global("GET", "HEAD"),
    "/metrics": _global("GET", "HEAD"),
    "/runs/{run_id:path}/stream": _reads("run_id"),
    "/runs/{run_id:path}/view": _reads("run_id"),
    "/runs/{run_id:path}": _reads("run_id"),
    "/threads/{thread_id:str}/runs/{run_id:path}/stream": _reads("run_id"),
    "/threads/{thread_id:str}/runs/{run_id:path}": _reads("run_id"),
    "/v1/stream/{path:path}": {**_reads("path"), **_global("PUT", "POST", "DELETE", "OPTIONS")},
}


def run_read_by_endpoint(route: Route) -> Callable[[Scope], str | None] | None:
    """The endpoint's own ``run_read_by(scope)``, when it has one: a route whose run is no path
    parameter says itself which run a request reads (the AI SDK resume route: its path is
    configurable, its run is the chat's). A read token of that run may GET and HEAD it."""
    reader = getattr(getattr(route.endpoint, "__self__", None), "run_read_by", None)
    return reader if callable(reader) else None


@dataclass(frozen=True, slots=True)
class ReadTarget:
    """The run a request reads, when a read token may make it: the token must be for *run_id*."""

    run_id: str


def read_target(scope: Scope, routes: Sequence[BaseRoute]) -> ReadTarget | None:
    """The run a read token must be for to make this request, or None when no read token may.

    None when no route matches the path and method in full (a 404, 405 or
    redirect), when the route is not a plain :class:`Route`, or when the
    table does not let a read token use it.
    """
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is not Match.FULL:
            continue  # the router, too, serves the first full match
        if not isinstance(route, Route):
            return None
        reader = run_read_by_endpoint(route)
        if reader is not None:
            run = reader(scope) if scope["method"] in _READ_METHODS else None
            return ReadTarget(run) if run is not None else None
        parameter = READ_TOKEN_ACCESS.get(route.path, {}).get(scope["method"], GLOBAL_ONLY)
        if parameter is None:
            return None
        run_id = child_scope.get("path_params", {}).get(parameter)
        return ReadTarget(run_id) if isinstance(run_id, str) else None
    return None
