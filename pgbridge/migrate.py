"""Apply pgbridge's alembic revisions: ``await migrate(dsn)`` or ``pgbridge migrate``.

Alembic and SQLAlchemy are imported only when migrating, so importing
pgbridge for publishing and subscribing stays light.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

from pgbridge.exceptions import DatabaseUnavailableError, StreamBridgeError
from pgbridge.sql import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection


# Alembic's `context` is a module-global proxy, so two migrations in one
# process must not interleave (other processes wait on the advisory lock in
# env.py instead). One lock per event loop, as asyncio locks are loop-bound.
_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What :func:`migrate` did: the schema's revision before and after, and the revisions applied."""

    schema: str
    #: The revision before (None: the schema had no pgbridge tables).
    before: str | None
    after: str | None
    #: The revisions applied, oldest first (empty: it was up to date).
    applied: tuple[str, ...]

    def describe(self) -> str:
        """``applied 0001 → 0008 ...`` or ``already at 0008 ...``: what ``pgbridge migrate`` prints."""
        if not self.applied:
            return f"schema {self.schema!r} is already at revision {self.after}: nothing to apply"
        span = self.applied[0] if len(self.applied) == 1 else f"{self.applied[0]} → {self.applied[-1]}"
        start = "it had no pgbridge tables" if self.before is None else f"it was at {self.before}"
        return (
            f"schema {self.schema!r}: applied {span} ({len(self.applied)} revision(s); {start}), "
            f"now at revision {self.after}"
        )


def alembic_config(schema: str = DEFAULT_SCHEMA) -> Config:
    """An alembic config that points at the revisions shipped in the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("pgbridge.migrations")))
    config.attributes["schema"] = schema
    return config


def head_revision() -> str:
    """The newest revision in ``migrations/``."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def migrate(dsn: str, *, schema: str = DEFAULT_SCHEMA, revision: str = "head") -> MigrationResult:
    """Bring the database at *dsn* to *revision* (default: the newest); says what it applied.

    Safe to run from several processes (or tasks) at once and on an
    up-to-date database.
    """
    async with _migration_lock():
        return await _migrate_now(dsn, schema, revision)


async def _migrate_now(dsn: str, schema: str, revision: str) -> MigrationResult:
    from sqlalchemy.exc import SQLAlchemyError

    from pgbridge.connector import is_connection_error
    from pgbridge.dsn import redact_dsn
    from pgbridge.migration_support import async_engine_for_dsn

    engine = async_engine_for_dsn(dsn)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(_upgrade, schema, revision)
    except SQLAlchemyError as exc:
        raise StreamBridgeError(f"migration failed: {exc}") from exc
    except Exception as exc:
        if is_connection_error(exc):
            raise DatabaseUnavailableError(
                f"cannot reach PostgreSQL at {redact_dsn(dsn)!r} to migrate: {exc}"
            ) from exc
        raise
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, schema: str, revision: str) -> MigrationResult:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    def current() -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
        return context.get_current_revision()

    config = alembic_config(schema)
    config.attributes["connection"] = connection
    before = current()
    command.upgrade(config, revision)
    after = current()
    applied: tuple[str, ...] = ()
    if after is not None and after != before:
        script = ScriptDirectory.from_config(config)
        walked = script.iterate_revisions(after, before or "base")
        applied = tuple(reversed([step.revision for step in walked if step is not None]))
    return MigrationResult(schema=schema, before=before, after=after, applied=applied)
