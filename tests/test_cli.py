"""The ``pgbridge`` command line: migrate and the demo, as a user runs them."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from tests.postgres_server import DatabaseFactory


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgbridge.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_migrate_creates_the_tables(databases: DatabaseFactory) -> None:
    dsn = await databases.create_empty()
    code, out = await run_cli("migrate", "--dsn", dsn)
    assert code == 0, out
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0001"
    finally:
        await conn.close()
    await databases.drop(dsn)


async def test_migrate_reports_an_unreachable_server_without_a_traceback() -> None:
    code, out = await run_cli("migrate", "--dsn", "postgresql://postgres@127.0.0.1:1/nothing")
    assert code == 1
    assert out.startswith("pgbridge: ") and "Traceback" not in out


async def test_demo_resumes_in_a_new_process_with_nothing_lost_or_repeated(dsn: str) -> None:
    code, out = await run_cli("demo", "--dsn", dsn, "--events", "60")
    assert code == 0, out
    assert "resume resumed" in out
    assert "duplicates: 0  missing: 0" in out
    assert "OK: every event arrived exactly once, in order" in out
