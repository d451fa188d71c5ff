"""One truth for forks and deleted streams: ``pgbridge runs``, ``events`` and ``stats`` say
what a read of the stream over HTTP (``pgbridge serve``, a real process) says.

A fork reads its source's messages up to the fork point, then its own: ``runs``
counts them and ``events`` lists them. A stream deleted while a fork reads it
answers 410: ``runs`` and ``stats`` call it deleted, and ``events`` refuses it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from tests.acceptance.test_cli_inspect import event_ids
from tests.support.cli import cli
from tests.support.http_server import ServerProcess

JSON = {"Content-Type": "application/json"}


@pytest_asyncio.fixture
async def client(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    server = ServerProcess(dsn)
    await server.start()
    try:
        async with server.client() as http:
            yield http
    finally:
        await server.stop()


async def stream_with_a_fork(client: httpx.AsyncClient) -> tuple[str, str]:
    """A JSON stream of two messages and a fork of it at its end, with no message of its own."""
    source = f"src-{uuid.uuid4().hex[:8]}"
    response = await client.put(f"/v1/stream/{source}", content=b'[{"n": 1}, {"n": 2}]', headers=JSON)
    assert response.status_code == 201, response.text
    fork = f"fork-{uuid.uuid4().hex[:8]}"
    response = await client.put(f"/v1/stream/{fork}", headers={"Stream-Forked-From": f"/v1/stream/{source}"})
    assert response.status_code == 201, response.text
    return source, fork


async def runs_json(dsn: str) -> dict[str, dict[str, object]]:
    code, out, err = await cli("runs", "--dsn", dsn, "--json")
    assert code == 0, err
    return {run["run_id"]: run for run in map(json.loads, out.splitlines())}


async def test_runs_and_events_of_a_fork_show_the_messages_a_read_of_it_returns(
    client: httpx.AsyncClient, dsn: str
) -> None:
    source, fork = await stream_with_a_fork(client)
    read = await client.get(f"/v1/stream/{fork}", params={"offset": "-1"})
    assert read.status_code == 200 and read.json() == [{"n": 1}, {"n": 2}]

    run = (await runs_json(dsn))[fork]
    assert (run["events_retained"], run["events_inherited"], run["events_deleted"]) == (2, 2, 0)
    assert run["fork_of"] == source and run["first_event_id"] is not None
    code, table, _ = await cli("runs", "--dsn", dsn)
    assert code == 0
    (line,) = [row for row in table.splitlines() if row.startswith(fork)]
    assert f"2 (2 from {source})" in line and "deleted" not in line

    code, out, err = await cli("events", fork, "--dsn", dsn, "--json")
    assert code == 0, err
    events = [json.loads(row) for row in out.splitlines()]
    assert [e["data"] for e in events] == [{"n": 1}, {"n": 2}]
    assert [e["run_id"] for e in events] == [fork, fork]
    assert event_ids((await cli("events", fork, "--dsn", dsn))[1]) == [e["event_id"] for e in events]
    code, out, _ = await cli("events", fork, "--dsn", dsn, "--from", events[0]["event_id"])
    assert code == 0 and event_ids(out) == [events[1]["event_id"]]


async def test_a_stream_deleted_while_a_fork_reads_it_is_deleted_on_every_surface(
    client: httpx.AsyncClient, dsn: str
) -> None:
    source, fork = await stream_with_a_fork(client)
    assert (await client.delete(f"/v1/stream/{source}")).status_code == 204
    assert (await client.get(f"/v1/stream/{source}", params={"offset": "-1"})).status_code == 410

    runs = await runs_json(dsn)
    assert runs[source]["deleted"] is True
    code, table, _ = await cli("runs", "--dsn", dsn)
    (line,) = [row for row in table.splitlines() if row.startswith(source)]
    assert "deleted" in line and "ended" not in line and "active" not in line

    code, out, err = await cli("events", source, "--dsn", dsn)
    assert code == 1 and out == ""
    assert "was deleted" in err and "410" in err

    code, out, _ = await cli("stats", "--dsn", dsn, "--json")
    by_status = {row["status"]: row["runs"] for row in json.loads(out)["by_status"]}
    assert by_status["deleted"] == 1 and by_status["active"] == 1  # the fork

    # the fork still reads the deleted source's messages, and says so
    assert (await runs_json(dsn))[fork]["events_retained"] == 2
