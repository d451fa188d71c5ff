"""``pgbridge serve``: the HTTP app of :mod:`pgbridge.http.app` (with Durable Streams) on uvicorn."""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence

from pgbridge.bridge import PostgresStreamBridge
from pgbridge.durable_streams.http import DurableStreamSettings
from pgbridge.http.app import StreamSettings, create_app
from pgbridge.sql import DEFAULT_SCHEMA

#: Seconds uvicorn lets open streams run on shutdown before closing them; an
#: EventSource or SDK client reconnects (to this or another process) and resumes.
SHUTDOWN_GRACE_SECONDS = 2


def exit_normally_on_sigterm() -> None:
    """Make SIGTERM end the process through ``sys.exit``.

    After its graceful shutdown uvicorn re-raises SIGTERM; with the default
    handler the process would die without running ``atexit`` hooks, and the
    embedded PostgreSQL it started would be left running.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


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
) -> None:
    """Serve a bridge on *dsn* (with *bridge_options*, see BridgeOptions) until interrupted;
    with *metrics*, also ``GET /metrics``."""
    import uvicorn

    exit_normally_on_sigterm()
    bridge = PostgresStreamBridge(dsn, schema=schema, metrics=metrics, **(bridge_options or {}))
    app = create_app(
        bridge,
        token=token,
        cors_origins=cors_origins,
        settings=settings,
        expose_metrics=metrics,
        stream_settings=stream_settings,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
