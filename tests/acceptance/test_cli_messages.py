"""What the ``pgbridge`` command says when something is wrong: one line, no secrets, no Python.

Passwords in a DSN are never shown (docs/cli.md "Connecting"), a file that cannot be
opened is one line and exit status 2, and no message shows a Python value (``None``,
a dataclass repr, seconds as floats) where the user expects words.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from pgbridge import PostgresStreamBridge
from pgbridge.cli.format import gap_line
from tests.support.cli import cli, cli_env
from tests.support.http_server import free_port
from tests.support.sql_helpers import evict_prefix

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
    code, out, err = await cli(
        *command, "--dsn", f"postgresql://app:{PASSWORD}@127.0.0.1:1/db?connect_timeout=1"
    )
    assert code != 0
    assert PASSWORD not in out + err
    assert "postgresql://app:***@127.0.0.1:1/db" in err, err


@pytest.mark.parametrize("command", COMMANDS[:5], ids=lambda c: c[0])
async def test_a_dsn_that_does_not_parse_is_one_line_exit_2_without_its_password(
    command: tuple[str, ...],
) -> None:
    code, out, err = await cli(*command, "--dsn", f"postgresql://app:{PASSWORD}@127.0.0.1:notaport/db")
    assert code == 2, err
    assert PASSWORD not in out + err and "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("pgbridge: not a valid PostgreSQL DSN: 'postgresql://app:***@")
    )


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
        *("--dsn", f"postgresql://app:{PASSWORD}@127.0.0.1:1/db?connect_timeout=1"),
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


# -- files that cannot be read or written --------------------------------------------------


async def test_export_to_a_folder_that_does_not_exist_says_so_in_one_line(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish("run", "token", 0)
    code, _out, err = await cli("export", "run", "--dsn", dsn, "-o", "/nonexistent/x.jsonl")
    assert code == 2
    assert err == "pgbridge: cannot write /nonexistent/x.jsonl: No such file or directory\n"


async def test_verify_of_a_file_that_does_not_exist_says_so_in_one_line() -> None:
    code, _out, err = await cli("verify", "--file", "/nonexistent.jsonl")
    assert code == 2
    assert err == "pgbridge: cannot read /nonexistent.jsonl: No such file or directory\n"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"a": 1}\n', "not a pgbridge-chain-v1 export: its header names no format"),
        ('{"format": "csv"}\n', "not a pgbridge-chain-v1 export: its header says format 'csv'"),
        (
            '{"format": "pgbridge-chain-v1"}\n',
            "not a pgbridge-chain-v1 export: a line has no 'first_seq' field",
        ),
        ("hello\n", "line 1 is not JSON"),
    ],
)
async def test_verify_of_a_file_that_is_no_export_says_why_in_words(
    tmp_path: Path, content: str, says: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    code, _out, err = await cli("verify", "--file", str(bad))
    assert code == 2
    assert err.startswith(f"pgbridge: {bad}: {says}") and err.count("\n") == 1
    assert "None" not in err


# -- no Python values in messages ------------------------------------------------------------


async def test_tail_of_an_ended_run_with_no_event_left_says_so_in_words(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await bridge.publish("run", "token", 0)
    await bridge.publish_end("run")
    await evict_prefix(dsn, "run", keep_from_seq=3)
    code, out, err = await cli("tail", "run", "--dsn", dsn)
    assert (code, out) == (0, "")
    assert err == "run 'run' has already ended and no event of it is left to print\n"


def test_a_gap_marker_line_shows_no_python_none() -> None:
    line = gap_line({"gap_count": 2, "requested_event_id": None, "earliest_available_event_id": None})
    assert line == "-- gap: 2 event(s) deleted by retention; none is left --"
