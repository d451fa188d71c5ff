"""What each credential gets on every route and method of ``create_app`` (docs/security.md),
against a real PostgreSQL: a read token reads its own run on every read route and nothing else.

The routes are enumerated from the app itself: a route (or method) added
without a recipe here, or without a decision in pgbridge.http.access, fails
:func:`test_every_route_and_method_has_a_recipe_and_a_decision`. What a read
token should get is written down here (:data:`GRANTED`), independently of
the code's table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route

from pgbridge import PostgresStreamBridge
from pgbridge.ai_sdk.runs import chat_run_id
from pgbridge.durable_streams.http import STREAM_METHODS, DurableStreamSettings
from pgbridge.http.access import READ_TOKEN_ACCESS, ReadTarget, read_target, run_read_by_endpoint
from pgbridge.http.app import create_app, sse_routes
from pgbridge.http.auth import BearerTokenAuth
from pgbridge.tokens import TokenKeyring, issue_read_token
from tests.support.postgres_server import DatabaseFactory

GLOBAL = "global-s3cret-token"
KEYS = "k2:" + "2" * 40 + "\nk1:" + "1" * 40
RING = TokenKeyring.parse(KEYS)
STRANGER = TokenKeyring.parse("k2:" + "9" * 40)  # the same key id, a secret the server does not have

STREAM = "/runs/{run_id:path}/stream"
VIEW = "/runs/{run_id:path}/view"
STATUS = "/runs/{run_id:path}"
THREAD_STREAM = "/threads/{thread_id:str}/runs/{run_id:path}/stream"
THREAD_RUN = "/threads/{thread_id:str}/runs/{run_id:path}"
DURABLE = "/v1/stream/{path:path}"
#: The AI SDK resume route (at its default path): its run is the chat's, not a path parameter.
CHAT = "/chat/{chat_id:path}/stream"

#: Where a read token of the run the path names is let in: GET and HEAD of these, nothing else.
GRANTED = {
    (t, m) for t in (STREAM, VIEW, STATUS, THREAD_STREAM, THREAD_RUN, DURABLE, CHAT) for m in ("GET", "HEAD")
}

MISSING = {"error": "missing or wrong bearer token"}
INVALID = {"error": "invalid token"}
FORBIDDEN = {"error": "a read token only reads its own run"}


@dataclass(frozen=True)
class Recipe:
    """One request to one route and method; ``{run}`` in *path* is the run id, %-encoded."""

    template: str
    method: str
    path: str
    ok: int  # what the global token gets
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: What the run is before the request: published (with its end), a PUT stream, or absent.
    target: str = "published"
    variant: str = ""
    #: The run a read token must be for, from the id in the path (a chat's run for a chat id).
    token_run: Callable[[str], str] = lambda run_id: run_id

    @property
    def id(self) -> str:
        return f"{self.method} {self.template}{' ' + self.variant if self.variant else ''}"


def _pair(template: str, path: str, ok: int = 200, **kwargs: object) -> list[Recipe]:
    return [Recipe(template, method, path, ok, **kwargs) for method in ("GET", "HEAD")]  # type: ignore[arg-type]


JSON = {"Content-Type": "application/json"}
RECIPES: list[Recipe] = [
    *_pair("/", "/"),
    *_pair("/health", "/health"),
    *_pair("/runs", "/runs"),
    *_pair("/ui/runs", "/ui/runs"),
    *_pair("/metrics", "/metrics"),
    *_pair(STREAM, "/runs/{run}/stream"),
    *_pair(VIEW, "/runs/{run}/view"),
    *_pair(STATUS, "/runs/{run}"),
    *_pair(THREAD_STREAM, "/threads/thread-1/runs/{run}/stream"),
    *_pair(THREAD_RUN, "/threads/thread-1/runs/{run}"),
    Recipe(DURABLE, "GET", "/v1/stream/{run}", 200, query={"offset": "-1"}, variant="catch-up"),
    Recipe(
        DURABLE, "GET", "/v1/stream/{run}", 200, {"offset": "-1", "live": "long-poll"}, variant="long-poll"
    ),
    Recipe(
        DURABLE, "GET", "/v1/stream/{run}", 204, {"offset": "now", "live": "long-poll"}, variant="at tail"
    ),
    Recipe(DURABLE, "GET", "/v1/stream/{run}", 200, {"offset": "-1", "live": "sse"}, variant="sse"),
    Recipe(DURABLE, "HEAD", "/v1/stream/{run}", 200),
    Recipe(DURABLE, "PUT", "/v1/stream/{run}", 201, headers=JSON, target="absent"),
    Recipe(DURABLE, "POST", "/v1/stream/{run}", 204, headers=JSON, body=b'[{"a":1}]', target="stream"),
    Recipe(DURABLE, "DELETE", "/v1/stream/{run}", 204, target="stream"),
    Recipe(DURABLE, "OPTIONS", "/v1/stream/{run}", 204),
    # A chat with no response in progress: 204 to whoever may read the chat's run.
    *_pair(CHAT, "/chat/{run}/stream", 204, target="absent", token_run=chat_run_id),
]


@dataclass(frozen=True)
class Credential:
    """How a request presents a credential, given the run it targets."""

    name: str
    present: Callable[[str], tuple[dict[str, str], dict[str, str]]]  # run id -> (headers, query)
    full: bool = False  # the global token: everything
    own: bool = False  # a read token of the run the request names
    read_claim: bool = True  # presented as a read token (else: no credential, or a wrong global one)


def _read(
    token: Callable[[str], str], *, header: bool = False
) -> Callable[[str], tuple[dict[str, str], dict[str, str]]]:
    def present(run_id: str) -> tuple[dict[str, str], dict[str, str]]:
        value = token(run_id)
        return ({"Authorization": f"Bearer {value}"}, {}) if header else ({}, {"token": value})

    return present


def _tampered(run_id: str) -> str:
    token = issue_read_token(RING, run_id, 600)
    return token[:-1] + ("A" if token[-1] != "A" else "B")


CREDENTIALS = [
    Credential("no credential", lambda run: ({}, {}), read_claim=False),
    Credential("a wrong bearer token", lambda run: ({"Authorization": "Bearer nope"}, {}), read_claim=False),
    Credential("the global token", lambda run: ({"Authorization": f"Bearer {GLOBAL}"}, {}), full=True),
    Credential("the global token in ?access_token=", lambda run: ({}, {"access_token": GLOBAL}), full=True),
    Credential("the global token in ?token=", lambda run: ({}, {"token": GLOBAL})),
    Credential(
        "its run's read token in ?token=", _read(lambda run: issue_read_token(RING, run, 600)), own=True
    ),
    Credential(
        "its run's read token as a bearer token",
        _read(lambda run: issue_read_token(RING, run, 600), header=True),
        own=True,
    ),
    Credential("another run's read token", _read(lambda run: issue_read_token(RING, run + "-other", 600))),
    Credential(
        "an expired read token", _read(lambda run: issue_read_token(RING, run, 600, now=time.time() - 601))
    ),
    Credential("a tampered read token", _read(_tampered)),
    Credential("a read token of an unknown key", _read(lambda run: issue_read_token(STRANGER, run, 600))),
    Credential(
        "a read token of a retired key",
        _read(lambda run: issue_read_token(TokenKeyring.parse("k0:" + "0" * 40), run, 600)),
    ),
]


def expected(recipe: Recipe, credential: Credential) -> tuple[int, dict[str, str] | None]:
    """The status (and, for a refusal, the body) *credential* gets for *recipe*."""
    if credential.full:
        return recipe.ok, None
    if not credential.read_claim:
        return 401, MISSING
    if (recipe.template, recipe.method) not in GRANTED:
        return 403, FORBIDDEN
    if credential.own:
        return recipe.ok, None
    return 401, INVALID


# -- the app ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def module_dsn(databases: DatabaseFactory) -> AsyncIterator[str]:
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest_asyncio.fixture(scope="module")
async def served(module_dsn: str) -> AsyncIterator[tuple[PostgresStreamBridge, Starlette]]:
    bridge = PostgresStreamBridge(module_dsn, token_secrets=KEYS, metrics=CollectorRegistry())
    async with bridge:
        app = create_app(
            bridge,
            token=GLOBAL,
            manage_bridge=False,
            expose_metrics=True,
            stream_settings=DurableStreamSettings(
                long_poll_timeout=1, sse_max_seconds=1, allow_run_deletion=True
            ),
        )
        yield bridge, app


def http(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pgbridge", timeout=30)


def new_run() -> str:
    """A run id with a "/" and a space, which travel %-encoded."""
    return f"own/{uuid.uuid4().hex[:8]} x"


async def prepare(
    bridge: PostgresStreamBridge, client: httpx.AsyncClient, recipe: Recipe, run_id: str
) -> None:
    if recipe.target == "published":
        await bridge.publish(run_id, "token", {"n": 1})
        await bridge.publish_end(run_id)
    elif recipe.target == "stream":
        created = await client.put(
            f"/v1/stream/{quote(run_id, safe='')}", headers={**JSON, "Authorization": f"Bearer {GLOBAL}"}
        )
        assert created.status_code == 201


async def tail_of(client: httpx.AsyncClient, run_id: str) -> tuple[int, str | None]:
    """What the global token sees of the run's stream: the status of a HEAD and the tail."""
    head = await client.head(
        f"/v1/stream/{quote(run_id, safe='')}", headers={"Authorization": f"Bearer {GLOBAL}"}
    )
    return head.status_code, head.headers.get("stream-next-offset")


