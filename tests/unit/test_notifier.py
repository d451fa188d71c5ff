"""The NOTIFY after commit is sent off the publisher's path (pgbridge.engine.notify)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pgbridge.engine.notify import Notifier


class FakeDb:
    """Records when the NOTIFY statement is sent, and what it carries."""

    def __init__(self, log: list[str]) -> None:
        self.queries = SimpleNamespace(notify_runs="notify_runs")
        self.log = log
        self.sent: list[tuple[Any, ...]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.log.append("notify sent")
        self.sent.append(args)
        return []


async def test_the_publisher_resumes_before_the_notify_is_sent() -> None:
    log: list[str] = []
    db = FakeDb(log)
    notifier = Notifier(db, "chan")  # type: ignore[arg-type]
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def publisher() -> None:
        await answer
        log.append("publisher answered")

    waiting = asyncio.create_task(publisher())
    await asyncio.sleep(0)  # the publisher waits for its commit
    # What a committed batch does: report its events, then answer its callers.
    notifier.notify("run-a", 3)
    notifier.notify("run-b", 1)
    answer.set_result(None)
    await waiting
    await notifier.close()
    assert log == ["publisher answered", "notify sent"]
    assert db.sent == [("chan", [3, 1], ["run-a", "run-b"], [None, None])]  # one statement for both runs


async def test_close_sends_what_is_pending_even_before_the_task_started() -> None:
    db = FakeDb([])
    notifier = Notifier(db, "chan")  # type: ignore[arg-type]
    notifier.notify("run", None)
    await notifier.close()
    assert db.sent == [("chan", [None], ["run"], [None])]


async def test_a_wake_up_carries_its_runs_committed_events_in_order() -> None:
    db = FakeDb([])
    notifier = Notifier(db, "chan")  # type: ignore[arg-type]
    notifier.notify("run", 1, (1, 1000, "token", '{"t":"a"}', False, None))
    notifier.notify("run", 2, (2, 1001, "end", "null", True, 1000))
    await notifier.close()
    assert db.sent == [
        (
            "chan",
            [2],
            ["run"],
            ['[[1,1000,"token","{\\"t\\":\\"a\\"}",false,null],[2,1001,"end","null",true,1000]]'],
        )
    ]


async def test_a_run_whose_events_outgrow_a_payload_is_woken_without_them() -> None:
    db = FakeDb([])
    notifier = Notifier(db, "chan")  # type: ignore[arg-type]
    big = '"' + "x" * 3_000 + '"'
    for seq in (1, 2, 3):
        notifier.notify("run", seq, (seq, 1000, "token", big, False, 1000))
    notifier.notify("small", 1, (1, 1000, "token", "1", False, None))
    await notifier.close()
    assert db.sent == [("chan", [3, 1], ["run", "small"], [None, '[[1,1000,"token","1",false,null]]'])]


async def test_a_wake_up_that_says_re_read_carries_nothing() -> None:
    db = FakeDb([])
    notifier = Notifier(db, "chan")  # type: ignore[arg-type]
    notifier.notify("run", 1, (1, 1000, "token", "1", False, None))
    notifier.notify("run", None)  # retention deleted events: every reader re-reads
    notifier.notify("run", 2, (2, 1001, "token", "2", False, 1000))
    await notifier.close()
    assert db.sent == [("chan", [None], ["run"], [None])]
