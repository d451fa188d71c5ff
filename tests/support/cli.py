"""Running the ``pgbridge`` command as a user does: in a subprocess, in a pipe or on a terminal."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import struct
import sys
import termios

ANSI = "\x1b["


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGBRIDGE_DSN", "DATABASE_URL", "NO_COLOR")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def start_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgbridge.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or cli_env(),
    )


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Exit status, standard output and standard error of ``pgbridge *args``."""
    process = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def on_a_terminal(*args: str, columns: int = 200, rows: int = 50) -> str:
    """Standard output of ``pgbridge *args`` written to a pseudo-terminal *columns* wide."""
    code, out, err = await terminal_session(*args, columns=columns, rows=rows)
    assert code == 0, err
    return out


async def terminal_session(
    *args: str,
    columns: int = 200,
    rows: int = 50,
    typed: bytes | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Exit status, terminal output and standard error of ``pgbridge *args`` run with its
    standard output on a pseudo-terminal of *columns* x *rows*. With *typed*, standard input
    is that terminal too, and *typed* is what the user types (echoed in the output)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgbridge.cli",
        *args,
        stdin=terminal if typed is not None else asyncio.subprocess.DEVNULL,
        stdout=terminal,
        stderr=asyncio.subprocess.PIPE,
        env=env or cli_env(TERM="xterm-256color"),
    )
    os.close(terminal)
    if typed is not None:
        os.write(controller, typed)
    assert process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())

    def read_all() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal and all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    output = await asyncio.get_running_loop().run_in_executor(None, read_all)
    await asyncio.wait_for(process.wait(), 120)
    os.close(controller)
    assert process.returncode is not None
    return process.returncode, output.decode(), (await errors).decode()
