"""The append lane of ``pgbridge serve``'s app (pgbridge.durable_streams.http.AppendLane): a
POST under the streams' prefix answered without Starlette's router, exactly as the route
answers it, and only inside the app's other middleware."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from starlette.applications import Starlette
from starlette.routing import Mount

from pgbridge import PostgresStreamBridge
from pgbridge.durable_streams.http import durable_stream_routes
from pgbridge.http.app import create_app
from tests.support.postgres_server import DatabaseFactory

JSON = {"Content-Type": "application/json"}


@pytest_asyncio.fixture(scope="module")
async def bridge(databases: DatabaseFactory) -> AsyncIterator[PostgresStreamBridge]:
    url = await databases.create()
    async with PostgresStreamBridge(url) as started:
        yield started
    await databases.drop(url)


def client_of(app: Starlette, base_url: str = "http://app") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def routes_only(bridge: PostgresStreamBridge) -> Starlette:
    """The protocol as a user mounts it: the route, no lane."""
    return Starlette(routes=durable_stream_routes(bridge))


def answer(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "stream-next-offset")}
    return response.status_code, headers, response.content


async def test_an_append_through_the_lane_is_answered_as_through_the_route(
    bridge: PostgresStreamBridge,
) -> None:
    lane, route = f"lane-{uuid.uuid4().hex[:8]}", f"route-{uuid.uuid4().hex[:8]}"
    app = create_app(bridge, manage_bridge=False)
    async with client_of(app) as served, client_of(routes_only(bridge)) as plain:
        for http, name in ((served, lane), (plain, route)):
            assert (await http.put(f"/v1/stream/{name}", headers=JSON)).status_code == 201
        for request in (
            {"content": b'{"a": 1}', "headers": JSON},  # appended
            {"content": b"", "headers": JSON},  # no body: 400
            {"content": b"[1", "headers": JSON},  # not JSON: 400
            {"content": b'"x"', "headers": {"Content-Type": "text/plain"}},  # another type: 409
            {"content": b"1", "headers": {**JSON, "Producer-Id": "p"}},  # half a producer: 400
        ):
            got = answer(await served.post(f"/v1/stream/{lane}", **request))  # type: ignore[arg-type]
            expected = answer(await plain.post(f"/v1/stream/{route}", **request))  # type: ignore[arg-type]
            assert got == expected
        assert (await served.post("/v1/stream/", content=b"1", headers=JSON)).status_code == 400  # no run id
        lane_body = (await served.get(f"/v1/stream/{lane}", params={"offset": "-1"})).content
        route_body = (await plain.get(f"/v1/stream/{route}", params={"offset": "-1"})).content
    assert lane_body == route_body == b'[{"a":1}]'


async def test_an_app_mounted_under_a_root_path_appends_to_the_run_its_path_names(
    bridge: PostgresStreamBridge,
) -> None:
    run_id = f"mounted/{uuid.uuid4().hex[:8]}"
    outer = Starlette(routes=[Mount("/bridge", app=create_app(bridge, manage_bridge=False))])
    async with client_of(outer) as http:
        assert (await http.put(f"/bridge/v1/stream/{run_id}", headers=JSON)).status_code == 201
        appended = await http.post(f"/bridge/v1/stream/{run_id}", content=b"[1, 2]", headers=JSON)
    assert appended.status_code == 204
    head = await bridge.streams.head(run_id)
    assert head is not None and head.last_seq == 2


async def test_the_token_check_runs_before_the_lane(bridge: PostgresStreamBridge) -> None:
    run_id = f"guarded-{uuid.uuid4().hex[:8]}"
    async with client_of(create_app(bridge, manage_bridge=False, token="s3cret")) as http:
        authorized = {**JSON, "Authorization": "Bearer s3cret"}
        assert (await http.put(f"/v1/stream/{run_id}", headers=authorized)).status_code == 201
        refused = await http.post(f"/v1/stream/{run_id}", content=b"1", headers=JSON)
    assert refused.status_code == 401
    head = await bridge.streams.head(run_id)
    assert head is not None and head.last_seq == 0
