"""The ``pgbridge`` command line: migrate, the demo and retention, as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest

from pgbridge import PostgresStreamBridge, migrate
from pgbridge.sql import SCHEMA_REVISION
from tests.support.cli import terminal_session
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory
from tests.support.sql_helpers import event_rows


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
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == SCHEMA_REVISION
    finally:
        await conn.close()
    await databases.drop(dsn)


async def test_migrate_says_which_revisions_it_applied_and_when_there_was_nothing_to_do(
    databases: DatabaseFactory,
) -> None:
    dsn = await databases.create_empty()
    try:
        await migrate(dsn, revision="0005")
        code, out = await run_cli("migrate", "--dsn", dsn)
        assert code == 0, out
        assert out == (
            f"schema 'public': applied 0006 → {SCHEMA_REVISION} "
            f"({int(SCHEMA_REVISION) - 5} revision(s); it was at 0005), "
            f"now at revision {SCHEMA_REVISION}\n"
        )
        code, out = await run_cli("migrate", "--dsn", dsn)
        assert (code, out) == (
            0,
            f"schema 'public' is already at revision {SCHEMA_REVISION}: nothing to apply\n",
        )
        code, out = await run_cli("migrate", "--dsn", dsn, "--schema", "fresh")
        assert code == 0, out
        assert f"schema 'fresh': applied 0001 → {SCHEMA_REVISION} (" in out and "no pgbridge tables" in out
    finally:
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


async def test_demo_shows_the_rows_its_sql_returns_in_the_order_it_returns_them(dsn: str) -> None:
    code, out = await run_cli("demo", "--dsn", dsn, "--events", "10")
    assert code == 0, out
    shown_sql = out.split("the run is plain SQL:\n", 1)[1].split(";\n", 1)[0]
    printed = [line.split()[0] for line in out.split(";\n", 1)[1].splitlines() if line.startswith("  ")]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(shown_sql)  # pasted into psql as printed
    finally:
        await conn.close()
    assert printed == [row["event_id"] for row in rows] and len(printed) == 3
    assert [int(i.split("-")[1]) for i in printed] == [9, 10, 11]  # the last three, oldest first


async def test_retention_runs_one_pass_and_prints_what_it_deleted(dsn: str) -> None:
    async with PostgresStreamBridge(dsn) as bridge:
        for i in range(5):
            await bridge.publish("run", "token", i)
    code, out = await run_cli("retention", "--dsn", dsn, "--max-events-per-run", "2")
    assert code == 0, out
    assert "retention pass: events_deleted=3 runs_deleted=0 runs_dead_lettered=0" in out
    assert "run this pass?" not in out  # no terminal (cron, scripts): nothing is asked
    assert len(await event_rows(dsn, "run")) == 2


async def test_retention_accepts_durations_with_units_and_none(dsn: str) -> None:
    code, out = await run_cli(
        "retention",
        "--dsn",
        dsn,
        "--ended-run-ttl",
        "7d",
        "--tombstone-ttl",
        "none",
        "--active-timeout",
        "10m",
    )
    assert code == 0, out
    assert "--ended-run-ttl 7d --tombstone-ttl none --active-timeout 10m" in out
    assert "RetentionPolicy(" not in out and "604800" not in out


async def test_retention_help_shows_defaults_as_durations_a_user_writes() -> None:
    code, out = await run_cli("retention", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "(default: 7d)" in flat and "(default: 30d)" in flat and "(default: 10m)" in flat
    assert "(default: 2h)" in flat and "(default: none)" in flat and "604800" not in flat


async def test_retention_refuses_a_bad_policy_without_a_traceback(dsn: str) -> None:
    code, out = await run_cli("retention", "--dsn", dsn, "--max-events-per-run", "-1")
    assert code == 2
    assert "--max-events-per-run" in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--max-events-per-run", "0", "must be 1 or more, not 0"),
        ("--every", "0", "must be at least 1s"),
        ("--max-event-age", "0", "must be more than 0s"),
        ("--active-timeout", "0s", "must be more than 0s"),
        ("--ended-run-ttl", "-1d", "cannot be negative"),
        ("--tombstone-ttl", "-5", "cannot be negative"),
    ],
)
async def test_retention_refuses_nonsensical_values_in_one_line_before_connecting(
    dsn: str, option: str, value: str, says: str
) -> None:
    async with PostgresStreamBridge(dsn) as bridge:
        await bridge.publish("run", "token", 0)
    code, out = await run_cli("retention", "--dsn", dsn, f"{option}={value}")
    assert code == 2
    assert out.count("\n") == 1 and says in out and option in out, out
    assert len(await event_rows(dsn, "run")) == 1


async def seed_for_retention(dsn: str) -> None:
    async with PostgresStreamBridge(dsn) as bridge:
        for i in range(5):
            await bridge.publish("long", "token", i)
        await bridge.publish("short", "token", 0)


async def test_retention_dry_run_says_what_each_rule_would_delete_and_deletes_nothing(dsn: str) -> None:
    await seed_for_retention(dsn)
    code, out = await run_cli("retention", "--dsn", dsn, "--max-events-per-run", "2", "--dry-run")
    assert code == 0, out
    assert "nothing was deleted" in out
    assert "delete 3 event(s) by --max-events-per-run" in out
    assert "delete 0 event(s) by --ended-run-ttl" in out
    assert "in all: 3 events deleted, 0 runs deleted, 0 dead-lettered" in out
    assert "retention pass:" not in out
    assert len(await event_rows(dsn, "long")) == 5


@pytest.mark.parametrize(("typed", "code", "kept"), [(b"n\n", 1, 5), (b"\n", 1, 5), (b"y\n", 0, 2)])
async def test_retention_on_a_terminal_shows_what_it_would_delete_and_asks_first(
    dsn: str, typed: bytes, code: int, kept: int
) -> None:
    await seed_for_retention(dsn)
    status, out, err = await terminal_session(
        "retention", "--dsn", dsn, "--max-events-per-run", "2", typed=typed
    )
    assert status == code, out
    assert "delete 3 event(s) by --max-events-per-run" in out and "run this pass? [y/N]" in out + err
    assert len(await event_rows(dsn, "long")) == kept


async def test_retention_yes_on_a_terminal_runs_without_asking(dsn: str) -> None:
    await seed_for_retention(dsn)
    status, out, err = await terminal_session(
        "retention", "--dsn", dsn, "--max-events-per-run", "2", "--yes", typed=b""
    )
    assert status == 0, out
    assert "run this pass?" not in out + err and "events_deleted=3" in out
    assert len(await event_rows(dsn, "long")) == 2


@pytest.mark.parametrize(("stop", "codes"), [(signal.SIGINT, (0, 130)), (signal.SIGTERM, (0, 143))])
async def test_retention_every_keeps_running_passes_until_interrupted(
    dsn: str, stop: signal.Signals, codes: tuple[int, int]
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgbridge.cli",
        "retention",
        "--dsn",
        dsn,
        "--every",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    passes = 0
    while passes < 3:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line, "the command stopped by itself"
        passes += line.startswith("retention pass:")
    process.send_signal(stop)
    try:
        code = await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        rest = (await process.stdout.read()).decode()
        message = f"still running 30 s after {stop.name}; its output since:\n{rest[-3000:]}"
        raise AssertionError(message) from None
    assert code in codes


@pytest.mark.own_server
async def test_serve_stops_the_embedded_postgresql_it_started_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PGBRIDGE_DSN", "DATABASE_URL")}
    code, out = await run_cli("migrate", "--data-dir", str(tmp_path / "pg"), env=env)
    assert code == 0, out
    server = ServerProcess(dsn="", token="")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pgbridge.cli", "serve", "--data-dir", str(tmp_path / "pg"), "--port", str(server.port)),
        *("--token", ""),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    server.process = process
    try:
        await server._wait_until_ready(timeout=120)
        (pid_file,) = (tmp_path / "pg").rglob("postmaster.pid")
        postmaster = int(pid_file.read_text().split()[0])
        assert psutil.pid_exists(postmaster)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 143
        await asyncio.to_thread(_wait_gone, postmaster, 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _wait_gone(pid: int, seconds: float) -> None:
    """Wait for *pid* to exit; fail if it is still running after *seconds*."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(seconds)  # raises TimeoutExpired if it stays
