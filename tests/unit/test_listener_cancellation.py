"""A subscription cancelled while its listener LISTENs is cancelled (pgbridge.engine.listen).

Python 3.11's ``asyncio.wait_for`` loses a cancellation that lands in the
same turn of the event loop as the call it waits on completes (CPython
gh-86296): the caller then goes on as if never cancelled. A ``pgbridge tail
--wait`` interrupted by Ctrl-C just as its subscription's LISTEN completed
kept waiting for good (seen once in CI under load). The listener bounds its
LISTEN with ``asyncio.timeout`` instead, which never loses one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pgbridge.engine.listen import Listener


class _ListeningConnection:
    """What ``Listener._listen`` asks of a connection: its LISTEN completes when the test says."""

    def __init__(self) -> None:
        self.listened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def is_closed(self) -> bool:
        return False

    def add_listener(self, channel: str, callback: Callable[..., None]) -> asyncio.Future[None]:
        return self.listened


def _listener() -> Listener:
    return Listener(
        "postgresql://unused",
        "pgbridge",
        on_wake=lambda wake: None,
        on_reconnect=lambda: None,
        ping_interval=60.0,
        connect_timeout=10.0,
        ping_sql="SELECT 1",
    )


async def test_a_cancel_that_lands_as_the_listen_completes_is_not_lost() -> None:
    listener, conn = _listener(), _ListeningConnection()
    listener._conn = conn  # type: ignore[assignment]
    following = asyncio.create_task(listener._listen(conn))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # it now waits for the LISTEN
    conn.listened.set_result(None)  # the server answers ...
    following.cancel()  # ... in the same turn as the Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await following


async def test_a_listen_that_completes_marks_the_listener_listening() -> None:
    listener, conn = _listener(), _ListeningConnection()
    listener._conn = conn  # type: ignore[assignment]
    following = asyncio.create_task(listener._listen(conn))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    conn.listened.set_result(None)
    await following
    assert listener.listening
