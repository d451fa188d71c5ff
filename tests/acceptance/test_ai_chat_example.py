"""examples/ai_chat in a real browser (headless Chromium): a reload mid-answer picks up where it was.

The app is started with its one command as a real process on an empty
database; the page is driven as a person would (type, send, reload). With
``PGBRIDGE_AI_CHAT_SCREENSHOT=path.png`` the test saves the page as it
resumes (docs/images/ai-sdk-resume.png is made so).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from examples.ai_chat.model import ANSWER
from tests.acceptance.test_viewer_browser import CHROMIUM_FLAGS, find_chromium
from tests.support.http_server import free_port
from tests.support.postgres_server import DatabaseFactory

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

REPOSITORY = Path(__file__).resolve().parents[2]


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


@pytest_asyncio.fixture
async def app_url(databases: DatabaseFactory, tmp_path: Path) -> AsyncIterator[str]:
    """``python -m examples.ai_chat`` on an empty database (it migrates it), answering."""
    dsn = await databases.create_empty()
    port = free_port()
    log_path = tmp_path / "app.log"
    env = {**os.environ, "PGBRIDGE_DSN": dsn, "AI_CHAT_TOKEN_DELAY": "0.1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "examples.ai_chat",
            "--port",
            str(port),
            cwd=REPOSITORY,
            env=env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_ready(process, url, log_path)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        await databases.drop(dsn)


async def _wait_until_ready(process: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"the app exited:\n{_text(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/")).status_code == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the app did not answer in time:\n{_text(log_path)}")
            await asyncio.sleep(0.1)


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


async def answer_text(page: Page) -> list[str]:
    texts: list[str] = await page.eval_on_selector_all(
        ".assistant .text", "els => els.map(e => e.textContent)"
    )
    return texts


async def test_a_reload_mid_answer_resumes_it_whole_exactly_once(app_url: str, browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 820, "height": 400})
    await page.goto(app_url)
    await page.wait_for_function("() => document.getElementById('status').dataset.state === 'idle'")
    await page.click("#send")
    await page.wait_for_function(
        "() => (document.querySelector('.assistant .text')?.textContent ?? '').split(' ').length > 8"
    )
    before = (await answer_text(page))[0]
    assert before and ANSWER.startswith(before) and before != ANSWER  # mid-answer

    await page.reload()  # the page, and its request, are gone; the answer goes on in the app
    await page.wait_for_function("() => document.getElementById('status').dataset.state === 'resuming'")
    await page.wait_for_function(
        f"() => (document.querySelector('.assistant .text')?.textContent ?? '').length > {len(before) + 60}"
    )
    screenshot = os.environ.get("PGBRIDGE_AI_CHAT_SCREENSHOT")
    if screenshot:
        await page.screenshot(path=screenshot)
    await page.wait_for_function(
        "() => document.getElementById('status').dataset.state === 'finished'", timeout=60_000
    )
    assert await answer_text(page) == [ANSWER]  # replayed from its first chunk, once
    assert await page.inner_text(".user") == "What happens if I reload the page now?"
    reasoning = await page.inner_text(".assistant .reasoning")
    assert reasoning.startswith("The user asked something")
