"""A process killed between its application write and its commit stores neither (docs/transactions.md).

The application process (tests/support/processes/tool_call_in_transaction.py)
runs examples/tool_calls' ``record_tool_call``: a ``tool_calls`` row and its
``tool_result`` event with ``publish_in``, in one SQLAlchemy transaction.
Killed with SIGKILL after both writes and before the commit, it leaves no
row, no event, no run row and no consumed seq, and a subscriber in another
process is sent nothing; left to commit, both are stored and that
subscriber gets the event.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import pytest_asyncio

from pgbridge import PostgresStreamBridge
from tests.support.helpers import seq_of
from tests.support.sql_helpers import connected

RUN = "run-kill"
CALL = "call-1"


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def line_starting(process: asyncio.subprocess.Process, prefix: str) -> str:
    """The first line *process* prints that starts with *prefix* (it must print one)."""
    assert process.stdout is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().rstrip("\n")
        assert line, f"process ended before printing {prefix!r}: {seen[-10:]}"
        seen.append(line)
        if line.startswith(prefix):
            return line


@pytest_asyncio.fixture
async def subscriber(dsn: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A reader of RUN in a process of its own, already following it."""
    process = await spawn("pgbridge.cli.demo", "subscribe", dsn, RUN)
    await line_starting(process, "resume fresh")
    yield process
    if process.returncode is None:
        process.kill()
        await process.wait()


async def stored(dsn: str) -> tuple[int, int, int]:
    """Tool-call rows, run rows and events of RUN in the database."""
    async with connected(dsn) as conn:
        rows = await conn.fetchval("SELECT count(*) FROM tool_calls WHERE run_id = $1", RUN)
        runs = await conn.fetchval("SELECT count(*) FROM run_streams WHERE run_id = $1", RUN)
        events = await conn.fetchval("SELECT count(*) FROM run_events WHERE run_id = $1", RUN)
    return rows, runs, events


async def test_a_process_killed_before_its_commit_stores_neither_the_row_nor_the_event(
    dsn: str, subscriber: asyncio.subprocess.Process
) -> None:
    app = await spawn("tests.support.processes.tool_call_in_transaction", dsn, RUN, CALL, "--hold")
    written = await line_starting(app, "written ")
    assert seq_of(written.split()[1]) == 1
    app.send_signal(signal.SIGKILL)
    await app.wait()
    async with PostgresStreamBridge(dsn) as bridge:
        # Waits for PostgreSQL to end the killed session's transaction, then gets the seq
        # the lost event had: none was consumed.
        after = await asyncio.wait_for(bridge.publish(RUN, "after_the_kill", {}), 60)
    assert seq_of(after) == 1
    assert await stored(dsn) == (0, 1, 1)
    first = await line_starting(subscriber, "")  # the first event the other process was sent
    assert first.split()[:2] == [after, "after_the_kill"]


async def test_a_process_that_commits_stores_both_and_wakes_another_process(
    dsn: str, subscriber: asyncio.subprocess.Process
) -> None:
    app = await spawn("tests.support.processes.tool_call_in_transaction", dsn, RUN, CALL)
    written = await line_starting(app, "written ")
    committed = await line_starting(app, "committed ")
    assert written.split()[1] == committed.split()[1]
    assert await asyncio.wait_for(app.wait(), 60) == 0
    received = await line_starting(subscriber, committed.split()[1])
    assert received.split()[1] == "tool_result" and CALL in received
    assert await stored(dsn) == (1, 1, 1)
