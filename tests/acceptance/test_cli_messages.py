"""What the ``pgbridge`` command says when something is wrong: one line, no secrets, no Python.

Passwords in a DSN are never shown (docs/cli.md "Connecting"), a file that cannot be
opened is one line and exit status 2, and no message shows a Python value (``None``,
a dataclass repr, seconds as floats) where the user expects words.
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.cli import cli, cli_env
from tests.support.http_server import free_port

PASSWORD = "hunter2"


def with_password(dsn: str, *, database: str | None = None) -> str:
    """*dsn* with the password ``hunter2`` (ignored by a trust-auth test server)."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    path = parts.path if database is None else "/" + database
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}", path=path))


#: Every command that connects, with the arguments it needs.
COMMANDS = [
    ("runs",),
    ("events", "run"),
    ("tail", "run"),
    ("stats",),
    ("verify", "run"),
    ("export", "run"),
    ("retention", "--yes"),
    ("migrate",),
    ("demo", "--events", "2"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
async def test_no_command_shows_the_password_of_an_unreachable_dsn(command: tuple[str, ...]) -> None:
    code, out, err = await cli(*command, "--dsn", f"postgresql://app:{PASSWORD}@127.0.0.1:1/db")
    assert code != 0
    assert PASSWORD not in out + err
    assert "postgresql://app:***@127.0.0.1:1/db" in err, err


@pytest.mark.parametrize("command", COMMANDS[:4], ids=lambda c: c[0])
async def test_no_command_shows_the_password_of_a_missing_database(
    admin_dsn: str, command: tuple[str, ...]
) -> None:
    code, out, err = await cli(*command, "--dsn", with_password(admin_dsn, database="pgbridge_no_such_db"))
    assert code == 1
    assert PASSWORD not in out + err and ":***@" in err, err


async def test_the_migrate_hint_for_an_unmigrated_schema_shows_no_password(dsn: str) -> None:
    code, out, err = await cli("runs", "--dsn", with_password(dsn), "--schema", "not_migrated")
    assert code == 1
    assert "pgbridge migrate --dsn" in err and ":***@" in err
    assert PASSWORD not in out + err


async def test_serve_shows_no_password_when_it_cannot_start() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pgbridge.cli", "serve", "--port", str(free_port()), "--token", "t"),
        *("--dsn", f"postgresql://app:{PASSWORD}@127.0.0.1:1/db"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=cli_env(),
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    assert PASSWORD not in out.decode() and ":***@" in out.decode(), out.decode()[-2000:]
