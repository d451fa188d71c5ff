"""Open streams end at once when the server shuts down.

uvicorn's graceful shutdown waits for every response to finish, and a stream
(SSE, a Durable Streams long-poll) does not finish by itself: after the grace
period uvicorn cancels it, and the cancelled application is logged as
``Exception in ASGI application``. Instead, :class:`EndReadsOnShutdown` (ASGI
middleware) keeps the GET and HEAD requests in flight; when the server shuts
down (:meth:`OpenReads.end_soon`, called by :class:`pgbridge.http.server.Server`)
the ones still running a moment later are stopped and their responses ended
properly: a stream that has started ends like any other response (an
``EventSource`` or SDK reconnects and resumes, on another process or this one
restarted), one that has not answers ``503`` with ``Retry-After``. Reads
only: a request that writes (an append, a close) gets uvicorn's grace period
to finish, and is never cut.

A response that marks its scope with :data:`CUT_ON_SHUTDOWN` is not ended
properly but cut (the connection closes mid-body): the AI SDK's client takes a
stream that ends properly for a finished message, and one that is cut for a
disconnect it can resume from (:mod:`pgbridge.ai_sdk.routes`).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Seconds a read in flight at shutdown may take to finish by itself before it is stopped.
READS_GRACE_SECONDS = 0.3

_READ_METHODS = frozenset({"GET", "HEAD"})
#: The scope key a response sets (to True) to be cut, not ended, when the server shuts down.
CUT_ON_SHUTDOWN = "pgbridge.cut_on_shutdown"
#: What uvicorn logs (as an error) for a response left incomplete: expected for a cut one.
INCOMPLETE_RESPONSE_MESSAGE = "ASGI callable returned without completing response."
_UNAVAILABLE_BODY = b'{"error":"the server is shutting down"}'


class OpenReads:
    """The read requests in flight in this process, and whether its server is shutting down."""

    def __init__(self) -> None:
        self.shutting_down = False
        self._running: set[asyncio.Task[object]] = set()
        self._stopped: set[asyncio.Task[object]] = set()

    def reset(self) -> None:
        """A server starts (again) in this process: reads are served."""
        self.shutting_down = False

    def end_soon(self, grace: float = READS_GRACE_SECONDS) -> None:
        """The server shuts down: new reads answer 503; those in flight in *grace* seconds stop."""
        self.shutting_down = True
        asyncio.get_running_loop().call_later(grace, self._stop_all)

    def track(self, task: asyncio.Task[object]) -> None:
        self._running.add(task)

    def stopped(self, task: asyncio.Task[object]) -> bool:
        """Whether *task* was cancelled by :meth:`end_soon` (and not by anyone else)."""
        return task in self._stopped

    def untrack(self, task: asyncio.Task[object]) -> None:
        self._running.discard(task)
        self._stopped.discard(task)

    def _stop_all(self) -> None:
        for task in list(self._running):
            self._stopped.add(task)
            task.cancel()


#: The one registry a process's server and its apps share.
OPEN_READS = OpenReads()


class _Progress:
    __slots__ = ("finished", "started")

    def __init__(self) -> None:
        self.started = False
        self.finished = False


class EndReadsOnShutdown:
    """ASGI middleware: GET and HEAD requests end promptly when the server shuts down."""

    def __init__(self, app: ASGIApp, *, reads: OpenReads = OPEN_READS) -> None:
        self.app = app
        self._reads = reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _READ_METHODS:
            await self.app(scope, receive, send)
            return
        if self._reads.shutting_down:
            await _unavailable(send)
            return
        task = asyncio.current_task()
        assert task is not None
        progress = _Progress()

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                progress.started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                progress.finished = True
            await send(message)

        reads = self._reads
        reads.track(task)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not reads.stopped(task):
                raise  # not ours: uvicorn's own cancellation, or the client's
            task.uncancel()
            if progress.finished:
                return
            if progress.started and scope.get(CUT_ON_SHUTDOWN):
                return  # left incomplete: the server closes the connection mid-body
            if progress.started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await _unavailable(send)
        else:
            if reads.stopped(task) and task.cancelling():
                task.uncancel()  # the application swallowed the cancellation
        finally:
            reads.untrack(task)


async def _unavailable(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_UNAVAILABLE_BODY)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _UNAVAILABLE_BODY, "more_body": False})