# -- every route has a decision --------------------------------------------------------------


def routes_and_methods(app: Starlette) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: decide what a read token gets there"
        found |= {(route.path, method) for method in (route.methods or STREAM_METHODS)}
    return found


async def test_every_route_and_method_has_a_recipe_and_a_decision(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    _, app = served
    served_pairs = routes_and_methods(app)
    assert served_pairs == {(r.template, r.method) for r in RECIPES}, (
        "a route or method without a recipe here"
    )
    decided = {(template, method) for template, methods in READ_TOKEN_ACCESS.items() for method in methods}
    self_deciding = {  # routes whose endpoint names the run it reads (run_read_by)
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route) and run_read_by_endpoint(route) is not None
        for method in ("GET", "HEAD")
    }
    assert served_pairs == decided | self_deciding, (
        "a route or method without a decision in pgbridge.http.access"
    )
    granted = {(t, m) for t, methods in READ_TOKEN_ACCESS.items() for m, run in methods.items() if run}
    granted |= self_deciding
    assert granted == GRANTED


# -- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize("credential", CREDENTIALS, ids=[c.name for c in CREDENTIALS])
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.id for r in RECIPES])
async def test_what_a_credential_gets_on_a_route(
    served: tuple[PostgresStreamBridge, Starlette], recipe: Recipe, credential: Credential
) -> None:
    bridge, app = served
    run_id = new_run()
    status, body = expected(recipe, credential)
    headers, query = credential.present(recipe.token_run(run_id))
    async with http(app) as client:
        await prepare(bridge, client, recipe, run_id)
        before = await tail_of(client, run_id)
        response = await client.request(
            recipe.method,
            recipe.path.format(run=quote(run_id, safe="")),
            params={**recipe.query, **query},
            headers={**recipe.headers, **headers},
            content=recipe.body or None,
        )
        after = await tail_of(client, run_id)
    assert response.status_code == status, response.text
    if body is not None:
        if recipe.method != "HEAD":
            assert response.json() == body
        challenge = {
            "invalid token": ', error="invalid_token"',
            FORBIDDEN["error"]: ', error="insufficient_scope"',
        }
        expected_challenge = 'Bearer realm="pgbridge"' + challenge.get(body["error"], "")
        assert response.headers["www-authenticate"] == expected_challenge
        assert after == before, "a refused request changed the stream"


