"""``pgbridge serve``: the HTTP app of :mod:`pgbridge.sse` (with Durable Streams) on uvicorn."""

from __future__ import annotations

from collections.abc import Sequence

from pgbridge.bridge import PostgresStreamBridge
from pgbridge.durable_streams_http import DurableStreamSettings
from pgbridge.schema import DEFAULT_SCHEMA
from pgbridge.sse import StreamSettings, create_app

#: Seconds uvicorn lets open streams run on shutdown before closing them; an
#: EventSource or SDK client reconnects (to this or another process) and resumes.
SHUTDOWN_GRACE_SECONDS = 2


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
) -> None:
    """Serve a bridge on *dsn* until interrupted."""
    import uvicorn

    bridge = PostgresStreamBridge(dsn, schema=schema)
    app = create_app(
        bridge, token=token, cors_origins=cors_origins, settings=settings, stream_settings=stream_settings
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
