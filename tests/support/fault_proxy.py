"""A TCP proxy in front of PostgreSQL that cuts, stalls and resumes connections.

The bridge under test connects through the proxy (:meth:`FaultProxy.dsn`);
the test connects directly to check what was stored. Faults are real at the
socket level: a cut aborts both sides of a connection (the client sees a
reset with its statement maybe in flight, the server sees its client vanish),
a stall stops forwarding bytes in both directions until :meth:`resume`.

The proxy tells a bridge's listener from its pool connections by the traffic:
a connection whose client sent ``LISTEN`` is a listener. That lets a test cut
the listener alone, or keep any new listener from getting its ``LISTEN``
through, without the bridge knowing it is being tested.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

CHUNK = 65536


@dataclass(eq=False)
class ProxiedConnection:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    listens: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def cut(self) -> None:
        """Abort both sockets at once (a reset, not a polite close)."""
        for writer in (self.client, self.upstream):
            writer.transport.abort()
        for pump in self.pumps:
            pump.cancel()


Which = Callable[[ProxiedConnection], bool]


def every(_: ProxiedConnection) -> bool:
    return True


def listeners(connection: ProxiedConnection) -> bool:
    return connection.listens


def not_listeners(connection: ProxiedConnection) -> bool:
    return not connection.listens


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to a PostgreSQL server, with faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        """*upstream_host* is a host name, or a socket folder (starting with ``/``)."""
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.refuse_listeners = False
        self.connections: set[ProxiedConnection] = set()
        self.cuts = 0
        #: For each connection cut, whether it was a listener.
        self.cut_listeners: list[bool] = []
        self.port = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def in_front_of(cls, dsn: str) -> AsyncIterator[FaultProxy]:
        """A running proxy in front of the server *dsn* names."""
        parts = urlsplit(dsn)
        socket_folder = dict(parse_qsl(parts.query)).get("host", "")
        host = socket_folder if socket_folder.startswith("/") else parts.hostname or "127.0.0.1"
        proxy = cls(host, parts.port or 5432)
        await proxy.start()
        try:
            yield proxy
        finally:
            await proxy.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._server is not None:
            await self._server.wait_closed()

    def dsn(self, dsn: str) -> str:
        """*dsn* rewritten to reach its server through this proxy."""
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def cut(self, which: Which = every) -> int:
        """Abort the connections *which* selects; return how many."""
        chosen = [c for c in self.connections if which(c)]
        for connection in chosen:
            connection.cut()
            self.connections.discard(connection)
        self.cuts += len(chosen)
        self.cut_listeners += [c.listens for c in chosen]
        return len(chosen)

    def stall(self) -> None:
        """Stop forwarding bytes, both ways, on every connection (new ones too)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def count(self, which: Which = every) -> int:
        return sum(1 for c in self.connections if which(c))

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        host, port = self._upstream
        try:
            if host.startswith("/"):
                upstream_reader, upstream = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                upstream_reader, upstream = await asyncio.open_connection(host, port)
        except OSError:
            client.transport.abort()
            return
        connection = ProxiedConnection(client, upstream)
        self.connections.add(connection)
        connection.pumps = [
            asyncio.create_task(self._pump(client_reader, upstream, connection, from_client=True)),
            asyncio.create_task(self._pump(upstream_reader, client, connection, from_client=False)),
        ]

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: ProxiedConnection,
        *,
        from_client: bool,
    ) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                await self._flowing.wait()
                if from_client and b"LISTEN " in chunk.upper():
                    connection.listens = True
                    if self.refuse_listeners:
                        self.cut(lambda c: c is connection)
                        return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            # One side hung up (or was cut): the other side goes too.
            self.connections.discard(connection)
            writer.close()
