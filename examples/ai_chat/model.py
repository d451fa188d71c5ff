"""The example's "model": a scripted answer streamed token by token, as an LLM would.

It writes the AI SDK's UI message chunks through :class:`pgbridge.ai_sdk.UIMessageWriter`:
a reasoning part, then the answer's text, a delta at a time. Swap in a real model by
writing its deltas the same way (or tee the stream your model SDK already gives you:
:func:`pgbridge.ai_sdk.tee_response`).
"""

from __future__ import annotations

import asyncio
import re

from pgbridge.ai_sdk import UIMessageWriter

#: What the model always answers (the point is the stream, not the words).
ANSWER = (
    "Every chunk of this answer is a row in PostgreSQL before it reaches you. "
    "Reload the page while I am still writing: the page asks GET /api/chat/{id}/stream, "
    "and pgbridge replays this answer from its first chunk, then follows it live, "
    "whichever server process you reach. No Redis, nothing kept in one process's memory."
)
REASONING = "The user asked something; the script says to explain resumable streams."


def tokens(text: str) -> list[str]:
    """*text* in word-sized deltas (each keeps its trailing space), as a model emits them."""
    return re.findall(r"\S+\s*", text)


async def answer(response: UIMessageWriter, prompt: str, *, delay: float) -> None:
    """Stream the scripted answer into *response* (already started), then finish it.

    Runs as a task of its own, not inside the request: a reload (the browser
    leaving) must not stop the answer, or there would be nothing to resume.
    """
    async with response:  # finish on the way out; "abort" if the app stops meanwhile
        await response.write({"type": "start-step"})
        await response.write({"type": "reasoning-start", "id": "r1"})
        for token in tokens(REASONING):
            await response.write({"type": "reasoning-delta", "id": "r1", "delta": token})
            await asyncio.sleep(delay / 2)
        await response.write({"type": "reasoning-end", "id": "r1"})
        await response.write({"type": "text-start", "id": "t1"})
        for token in tokens(ANSWER):
            await response.write({"type": "text-delta", "id": "t1", "delta": token})
            await asyncio.sleep(delay)
        await response.write({"type": "text-end", "id": "t1"})
        await response.write({"type": "data-prompt", "data": {"prompt": prompt[:200]}, "transient": False})
        await response.write({"type": "finish-step"})
