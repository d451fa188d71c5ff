"""A fake agent: streams a run's reply token by token through any StreamBridge.

It knows only the StreamBridge contract (``publish``, ``publish_terminal``,
``cleanup``), as agent code in an existing runtime does; which bridge it gets
is the composition root's business (see ``main.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from pgbridge import StreamBridge, StreamBridgeError, StreamStatus, StreamTerminatedError

logger = logging.getLogger(__name__)

_ANSWER = (
    "Durable logs keep every event of a run, so a reader that drops its connection "
    "resumes from the last event it saw, on any process, even after a restart."
)


def fake_reply(prompt: str, tokens: int) -> list[str]:
    """*tokens* words of a canned answer to *prompt*, each with its trailing space."""
    opening = [f"{word} " for word in f"You asked: {prompt}".split()]
    body = (f"{word} " for word in itertools.cycle(_ANSWER.split()))
    return list(itertools.islice(itertools.chain(opening, body), tokens))


async def run_agent(bridge: StreamBridge, run_id: str, prompt: str, *, tokens: int, delay: float) -> None:
    """Publish the reply's tokens with a small pause between them, then the terminal event.

    A run cancelled meanwhile (``bridge.cancel``) refuses the next publish with
    StreamTerminatedError: the agent stops there. If the agent's task is
    cancelled (the app shuts down) or fails, the run ends with an ``error``
    event, so readers learn it will not continue.
    """
    try:
        for index, text in enumerate(fake_reply(prompt, tokens)):
            await bridge.publish(run_id, "token", {"index": index, "text": text})
            await asyncio.sleep(delay)
        await bridge.publish_terminal(run_id, StreamStatus.ENDED, {"tokens": tokens})
    except StreamTerminatedError:
        logger.info("run %s was cancelled; the agent stops", run_id, extra={"run_id": run_id})
    except asyncio.CancelledError:
        await _end_with_error(bridge, run_id, "the app shut down while the run was streaming")
        raise
    except Exception as exc:
        logger.exception("the agent failed on run %s", run_id, extra={"run_id": run_id})
        await _end_with_error(bridge, run_id, f"the agent failed: {exc}")
    finally:
        # With the in-memory bridge this freed the run's buffer. In pgbridge it
        # only drops this process's cache for the run: the history stays (and
        # retention deletes it later), and live readers are not cut off.
        with contextlib.suppress(StreamBridgeError):
            await bridge.cleanup(run_id)


async def _end_with_error(bridge: StreamBridge, run_id: str, message: str) -> None:
    with contextlib.suppress(StreamBridgeError):
        await bridge.publish_terminal(run_id, StreamStatus.ERRORED, {"error": message})
