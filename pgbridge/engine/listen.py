"""The one LISTEN connection of a bridge: wake-ups from other processes.

NOTIFY is at-most-once (lost while we reconnect), so it is never the only
way an event arrives: a wake-up carries the events it reports when they fit
in a payload (then a reader that holds the seqs before them takes them
without a query), and otherwise makes a reader re-read from its cursor; a
poll in the bridge covers lost ones. This connection lives outside the pool (a pool
reset runs ``UNLISTEN *``), stays idle in autocommit, and is watched: a
termination callback and a periodic ping detect its death, then it
reconnects with backoff, LISTENs again and wakes every reader.

LISTEN through a transaction-mode pooler (PgBouncer with
``pool_mode=transaction``) fails silently: the LISTEN runs on whichever
server connection the pooler lends for that one statement, and
notifications never come back. So at start, before it LISTENs for wake-ups,
the listener checks the one thing it is for: it LISTENs on a fresh probe
channel and has *another* session (the bridge's pool) send a NOTIFY there;
if that does not arrive, start() is refused. A self-NOTIFY from the
listener's own connection would prove nothing: a pooler tends to lend the
same idle server connection again, which then notifies itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import asyncpg
import orjson

from pgbridge.connector import Backoff, is_connection_error
from pgbridge.dsn import redact_dsn
from pgbridge.exceptions import DatabaseUnavailableError, StreamBridgeError, TopologyConfigurationError
from pgbridge.lsn import parse_lsn

logger = logging.getLogger(__name__)

#: Sends a NOTIFY on the given channel from a session other than the listener's.
ProbeSender = Callable[[str], Awaitable[None]]


#: Stands for "no seq" in a wake payload: the run changed in another way
#: (retention deleted events), so readers must re-read whatever they hold.
ANY_SEQ = "*"
#: Starts a payload that carries the events it reports.
CARRIED = "+"
#: Starts a payload that carries one event of each of several runs (a batch's wake-ups).
BATCHED = "="
#: An event a wake-up carries, as stored: ``(seq, created_ms, name, data JSON text, terminal,
#: prev_ms)``, prev_ms the creation time of the run's event before it (None: the run's first, or
#: a payload of a pgbridge that did not send it), so a reader takes it only if it follows what
#: it holds (a run whose history changed, after a failover, is read instead).
CarriedEvent = tuple[int, int, str, str, bool, int | None]
#: Most characters of event data and names a notifier puts in one payload (PostgreSQL
#: refuses a payload of 8,000 bytes or more; the statement checks the bytes again).
CARRY_LIMIT = 7_000


class Wake(NamedTuple):
    """What one notification says: *run_id* moved to *seq* (None: re-read regardless), at WAL
    position *lsn* when known, and the committed *events* it reports, when they fit. (A named
    tuple: a subscribing process makes one per event it is told of, and a frozen dataclass
    took twice as long to make.)"""

    run_id: str
    seq: int | None
    lsn: int | None = None
    events: tuple[CarriedEvent, ...] = ()


#: Receives every wake-up the listener decodes.
WakeCallback = Callable[[Wake], None]


def encode_carried(events: Sequence[CarriedEvent]) -> str:
    """The events part of a carrying payload (a JSON array of arrays), for ``notify_runs``."""
    return orjson.dumps(events).decode()


def decode_wakes(payload: str) -> tuple[Wake, ...]:
    """A notification's wake-ups; ValueError if malformed.

    The two one-run forms are :func:`decode_wake`'s. The batched form is what
    the plain append statements send (``append_runs_once`` and
    ``append_one_event``, pgbridge/sql/events.sql): ``=<lsn> <items>``, the primary's WAL
    position, a space, then a JSON array of one item per event, in the order
    the wake-ups are taken (a run's events in seq order; the order across
    runs carries no meaning): ``[run_id, seq, created_ms, name, data JSON
    text, terminal, prev_ms]``, each the wake-up of its run at that seq
    carrying that event.
    One notification serves many runs: a batch of 50 runs sends four or so,
    not 50 (a subscribing process spent ~10 us an event less receiving them,
    docs/performance.md, session 11).
    """
    if not payload.startswith(BATCHED):
        return (decode_wake(payload),)
    lsn_text, _, items = payload[1:].partition(" ")
    lsn = parse_lsn(lsn_text)
    try:
        rows = orjson.loads(items)
        wakes = tuple([_batched_wake(row, lsn) for row in rows])
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"batched wake-ups that do not decode: {items[:60]!r}") from exc
    if not wakes:
        raise ValueError("a batched wake-up with no events")
    return wakes


def _batched_wake(row: list[object], lsn: int) -> Wake:
    run_id, seq, ms, name, data, terminal, prev = row
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"a batched wake-up item without a run id: {row!r}")
    carried = _carried(seq, ms, name, data, terminal, prev)
    return Wake(run_id, carried[0], lsn, (carried,))


def decode_wake(payload: str) -> Wake:
    """A one-run notification's :class:`Wake`; ValueError if malformed.

    The payload is written in one place, the ``notify_runs`` statement
    (pgbridge/sql/events.sql), in one of two forms (the append statements'
    batched form, several runs in one payload, is :func:`decode_wakes`'s):

    * ``<seq>@<lsn> <run_id>``: the newest seq (or ``*``), ``@`` and the
      primary's WAL position after the commit, a space, the run id (which may
      hold spaces). A payload without ``@<lsn>`` (no position) is accepted too.
    * ``+<seq>@<lsn> <n> <run_id><events>``: the same, with the run id's length
      in characters before it, then the events it reports as
      :func:`encode_carried` wrote them.

    tests/db/test_wake_payload.py decodes what that statement sends.
    """
    carried = payload.startswith(CARRIED)
    head, _, rest = payload.removeprefix(CARRIED).partition(" ")
    seq_text, at, lsn_text = head.partition("@")
    lsn = parse_lsn(lsn_text) if at else None
    seq = None if seq_text == ANY_SEQ else int(seq_text)
    if not carried:
        return Wake(rest, seq, lsn)
    length_text, _, rest = rest.partition(" ")
    length = int(length_text)
    if length < 1 or len(rest) < length:
        raise ValueError(f"a run id of {length} characters does not fit in {rest[:40]!r}")
    return Wake(rest[:length], seq, lsn, _decode_events(rest[length:]))


def _decode_events(text: str) -> tuple[CarriedEvent, ...]:
    try:
        rows = orjson.loads(text)
        events = tuple([_carried_event(row) for row in rows])
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"carried events that do not decode: {text[:60]!r}") from exc
    if not events:
        raise ValueError("a carrying wake-up with no events")
    return events


def _carried_event(row: list[object]) -> CarriedEvent:
    """One carried event; a row of five (before prev_ms was carried) has none."""
    seq, ms, name, data, terminal, *rest = row
    return _carried(seq, ms, name, data, terminal, rest[0] if rest else None)


def _carried(
    seq: object, ms: object, name: object, data: object, terminal: object, prev: object
) -> CarriedEvent:
    """A carried event from a payload's JSON values, checked by conversion (a bad one raises)."""
    return (
        int(seq),  # type: ignore[call-overload]
        int(ms),  # type: ignore[call-overload]
        str(name),
        str(data),
        bool(terminal),
        None if prev is None else int(prev),  # type: ignore[call-overload]
    )


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
        ping_sql: str,
        probe: ProbeSender | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._dsn = dsn
        #: The ping's statement (``listener_ping``, pgbridge/sql/events.sql).
        self._ping_sql = ping_sql
        self._probe = probe
        self._channel = channel
        self._on_wake = on_wake
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff(initial=0.05, maximum=2.0)
        self._conn: asyncpg.Connection | None = None
        #: Whether a reader in this process follows runs, so the connection must LISTEN on
        #: the wake-up channel (and LISTEN again after every reconnect): see :meth:`follow`.
        self._wanted = False
        #: Whether the current connection LISTENs on the wake-up channel.
        self._listening = False
        self._listen_lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: How many times the connection was re-established (for metrics and tests).
        self.reconnects = 0

    async def start(self) -> None:
        """Connect and check notifications arrive; failing here fails the bridge's start().

        The connection LISTENs on the wake-up channel only from the first :meth:`follow`:
        a process that only publishes (a worker) is never sent the wake-ups (and the
        events they carry) of every run in the database.
        """
        try:
            await self._connect(check=self._probe is not None)
        except StreamBridgeError:
            raise
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

    async def _connect(self, *, check: bool = False) -> None:
        # No statement cache: the listener runs LISTEN and a ping, nothing worth
        # preparing, and so it also works through a session-mode pooler.
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout, statement_cache_size=0)
        try:
            conn.add_termination_listener(self._on_termination)
            if check:
                await self._check_notifications_arrive(conn)
        except BaseException:
            conn.terminate()
            raise
        self._lost.clear()
        self._conn = conn
        if self._wanted:
            try:
                await self._listen(conn)
            except BaseException:
                await self._disconnect()  # the caller (the reconnect loop) tries again
                raise

    async def follow(self) -> None:
        """LISTEN on the wake-up channel from now on, for good (readers here follow runs).

        A subscription calls it before its first read, so every commit after that read
        wakes it. Returns at once once listening; never raises: with the connection down,
        the reconnect LISTENs and wakes every reader (the poll covers the meantime).
        """
        self._wanted = True
        if not self._listening and self._conn is not None:
            with contextlib.suppress(Exception):  # a failure is reported, and the reconnect retries
                await self._listen(self._conn)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        async with self._listen_lock:
            current = self._conn
            if self._listening or current is None or current is not conn or conn.is_closed():
                return
            try:
                # Bounded: a stalled connection must not hold up a subscription's start; the
                # supervisor replaces it, LISTENs again and wakes every reader. asyncio.timeout, not
                # wait_for: Python 3.11's wait_for loses a cancellation that lands as the awaited
                # call completes (CPython gh-86296), and a subscription cancelled right here (a
                # Ctrl-C of `pgbridge tail --wait`) then went on waiting for good.
                async with asyncio.timeout(self._connect_timeout):
                    await conn.add_listener(self._channel, self._on_notification)
            except Exception as exc:
                logger.warning("pgbridge listener could not LISTEN (%s); reconnecting", exc)
                self._lost.set()
                raise
            self._listening = True

    @property
    def listening(self) -> bool:
        """Whether wake-ups reach this process now (for tests and health)."""
        return self._listening

    async def _check_notifications_arrive(self, conn: asyncpg.Connection) -> None:
        """LISTEN on a fresh channel, have another session NOTIFY it, and wait for it.

        Before the real LISTEN, so a pooler that swallowed it never keeps the
        bridge's channel subscribed on one of its server connections.
        """
        assert self._probe is not None
        channel = f"pgbridge_check_{uuid.uuid4().hex}"
        arrived = asyncio.Event()

        def on_probe(*_: object) -> None:
            arrived.set()

        await conn.add_listener(channel, on_probe)
        try:
            await self._probe(channel)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await arrived.wait()
            except TimeoutError:
                # A connection that stalled is trouble, not a misconfiguration:
                # only a listener that still answers yet hears nothing is refused.
                try:
                    await conn.fetchval(self._ping_sql, timeout=self._connect_timeout)
                except Exception as exc:
                    raise DatabaseUnavailableError(
                        f"the listener connection stopped answering during its start check: {exc}"
                    ) from exc
                raise TopologyConfigurationError(
                    f"the listener connection ({redact_dsn(self._dsn)}) did not receive a NOTIFY sent from "
                    f"another session within {self._connect_timeout:g} s, so it would miss every wake-up. "
                    "This is what happens when it goes through a transaction-mode pooler such as PgBouncer "
                    "(LISTEN does nothing there): give the bridge listen_dsn=<a direct connection to the "
                    "same PostgreSQL database> (or a session-mode pool), and keep dsn for the pooler"
                ) from None
        finally:
            with contextlib.suppress(Exception):
                await conn.remove_listener(channel, on_probe)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._listening = False
        if conn is None or conn.is_closed():
            return
        try:
            async with asyncio.timeout(1.0):
                await conn.close()
        except Exception:
            conn.terminate()

    def _on_termination(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._lost.set()

    def _on_notification(self, conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        try:
            wakes = decode_wakes(payload)
        except ValueError:
            logger.warning("pgbridge listener ignored a malformed wake-up %r", payload[:100])
            return
        for wake in wakes:
            self._on_wake(wake)

    async def _supervise(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ping_interval):
                    await self._lost.wait()
            if self._lost.is_set() or not await self._ping():
                await self._reconnect()

    async def _ping(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval(self._ping_sql, timeout=self._connect_timeout)
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
