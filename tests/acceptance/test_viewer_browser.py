"""The live run viewer in a real browser (headless Chromium driven by Playwright).

The browser is the system's Chromium (Debian's ``chromium`` package, which
``.ci/run`` installs), not a download of Playwright's own. Without one the
test is skipped, unless ``PGBRIDGE_REQUIRE_BROWSER`` is set (CI sets it), in
which case it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from pgbridge import PostgresStreamBridge, TokenKeyring
from pgbridge.tokens import issue_read_token
from tests.support.http_server import TEST_KEYS, ServerProcess, write_keys

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

#: What the machine's closed network and a root user need (see /work/.library/env).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    configured = os.environ.get("PGBRIDGE_CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = find_chromium()
    if executable is None:
        message = "no Chromium found: install Debian's chromium package, or set PGBRIDGE_CHROMIUM"
        if os.environ.get("PGBRIDGE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


def keyed_server(dsn: str, folder: Path) -> ServerProcess:
    """A server with a global token and read-token keys (TEST_KEYS)."""
    return ServerProcess(dsn, extra_args=("--token-secret-file", str(write_keys(folder))))


def read_token(run_id: str, ttl: float = 600) -> str:
    return issue_read_token(TokenKeyring.parse(TEST_KEYS), run_id, ttl)


async def shown_ids(page: Page) -> list[str]:
    ids: list[str] = await page.eval_on_selector_all("tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    return ids


async def test_the_viewer_shows_every_event_once_in_order_across_a_server_kill_and_restart(
    dsn: str, browser: Browser, tmp_path: Path
) -> None:
    """The page holds a read token of its run (no global token in its URL), which the new
    server process accepts as the old one did: the keys are the servers', not a process's."""
    server = keyed_server(dsn, tmp_path)
    await server.start()
    run_id = "agent/run-42"  # a "/" in the id travels as %2F
    try:
        async with PostgresStreamBridge(dsn) as publisher:
            published = [
                await publisher.publish(run_id, "token", {"n": i, "text": f"tok {i}"}) for i in range(5)
            ]
            page = await browser.new_page()
            await page.goto(f"{server.url}/runs/agent%2Frun-42/view?token={read_token(run_id)}")
            await page.wait_for_function("() => document.querySelectorAll('tr[data-id]').length >= 5")
            for i in range(5, 10):
                published.append(await publisher.publish(run_id, "token", {"n": i}))
                await asyncio.sleep(0.05)

            await server.kill()  # mid-run, no goodbye to the browser
            for i in range(10, 20):  # published while no server is up
                published.append(await publisher.publish(run_id, "token", {"n": i}))
            await asyncio.sleep(0.5)
            await server.start()  # a new process: nothing of the old one's memory

            for i in range(20, 30):
                published.append(await publisher.publish(run_id, "token", {"n": i}))
            published.append(await publisher.publish_end(run_id))
            await page.wait_for_function(
                "() => document.getElementById('connection').textContent.startsWith('finished')",
                timeout=60_000,
            )
            assert await shown_ids(page) == published
            assert await page.inner_text("#status") == "ended"
            screenshot = os.environ.get("PGBRIDGE_VIEWER_SCREENSHOT")
            if screenshot:
                await page.set_viewport_size({"width": 900, "height": 460})
                await page.evaluate("() => window.scrollTo(0, 0)")
                await page.screenshot(path=screenshot)
    finally:
        await server.stop()


async def test_the_viewer_header_counts_follow_its_rows(dsn: str, browser: Browser, tmp_path: Path) -> None:
    server = keyed_server(dsn, tmp_path)
    await server.start()
    try:
        async with PostgresStreamBridge(dsn) as publisher:
            await publisher.publish("counted", "token", 0)
            page = await browser.new_page()
            await page.goto(f"{server.url}/runs/counted/view?token={read_token('counted')}")
            await page.wait_for_function(
                "() => document.getElementById('counts').textContent.startsWith('1 ')"
            )
            for i in range(1, 4):
                await publisher.publish("counted", "token", i)
            await page.wait_for_function("() => document.querySelectorAll('tr[data-id]').length === 4")
            # With the rows, well before the page's periodic (5 s) status refresh.
            await page.wait_for_function(
                "() => document.getElementById('counts').textContent === '4 published · 4 retained'",
                timeout=1500,
            )
    finally:
        await server.stop()


async def test_the_runs_page_lists_runs_linked_to_their_viewers(dsn: str, browser: Browser) -> None:
    server = ServerProcess(dsn)
    await server.start()
    try:
        async with PostgresStreamBridge(dsn) as publisher:
            await publisher.publish("listed/one", "token", 0)
            await publisher.publish_end("listed/one")
            await publisher.publish("listed-two", "token", 0)
        page = await browser.new_page()
        await page.goto(f"{server.url}/?access_token={server.token}")
        await page.click("a[href^='/ui/runs']")  # the index page links to the runs page
        await page.wait_for_function("() => document.querySelectorAll('tr[data-run]').length === 2")
        rows = await page.eval_on_selector_all(
            "tr[data-run]", "rows => rows.map(r => [...r.cells].slice(0, 3).map(c => c.textContent))"
        )
        assert sorted(rows) == [["listed-two", "active", "1"], ["listed/one", "ended", "2"]]
        await page.click("text=listed/one")
        await page.wait_for_function(
            "() => document.getElementById('connection').textContent.startsWith('finished')"
        )
        assert await shown_ids(page) != []
    finally:
        await server.stop()


async def test_the_viewer_stops_with_a_clear_message_when_its_read_token_expires(
    dsn: str, browser: Browser, tmp_path: Path
) -> None:
    """The server ends the page's stream at the token's expiry and refuses it after; the page
    says so and stops asking. Events published afterwards never reach it."""
    server = keyed_server(dsn, tmp_path)
    await server.start()
    try:
        async with PostgresStreamBridge(dsn) as publisher:
            before = [await publisher.publish("expiring", "token", i) for i in range(3)]
            page = await browser.new_page()
            await page.goto(f"{server.url}/runs/expiring/view?token={read_token('expiring', ttl=3)}")
            await page.wait_for_function("() => document.querySelectorAll('tr[data-id]').length === 3")
            await page.wait_for_function(
                "() => document.getElementById('connection').textContent.startsWith('stopped')",
                timeout=30_000,
            )
            for i in range(3, 6):
                await publisher.publish("expiring", "token", i)
            assert await page.inner_text("#status") == "not authorized"
            await asyncio.sleep(1.5)  # what a reconnecting page would have shown by now
            assert await shown_ids(page) == before
    finally:
        await server.stop()
