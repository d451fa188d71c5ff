"""Progress bars: on standard error when it is a terminal, and nowhere otherwise."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import struct
import sys
import termios

from pgbridge import PostgresStreamBridge
from pgbridge.cli.progress import progress_bars
from tests.support.cli import ANSI, cli, cli_env


async def with_stderr_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Exit status, standard output (a pipe) and what ``pgbridge *args`` wrote to a
    pseudo-terminal as its standard error."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgbridge.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=terminal,
        env=cli_env(TERM="xterm-256color"),
    )
    os.close(terminal)

    def read_all() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer closed the terminal and all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    terminal_output = asyncio.get_running_loop().run_in_executor(None, read_all)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    written = await asyncio.wait_for(terminal_output, 60)
    os.close(controller)
    assert process.returncode is not None
    return process.returncode, out.decode(), written.decode(errors="replace")


def test_bars_on_a_stream_that_is_not_a_terminal_show_nothing() -> None:
    stream = io.StringIO()
    with progress_bars(stream) as bars:
        bar = bars.add("work", total=10)
        bar.advance(5)
        bar.update(completed=10, detail="done")
    assert not bars.shown and stream.getvalue() == ""


async def test_a_retention_pass_on_a_terminal_shows_a_bar_with_what_it_deleted(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    for i in range(5):
        await bridge.publish("run", "token", i)
    code, out, terminal = await with_stderr_on_a_terminal(
        "retention", "--dsn", dsn, "--max-events-per-run", "2"
    )
    assert code == 0, terminal
    assert "retention pass" in terminal and "3 events deleted" in terminal
    assert "retention pass: events_deleted=3" in out and ANSI not in out


async def test_a_retention_pass_into_a_pipe_shows_no_bar(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.publish("run", "token", 1)
    code, _, err = await cli("retention", "--dsn", dsn)
    assert code == 0
    assert err == ""


async def test_the_demo_on_a_terminal_shows_bars_of_events_published_and_received(dsn: str) -> None:
    code, out, terminal = await with_stderr_on_a_terminal("demo", "--dsn", dsn, "--events", "30")
    assert code == 0, out
    assert "published" in terminal and "received" in terminal and "100%" in terminal
    assert "━" not in out  # the bars stay off standard output
    assert "duplicates: 0  missing: 0" in out