# -- the run a token is checked against is the run the route serves ---------------------------


async def get(app: Starlette, path: str, token: str) -> httpx.Response:
    async with http(app) as client:
        return await client.get(path, params={"token": token, "wait": "0"})


async def test_a_run_id_that_looks_like_a_route_suffix_is_checked_as_the_router_reads_it(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    """``/runs/x%2Fstream`` is the stream of run ``x`` to the router, so it takes x's token."""
    bridge, app = served
    base = f"run-{uuid.uuid4().hex[:8]}"
    for run_id in (base, f"{base}/stream"):
        await bridge.publish(run_id, "token", {"run": run_id})
        await bridge.publish_end(run_id)
    path = f"/runs/{base}%2Fstream"
    assert (await get(app, path, issue_read_token(RING, f"{base}/stream", 600))).status_code == 401
    served_to_x = await get(app, path, issue_read_token(RING, base, 600))
    assert served_to_x.status_code == 200 and f'"run":"{base}"' in served_to_x.text


async def test_an_encoded_slash_and_a_double_encoded_one_name_different_runs(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    bridge, app = served
    run_id = f"a/{uuid.uuid4().hex[:8]}"
    await bridge.publish(run_id, "token", 1)
    token = issue_read_token(RING, run_id, 600)
    encoded = quote(run_id, safe="")
    assert (await get(app, f"/runs/{encoded}", token)).status_code == 200
    assert (await get(app, f"/runs/{encoded.replace('%2F', '%252F')}", token)).status_code == 401


def test_dot_segments_are_part_of_the_run_id_as_the_router_reads_them(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    """HTTP clients remove ``..`` before sending; a raw one reaches the router as part of the id."""
    _, app = served
    scope = {"type": "http", "method": "GET", "path": "/runs/own/../other/stream", "root_path": ""}
    assert read_target(scope, app.routes) == ReadTarget("own/../other")
    assert read_target({**scope, "path": "/v1/stream/own/../other"}, app.routes) == ReadTarget("own/../other")


async def test_a_durable_stream_path_is_the_run_id_with_or_without_encoded_slashes(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    bridge, app = served
    run_id = f"ds/{uuid.uuid4().hex[:8]}"
    await bridge.publish(run_id, "token", 1)
    token = issue_read_token(RING, run_id, 600)
    async with http(app) as client:
        for path in (f"/v1/stream/{run_id}", f"/v1/stream/{quote(run_id, safe='')}"):
            response = await client.get(path, params={"offset": "-1", "token": token})
            assert response.status_code == 200
            assert [(m["event"], m["data"]) for m in response.json()] == [("token", 1)]
        deeper = await client.get(f"/v1/stream/{run_id}/x", params={"offset": "-1", "token": token})
        prefix = await client.get(f"/v1/stream/{run_id[:-1]}", params={"offset": "-1", "token": token})
    assert (deeper.status_code, prefix.status_code) == (401, 401)


async def test_the_thread_id_does_not_matter_to_a_read_token(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    """pgbridge keys runs by run id alone (docs/http.md), so the thread id grants nothing either."""
    bridge, app = served
    run_id = new_run()
    await bridge.publish(run_id, "token", 1)
    token = issue_read_token(RING, run_id, 600)
    for thread in ("t1", "someone-else's-thread"):
        assert (await get(app, f"/threads/{thread}/runs/{quote(run_id, safe='')}", token)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nowhere"),  # 404 for the global token
        ("GET", "/health/"),  # a redirect
        ("POST", "/runs/{run}/stream"),  # 405
        ("DELETE", "/runs/{run}"),  # 405
    ],
)
async def test_a_read_token_gets_403_where_no_route_serves_the_request(
    served: tuple[PostgresStreamBridge, Starlette], method: str, path: str
) -> None:
    _, app = served
    run_id = new_run()
    async with http(app) as client:
        response = await client.request(
            method,
            path.format(run=quote(run_id, safe="")),
            params={"token": issue_read_token(RING, run_id, 600)},
        )
    assert response.status_code == 403 and response.json() == FORBIDDEN


async def test_two_different_read_tokens_in_one_request_are_refused(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    bridge, app = served
    run_id = new_run()
    await bridge.publish(run_id, "token", 1)
    own, other = issue_read_token(RING, run_id, 600), issue_read_token(RING, run_id + "x", 600)
    async with http(app) as client:
        path = f"/runs/{quote(run_id, safe='')}"
        both = await client.get(path, params={"token": own}, headers={"Authorization": f"Bearer {other}"})
        twice = await client.get(path, params=[("token", own), ("token", own)])
    assert both.status_code == 401 and both.json() == INVALID
    assert twice.status_code == 200  # the same token twice is one token


# -- configurations ----------------------------------------------------------------------------


async def test_with_keys_and_no_global_token_read_tokens_are_the_only_way_in(module_dsn: str) -> None:
    async with PostgresStreamBridge(module_dsn, token_secrets=KEYS) as bridge:
        run_id = new_run()
        await bridge.publish(run_id, "token", 1)
        app = create_app(bridge, manage_bridge=False)
        token = bridge.read_token(run_id, ttl=60)
        async with http(app) as client:
            path = f"/runs/{quote(run_id, safe='')}"
            assert (await client.get(path, params={"token": token})).status_code == 200
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers={"Authorization": f"Bearer {GLOBAL}"})).status_code == 401
            assert (await client.get("/runs", params={"token": token})).status_code == 403
            assert (await client.put("/v1/stream/new", params={"token": token})).status_code == 403


async def test_without_keys_a_read_token_is_no_credential(module_dsn: str) -> None:
    async with PostgresStreamBridge(module_dsn) as bridge:
        run_id = new_run()
        await bridge.publish(run_id, "token", 1)
        app = create_app(bridge, token=GLOBAL, manage_bridge=False)
        async with http(app) as client:
            response = await client.get(
                f"/runs/{quote(run_id, safe='')}", params={"token": issue_read_token(RING, run_id, 60)}
            )
    assert response.status_code == 401 and response.json() == MISSING


async def test_a_token_of_either_active_key_reads_and_a_retired_key_s_does_not(module_dsn: str) -> None:
    """Rotation: the server holds [k2, k1]; tokens of both read; once k1 is removed, k1's stop."""
    old_ring = TokenKeyring.parse("k1:" + "1" * 40)
    run_id = new_run()
    old = issue_read_token(old_ring, run_id, 600)
    statuses = []
    for keys in (KEYS, "k2:" + "2" * 40):
        async with PostgresStreamBridge(module_dsn, token_secrets=keys) as bridge:
            await bridge.publish(run_id, "token", 1)
            new = bridge.read_token(run_id, ttl=600)
            assert new.startswith("pgb1.k2.")
            async with http(create_app(bridge, manage_bridge=False)) as client:
                path = f"/runs/{quote(run_id, safe='')}"
                statuses.append(
                    [(await client.get(path, params={"token": token})).status_code for token in (old, new)]
                )
    assert statuses == [[200, 200], [401, 200]]


async def test_read_tokens_work_on_the_routes_mounted_under_a_prefix_in_an_app_of_ones_own(
    served: tuple[PostgresStreamBridge, Starlette],
) -> None:
    """docs/http.md, mounting: the same middleware on a mounted sub-app checks the same runs."""
    bridge, _ = served
    events = Starlette(routes=sse_routes(bridge), middleware=[Middleware(BearerTokenAuth, keyring=RING)])
    app = Starlette(routes=[Mount("/agent", app=events)])
    run_id = new_run()
    await bridge.publish(run_id, "token", 1)
    await bridge.publish_end(run_id)
    token = issue_read_token(RING, run_id, 600)
    path = f"/agent/runs/{quote(run_id, safe='')}"
    async with http(app) as client:
        statuses = [
            (await client.get(path + "/stream", params={"token": token})).status_code,
            (await client.get(path, params={"token": token})).status_code,
            (await client.get(path + "x", params={"token": token})).status_code,
            (await client.get("/agent/runs", params={"token": token})).status_code,
            (await client.get(path)).status_code,
        ]
    assert statuses == [200, 200, 401, 403, 401]
