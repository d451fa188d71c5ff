"""docs/durable-streams.md: its curl block, run as written (twice) against ``pgbridge serve
--token``, gets no error: it carries the token, and a second run does not collide with the first."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory

DOC = Path(__file__).resolve().parents[2] / "docs" / "durable-streams.md"
#: Every curl of the block gives up after this (the SSE read would last a minute).
CURL_SECONDS = 3


@pytest_asyncio.fixture
async def server(databases: DatabaseFactory) -> AsyncIterator[ServerProcess]:
    url = await databases.create()
    process = ServerProcess(url, token="doc-s3cret", extra_args=("--long-poll-timeout", "1"))
    await process.start()
    yield process
    await process.stop()
    await databases.drop(url)


def curl_block() -> str:
    (block, *_) = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert "curl" in block
    return block


async def run_block(server: ServerProcess) -> str:
    script = f'curl() {{ command curl --max-time {CURL_SECONDS} -sS "$@"; }}\n' + curl_block().replace(
        "http://127.0.0.1:8000", server.url
    )
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SECRET": server.token},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return out.decode()


async def test_the_curl_block_runs_twice_with_the_token_and_no_error(server: ServerProcess) -> None:
    for _ in range(2):
        output = await run_block(server)
        statuses = [int(code) for code in re.findall(r"HTTP/[0-9.]+ ([0-9]{3}) ", output)]
        assert len(statuses) == 9, output  # one per `curl -i`/`-I`
        assert all(status < 400 for status in statuses), output
        assert '[{"id":1},{"id":2},{"id":3}]' in output
        assert "[]HTTP/" in output  # the read at the tail offset HEAD gave: nothing after it
