"""A subscriber's wake flag (pgbridge.engine.feed.Waiter): woken at once, or at its deadline.

Its timer is lazy (one per heartbeat interval, not one per wait), which must
never make a wait end before its own deadline nor after it.
"""

from __future__ import annotations

import asyncio

from pgbridge.engine.feed import Waiter


async def test_a_wait_returns_true_when_set() -> None:
    waiter = Waiter()
    waiting = asyncio.create_task(waiter.wait(5.0))
    await asyncio.sleep(0)
    waiter.set()
    assert await waiting is True
    waiter.close()


async def test_a_wait_on_a_flag_already_set_returns_at_once() -> None:
    waiter = Waiter()
    waiter.set()
    assert await waiter.wait(5.0) is True


async def test_a_wait_returns_false_at_its_deadline() -> None:
    waiter = Waiter()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await waiter.wait(0.05) is False
    assert loop.time() - started >= 0.05 - 0.002
    waiter.close()


async def test_a_later_deadline_is_not_cut_short_by_the_earlier_timer() -> None:
    """Woken early, then waiting again with a later deadline: the timer left from the first
    wait fires first, and must move on instead of ending the second wait."""
    waiter = Waiter()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(waiter.wait(0.05))
    await asyncio.sleep(0.01)
    waiter.set()
    assert await first is True
    waiter.clear()
    started = loop.time()
    assert await waiter.wait(0.2) is False
    assert loop.time() - started >= 0.2 - 0.002
    waiter.close()


async def test_a_shorter_deadline_is_kept_though_a_later_timer_exists() -> None:
    waiter = Waiter()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(waiter.wait(10.0))
    await asyncio.sleep(0)
    waiter.set()
    assert await first is True
    waiter.clear()
    started = loop.time()
    assert await waiter.wait(0.05) is False
    assert loop.time() - started < 5.0
    waiter.close()


async def test_a_set_after_a_wait_ended_is_kept_for_the_next_wait() -> None:
    waiter = Waiter()
    assert await waiter.wait(0.01) is False
    waiter.set()
    assert await waiter.wait(5.0) is True
    waiter.close()


async def test_close_cancels_the_timer() -> None:
    waiter = Waiter()
    waiting = asyncio.create_task(waiter.wait(30.0))
    await asyncio.sleep(0)
    waiter.set()
    await waiting
    waiter.close()
    loop = asyncio.get_running_loop()
    assert not any(
        getattr(handle, "_callback", None) == waiter._on_timer
        for handle in loop._scheduled  # type: ignore[attr-defined]
        if not handle.cancelled()
    )


async def test_a_wait_until_a_deadline_returns_false_when_the_loops_clock_reaches_it() -> None:
    waiter = Waiter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.05
    assert await waiter.wait_until(deadline) is False
    assert loop.time() >= deadline - 0.002
    waiter.close()


async def test_a_wait_until_a_deadline_returns_true_when_set_before_it() -> None:
    waiter = Waiter()
    waiting = asyncio.create_task(waiter.wait_until(asyncio.get_running_loop().time() + 5.0))
    await asyncio.sleep(0)
    waiter.set()
    assert await waiting is True
    waiter.close()
