"""The app: its composition root builds a PostgresStreamBridge; pgbridge's SSE routes serve the runs.

* ``POST /runs`` ``{"prompt": "...", "tokens": 40}``: start a run; a fake agent
  streams its tokens in the background. Answers ``202`` with the run id and
  where to read it.
* ``POST /runs/{run_id}/cancel``: cancel it (a replayable ``cancel`` event).
* ``GET /events/runs/{run_id}/stream``: the run as Server-Sent Events, resuming
  after ``Last-Event-ID``; the rest of :mod:`pgbridge.http.app` (status, the live
  viewer at ``/events/runs/{run_id}/view``) is mounted under ``/events`` too.

Uvicorn runs it: ``python -m examples.agent_app`` (see ``__main__.py``) or
``uvicorn examples.agent_app.main:app``, from the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request, status
from pydantic import BaseModel, Field
from starlette.applications import Starlette

from examples.agent_app.agent import run_agent
from pgbridge import InvalidEventError, PostgresStreamBridge, StreamBridge, migrate
from pgbridge.embedded import default_data_dir, dsn_from_environment, start_embedded
from pgbridge.http.app import StreamSettings, sse_routes
from pgbridge.http.shutdown import EndReadsOnShutdown

logger = logging.getLogger(__name__)

#: Seconds between two tokens of the fake agent.
TOKEN_DELAY = float(os.environ.get("AGENT_APP_TOKEN_DELAY", "0.05"))
#: Where pgbridge's HTTP routes are mounted.
EVENTS_PREFIX = "/events"


async def database_url() -> str:
    """``PGBRIDGE_DSN`` or ``DATABASE_URL``; with neither, pgbridge's embedded PostgreSQL."""
    dsn = dsn_from_environment()
    if dsn:
        return dsn
    logger.info("no PGBRIDGE_DSN or DATABASE_URL: using the embedded PostgreSQL in %s", default_data_dir())
    return await asyncio.to_thread(start_embedded)  # initdb on the first run takes a few seconds


class AgentRuns:
    """The agent tasks this process runs; each publishes one run's events."""

    def __init__(self, bridge: StreamBridge) -> None:
        self.bridge = bridge
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, run_id: str, prompt: str, tokens: int) -> None:
        task = asyncio.create_task(
            run_agent(self.bridge, run_id, prompt, tokens=tokens, delay=TOKEN_DELAY), name=f"agent:{run_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """Stop the agents; each ends its run with an ``error`` event while the bridge is still open."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The composition root: the one place that knows which StreamBridge the app uses."""
    dsn = await database_url()
    # For this example's convenience only. In production the schema is
    # migrated once per deploy, before the new version starts
    # (`pgbridge migrate --dsn ...` as a release step or init container),
    # and the app just connects: start() fails, naming that command, if it was not run.
    await migrate(dsn)
    # Instead of the in-memory bridge: same contract, durable and shared by
    # every process on this database. Options: see docs/integration.md.
    bridge = PostgresStreamBridge(dsn)
    await bridge.start()
    app.state.bridge = bridge
    app.state.agents = AgentRuns(bridge)
    try:
        yield
    finally:
        await app.state.agents.shutdown()  # while the bridge can still write their terminal events
        await bridge.close()  # open streams end (CANCELLED_SENTINEL); no run changes status


app = FastAPI(title="pgbridge agent app example", lifespan=lifespan)
# On shutdown (Ctrl-C), open streams end at once instead of holding the server
# for its grace period; clients reconnect and resume (python -m examples.agent_app).
app.add_middleware(EndReadsOnShutdown)


class StartRun(BaseModel):
    prompt: str = "What does a durable event log buy me?"
    tokens: Annotated[int, Field(ge=1, le=10_000)] = 40


class RunStarted(BaseModel):
    run_id: str
    stream_url: str


def _bridge(request: Request) -> PostgresStreamBridge:
    bridge: PostgresStreamBridge = request.app.state.bridge
    return bridge


@app.post("/runs", status_code=status.HTTP_202_ACCEPTED)
async def start_run(body: StartRun, request: Request) -> RunStarted:
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    # The first event is committed before we answer, so the run exists as
    # soon as the client knows its id (a reader may also connect earlier: it waits).
    await _bridge(request).publish(run_id, "metadata", {"run_id": run_id, "prompt": body.prompt})
    request.app.state.agents.start(run_id, body.prompt, body.tokens)
    return RunStarted(run_id=run_id, stream_url=f"{EVENTS_PREFIX}/runs/{run_id}/stream")


@app.post("/runs/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_run(run_id: str, request: Request) -> dict[str, str]:
    bridge = _bridge(request)
    try:
        if await bridge.run_info(run_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r}")
        await bridge.cancel(run_id)  # the first terminal wins: a run that already ended stays ended
    except InvalidEventError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return {"run_id": run_id}


# pgbridge's SSE, status and viewer routes, mounted as they are. They take a
# function returning the bridge, since the bridge is only built in the lifespan.
app.mount(
    EVENTS_PREFIX,
    Starlette(routes=sse_routes(lambda: app.state.bridge, StreamSettings(heartbeat_interval=10))),
)
