"""The official Durable Streams server conformance suite (npm, pinned) against ``pgbridge serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.durable_streams_conformance import require_suite, run_suite
from tests.http_server import ServerProcess
from tests.postgres_server import DatabaseFactory

#: Suite groups this server does not implement yet (forks, PROTOCOL.md 4.2);
#: any failure outside them fails this test.
NOT_YET_IMPLEMENTED = ("Fork - ",)


@pytest_asyncio.fixture
async def open_server(databases: DatabaseFactory) -> AsyncIterator[ServerProcess]:
    """``pgbridge serve`` without a token (the suite sends none), on a database of its own."""
    require_suite()
    url = await databases.create()
    # The suite's shortest long-poll test gives up after vitest's default 5 s.
    process = ServerProcess(url, token="", extra_args=("--long-poll-timeout", "3"))
    await process.start()
    yield process
    await process.stop()
    await databases.drop(url)


@pytest.mark.timeout(1200)
async def test_official_conformance_suite_fails_no_implemented_test(
    open_server: ServerProcess, tmp_path: Path
) -> None:
    result = await run_suite(open_server.url, tmp_path / "conformance.json")
    unexpected = {
        name: message for name, message in result.failed.items() if not name.startswith(NOT_YET_IMPLEMENTED)
    }
    print(
        f"\nDurable Streams conformance: {len(result.passed)} passed, {len(result.failed)} failed "
        f"({len(result.failed) - len(unexpected)} in groups not implemented yet), "
        f"{len(result.skipped)} skipped"
    )
    assert not unexpected, "\n\n".join(f"{name}\n{message}" for name, message in unexpected.items())
    assert len(result.passed) >= 240
