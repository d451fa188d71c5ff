"""A chat app on the AI SDK's protocol whose answers survive a page reload, on PostgreSQL.

* ``GET /``: the page (``static/index.html``): a minimal chat on ``fetch``, no
  bundler and no CDN. On load it asks for the answer in progress, as
  ``useChat({ resume: true })`` does.
* ``POST /api/chat`` ``{"id": chat id, "messages": [...]}`` (what the AI SDK's
  ``DefaultChatTransport`` sends): starts the scripted model (``model.py``) as a
  task of its own and answers with the response's UI message stream, read back
  from PostgreSQL.
* ``GET /api/chat/{chat_id}/stream``: the AI SDK's resume request
  (:class:`pgbridge.ai_sdk.routes.ChatResume`): ``204``, or the answer in progress
  from its first chunk, live.

An AI SDK client pointed at it (``useChat`` with the default ``api: "/api/chat"``
and ``resume: true``) works unchanged. Run it: ``python -m examples.ai_chat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from examples.ai_chat.model import answer
from pgbridge import InvalidEventError, PostgresStreamBridge, migrate
from pgbridge.ai_sdk import UIMessageWriter
from pgbridge.ai_sdk.routes import ChatResume, response_stream
from pgbridge.embedded import default_data_dir, dsn_from_environment, start_embedded
from pgbridge.http.shutdown import EndReadsOnShutdown

logger = logging.getLogger(__name__)

#: Seconds between two tokens of the scripted model.
TOKEN_DELAY = float(os.environ.get("AI_CHAT_TOKEN_DELAY", "0.15"))


async def database_url() -> str:
    """``PGBRIDGE_DSN`` or ``DATABASE_URL``; with neither, pgbridge's embedded PostgreSQL."""
    dsn = dsn_from_environment()
    if dsn:
        return dsn
    logger.info("no PGBRIDGE_DSN or DATABASE_URL: using the embedded PostgreSQL in %s", default_data_dir())
    return await asyncio.to_thread(start_embedded)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    dsn = await database_url()
    await migrate(dsn)  # for the example's convenience; in production once per deploy
    bridge = PostgresStreamBridge(dsn)
    await bridge.start()
    app.state.bridge = bridge
    app.state.answers = set()
    try:
        yield
    finally:
        for task in app.state.answers:
            task.cancel()  # each ends its answer with "abort" while the bridge can still write it
        await asyncio.gather(*app.state.answers, return_exceptions=True)
        await bridge.close()


app = FastAPI(title="pgbridge AI SDK chat example", lifespan=lifespan)
app.add_middleware(EndReadsOnShutdown)
# The resume route, where the AI SDK asks by default: {api}/{chatId}/stream.
app.router.routes.extend(ChatResume(lambda: app.state.bridge, path="/api/chat/{chat_id}/stream").routes())


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return files("examples.ai_chat").joinpath("static/index.html").read_text(encoding="utf-8")


@app.post("/api/chat")
async def chat(request: Request) -> Response:
    chat_id, prompt = _chat_and_prompt(await request.json())
    bridge: PostgresStreamBridge = request.app.state.bridge
    try:
        response = UIMessageWriter(bridge, chat_id)
        # Stored, and the chat pointed here, before we answer: a reload right away resumes it.
        await response.start()
    except InvalidEventError as exc:
        raise HTTPException(400, str(exc)) from exc
    task = asyncio.create_task(answer(response, prompt, delay=TOKEN_DELAY), name=f"answer:{chat_id}")
    request.app.state.answers.add(task)
    task.add_done_callback(request.app.state.answers.discard)
    # This request's answer is a reader of the response's run, like any resume.
    return response_stream(bridge, response.run_id)


def _chat_and_prompt(body: Any) -> tuple[str, str]:
    """The chat id and the last user message's text, from DefaultChatTransport's body."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        raise HTTPException(400, 'the body must be {"id": chat id, "messages": [...]}')
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    parts = users[-1].get("parts", []) if users else []
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")
    return body["id"], text
