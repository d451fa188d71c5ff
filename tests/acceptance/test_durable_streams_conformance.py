"""The official Durable Streams server conformance suite (npm, pinned) against ``pgbridge serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.durable_streams_conformance import require_suite, run_suite
from tests.support.http_server import ServerProcess
from tests.support.postgres_server import DatabaseFactory

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

#: Suite groups this server does not implement yet (none since forks, PROTOCOL.md
#: 4.2, were built); any failure outside them fails this test.
NOT_YET_IMPLEMENTED: tuple[str, ...] = ()
#: Every test of the pinned suite but the 6 it skips (338 in all).
PASSED_FLOOR = 332


@pytest_asyncio.fixture
async def open_server(databases: DatabaseFactory) -> AsyncIterator[ServerProcess]:
    """``pgbridge serve`` without a token (the suite sends none), on a database of its own.

    The suite checks a CORS preflight from another origin: CORS is off unless
    configured, so the server is started with ``--cors-origin '*'``."""
    require_suite()
    url = await databases.create()
    # The suite's shortest long-poll test gives up after vitest's default 5 s.
    args = ("--long-poll-timeout", "3", "--cors-origin", "*")
    process = ServerProcess(url, token="", extra_args=args)
    await process.start()
    yield process
    await process.stop()
    await databases.drop(url)


@pytest.mark.timeout(1200)
async def test_official_conformance_suite_fails_no_implemented_test(
    open_server: ServerProcess, tmp_path: Path
) -> None:
    result = await run_suite(open_server.url, tmp_path / "conformance.json")
    unexpected = [name for name in result.failed if not name.startswith(NOT_YET_IMPLEMENTED)]
    flaky: list[str] = []
    if unexpected:
        # The suite's tests have 5 s limits, which a loaded shared machine can
        # miss: a test fails here only if it fails again when run on its own.
        rerun = await run_suite(open_server.url, tmp_path / "rerun.json", only=unexpected)
        flaky = [name for name in unexpected if name in rerun.passed]
        unexpected = [name for name in unexpected if name not in rerun.passed]
    print(
        f"\nDurable Streams conformance: {len(result.passed) + len(flaky)} passed, "
        f"{len(result.failed) - len(flaky)} failed (groups not implemented yet: "
        f"{', '.join(NOT_YET_IMPLEMENTED) or 'none'}), {len(result.skipped)} skipped; "
        f"{len(flaky)} passed only when re-run alone: {flaky}"
    )
    assert not unexpected, "\n\n".join(f"{name}\n{result.failed[name]}" for name in unexpected)
    assert len(result.passed) + len(flaky) >= PASSED_FLOOR
