"""The one LISTEN connection of a bridge: wake-ups from other processes.

NOTIFY is only a hint (at-most-once, lost while we reconnect), never the
data: every wake-up makes a reader re-read from its cursor, and a poll in the
bridge covers lost ones. This connection lives outside the pool (a pool
reset runs ``UNLISTEN *``), stays idle in autocommit, and is watched: a
termination callback and a periodic ping detect its death, then it
reconnects with backoff, LISTENs again and wakes every reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from pgbridge.database import Backoff, is_connection_error
from pgbridge.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

WakeCallback = Callable[[str, int | None], None]


#: Stands for "no seq" in a wake payload: the run changed in another way
#: (retention deleted events), so readers must re-read whatever they hold.
ANY_SEQ = "*"


def encode_wake(run_id: str, seq: int | None) -> str:
    """NOTIFY payload: the newest seq (or ``*``), a space, the run id (which may hold spaces)."""
    return f"{ANY_SEQ if seq is None else seq} {run_id}"


def decode_wake(payload: str) -> tuple[str, int | None]:
    """Inverse of :func:`encode_wake`."""
    head, _, run_id = payload.partition(" ")
    if head == ANY_SEQ:
        return run_id, None
    return run_id, int(head)


class Listener:
    """Keeps one LISTEN connection alive and turns notifications into wake-ups."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        on_wake: WakeCallback,
        on_reconnect: Callable[[], None],
        ping_interval: float,
        connect_timeout: float,
        backoff: Backoff | None = None,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_wake = on_wake
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff(initial=0.05, maximum=2.0)
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: How many times the connection was re-established (for metrics and tests).
        self.reconnects = 0

    async def start(self) -> None:
        """Connect and LISTEN; failing here fails the bridge's start()."""
        try:
            await self._connect()
        except Exception as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailableError(f"the listener cannot connect: {exc}") from exc
            raise
        self._task = asyncio.create_task(self._supervise(), name="pgbridge-listener")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        try:
            conn.add_termination_listener(self._on_termination)
            await conn.add_listener(self._channel, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        self._lost.clear()
        self._conn = conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=1.0)
        except Exception:
            conn.terminate()

    def _on_termination(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._lost.set()

    def _on_notification(self, conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        try:
            run_id, seq = decode_wake(payload)
        except ValueError:
            logger.warning("pgbridge listener ignored a malformed wake-up %r", payload[:100])
            return
        self._on_wake(run_id, seq)

    async def _supervise(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._ping_interval)
            if self._lost.is_set() or not await self._ping():
                await self._reconnect()

    async def _ping(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
        except Exception as exc:
            logger.warning("pgbridge listener ping failed: %s", exc)
            return False
        return True

    async def _reconnect(self) -> None:
        logger.warning("pgbridge listener connection lost; reconnecting")
        await self._disconnect()
        attempt = 0
        while True:
            try:
                await self._connect()
                break
            except Exception as exc:
                if not is_connection_error(exc):
                    logger.exception("pgbridge listener cannot reconnect")
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
        self.reconnects += 1
        logger.info("pgbridge listener reconnected after %d attempt(s)", attempt + 1)
        # Anything could have been published while we were away.
        self._on_reconnect()
