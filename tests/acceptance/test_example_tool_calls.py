"""examples/tool_calls, run with its one command as a real process: the rolled-back tool call
leaves nothing, and each committed row is joined with its event (docs/transactions.md)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.support.cli import cli_env

#: Drives a whole process from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once


async def test_the_example_commits_rows_with_their_events_and_rolls_back_both(dsn: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.tool_calls",
        "--dsn",
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=cli_env(),
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    text = out.decode()
    assert process.returncode == 0, text
    for call, outcome in (("call-1", "committed"), ("call-2", "rolled back"), ("call-3", "committed")):
        assert f"-{call}: {outcome}" in text, text
    lines = text.splitlines()
    got = [line.split()[3] for line in lines if line.strip().startswith("subscriber got")]
    assert got == ["tool_result", "tool_result", "end"]
    joined = lines[lines.index("each row beside its event (one SQL query over both tables):") + 1 :]
    assert [row.split()[1] for row in joined] == ["search", "summarise"]
    assert [row.split()[2].split("-")[1] for row in joined] == ["1", "2"]  # no seq used by the rollback
