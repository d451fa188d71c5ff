"""``pgbridge serve``: the HTTP app of :mod:`pgbridge.http.app` (with Durable Streams) on uvicorn.

The bridge starts before the server listens, so a wrong DSN or an unmigrated
database is one error (the CLI prints one line), not a traceback from
uvicorn's lifespan. The server (:class:`Server`, also what
``examples/agent_app`` runs) ends open streams at once when it shuts down
(:mod:`pgbridge.http.shutdown`), redacts credentials from every log line
(:mod:`pgbridge.http.logs`), and exits 0 after a Ctrl-C.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from types import FrameType
from typing import Any

import uvicorn

from pgbridge.bridge import PostgresStreamBridge
from pgbridge.durable_streams.http import DurableStreamSettings
from pgbridge.exceptions import ConfigurationError, SchemaNotMigratedError
from pgbridge.http.app import StreamSettings, create_app
from pgbridge.http.logs import log_config
from pgbridge.http.shutdown import OPEN_READS
from pgbridge.sql import DEFAULT_SCHEMA

#: Seconds uvicorn lets requests run on shutdown before cancelling them. Open
#: streams do not wait for it: they end at once (pgbridge.http.shutdown), and an
#: EventSource or SDK client reconnects (to this or another process) and resumes.
SHUTDOWN_GRACE_SECONDS = 2


def exit_normally_on_sigterm() -> None:
    """Make SIGTERM end the process through ``sys.exit``.

    After its graceful shutdown uvicorn re-raises SIGTERM; with the default
    handler the process would die without running ``atexit`` hooks, and the
    embedded PostgreSQL it started would be left running.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def is_loopback(host: str) -> bool:
    """Whether *host* is reachable from this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(
    host: str, port: int, *, token: str | None, insecure: bool, keys: bool = False
) -> str | None:
    """The warning to print before serving on *host* open to anyone, or None.

    Raises ConfigurationError for a host other machines can reach, with no
    token and no read-token *keys*, unless *insecure*. With keys and no token
    the server is not open: read tokens are the only way in.
    """
    if token or keys or is_loopback(host):
        return None
    if not insecure:
        raise ConfigurationError(
            f"refusing to serve on {host} without a token: anyone who can reach it could read, "
            "append to and delete every run; give --token (or $PGBRIDGE_TOKEN) or read-token keys "
            "(--token-secret-file), or --insecure to serve it open anyway"
        )
    return (
        f"WARNING: serving on {host}:{port} with no token (--insecure): anyone who can reach "
        "this port can read, append to and delete every run"
    )


class Server(uvicorn.Server):
    """uvicorn's server, ending open streams at once when it shuts down.

    A first Ctrl-C shuts down gracefully and the process then exits 0 (uvicorn
    would raise KeyboardInterrupt after it); a second one forces the exit.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and not self.should_exit:
            self.should_exit = True
            return
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        OPEN_READS.reset()
        await super().startup(sockets)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        OPEN_READS.end_soon()
        await super().shutdown(sockets)


def server_config(
    app: Any, *, host: str, port: int, log_level: str = "info", logging: dict[str, Any] | None = None
) -> uvicorn.Config:
    """uvicorn's configuration as ``pgbridge serve`` uses it (*app*: an ASGI app or
    ``"module:attr"``); *logging*: a ``logging.config`` dict, by default :func:`log_config`."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config() if logging is None else logging,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


def serve_app(
    app: Any, *, host: str, port: int, log_level: str = "info", logging: dict[str, Any] | None = None
) -> None:
    """Serve an ASGI app (or ``"module:attr"``) with :class:`Server` until interrupted
    (see :func:`server_config`). Add :class:`~pgbridge.http.shutdown.EndReadsOnShutdown`
    to the app so its open streams end at once on shutdown."""
    exit_normally_on_sigterm()
    config = server_config(app, host=host, port=port, log_level=log_level, logging=logging)
    Server(config).run()


def run_server(
    dsn: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    schema: str = DEFAULT_SCHEMA,
    token: str | None = None,
    cors_origins: Sequence[str] = (),
    settings: StreamSettings | None = None,
    stream_settings: DurableStreamSettings | None = None,
    log_level: str = "info",
    metrics: bool = False,
    bridge_options: Mapping[str, object] | None = None,
    migrate: bool = False,
) -> None:
    """Serve a bridge on *dsn* (with *bridge_options*, see BridgeOptions) until interrupted;
    with *metrics*, also ``GET /metrics``. With *migrate* (``pgbridge serve`` on its
    embedded server), a schema that is not migrated is migrated first.

    The bridge starts before the server listens: its errors (StreamBridgeError)
    are raised from here.
    """
    exit_normally_on_sigterm()
    bridge = PostgresStreamBridge(dsn, schema=schema, metrics=metrics, **(bridge_options or {}))
    app = create_app(
        bridge,
        token=token,
        cors_origins=cors_origins,
        settings=settings,
        expose_metrics=metrics,
        stream_settings=stream_settings,
        manage_bridge=False,
    )
    config = server_config(app, host=host, port=port, log_level=log_level)

    async def serve() -> None:
        await _start(bridge, dsn, schema, migrate=migrate)
        try:
            await Server(config).serve()
        finally:
            await bridge.close()

    _run(serve(), config)


async def _start(bridge: PostgresStreamBridge, dsn: str, schema: str, *, migrate: bool) -> None:
    try:
        await bridge.start()
    except SchemaNotMigratedError:
        if not migrate:
            raise
        from pgbridge.migrate import migrate as migrate_schema

        await migrate_schema(dsn, schema=schema)
        print(f"pgbridge: migrated schema {schema!r} of the embedded PostgreSQL", file=sys.stderr)
        await bridge.start()


def _run(main: Coroutine[Any, Any, None], config: uvicorn.Config) -> None:
    """Run *main* on the event loop uvicorn would use (uvloop when installed)."""
    loop_factory = getattr(config, "get_loop_factory", None)
    if loop_factory is None:  # an older uvicorn sets the event loop policy instead
        config.setup_event_loop()
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main)
