"""What the alembic environment and revisions share: the schema and the engine.

Kept out of ``migrations/env.py`` so revisions can import it, and so
:func:`pgbridge.migrate` and the ``alembic`` command line agree.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import asyncpg
from alembic import context
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from pgbridge.dsn import take_connect_timeout
from pgbridge.exceptions import ConfigurationError
from pgbridge.sql import DEFAULT_SCHEMA

#: Advisory lock key held while migrating (an arbitrary constant: "pgbr").
MIGRATION_LOCK_KEY = 0x70676272


def schema_from_context() -> str:
    """The PostgreSQL schema the running migration targets."""
    schema = context.config.attributes.get("schema")
    if schema is None:
        schema = context.get_x_argument(as_dictionary=True).get("schema", DEFAULT_SCHEMA)
    return str(schema)


def async_engine_for_dsn(dsn: str) -> AsyncEngine:
    """A SQLAlchemy engine whose connections asyncpg opens from *dsn* itself.

    Handing the libpq URI to asyncpg means the migrations accept exactly the
    DSNs the bridge accepts (Unix sockets in ``?host=`` included, and libpq's
    ``?connect_timeout=``, which asyncpg does not know: taken out and used as
    the connection's timeout).
    """
    try:
        dsn, seconds = take_connect_timeout(dsn)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    connect = partial(asyncpg.connect, dsn, **({} if seconds is None else {"timeout": seconds}))
    return create_async_engine(
        "postgresql+asyncpg://",
        async_creator=connect,
        poolclass=NullPool,
    )


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Autogenerate filter: look only at pgbridge's own tables."""
    if type_ == "table":
        return name in {"run_streams", "run_events", "retention_last_pass", "run_stream_producers"}
    return True
