"""The group-commit queue's own logic, with a fake batch runner (no database).

How requests become batches, how each caller is answered, and what a failure
means are decided here, in pure code; tests/db/test_group_commit.py and
tests/db/test_durable_streams_group_commit.py cover the same queue against a
real PostgreSQL, through the bridge's publishes and Durable Streams appends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from pgbridge.connector import Backoff
from pgbridge.engine.group_commit import (
    Failure,
    GroupCommit,
    Retry,
    classify_failure,
    is_retryable,
)
from pgbridge.exceptions import (
    DatabaseUnavailableError,
    PublishOutcomeUnknownError,
    RolledBackByConflictError,
    StreamBridgeError,
)

FAST = Backoff(initial=0.001, maximum=0.001)


class Runner:
    """A fake statement: records each batch, answers ``result-of-<request>``; can be held
    (a batch in flight) and told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.alone: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures: list[BaseException] = []

    async def send(self, requests: list[Any]) -> list[str]:
        self.batches.append(list(requests))
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return [f"result-of-{r}" for r in requests]

    async def send_alone(self, request: Any) -> str:
        self.alone.append(request)
        if request == "bad":
            raise StreamBridgeError("bad alone")
        return f"alone-{request}"


def identity(request: Any, result: str) -> str:
    return result


def queue(runner: Runner, **options: Any) -> GroupCommit[Any, str, str]:
    options.setdefault("max_in_flight", 1)
    options.setdefault("max_batch_size", 100)
    return GroupCommit(runner.send, options.pop("answer", identity), name="test-batch", **options)


async def until_sent(runner: Runner, batches: int) -> None:
    for _ in range(100):
        if len(runner.batches) >= batches:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {len(runner.batches)} batches were sent")


# -- batching ---------------------------------------------------------------------------


async def test_a_lone_request_is_sent_at_once_alone_and_answered_from_its_result() -> None:
    runner = Runner()
    commits = queue(runner)
    assert await commits.submit("a") == "result-of-a"
    assert await commits.submit("b") == "result-of-b"
    assert runner.batches == [["a"], ["b"]]
    assert (commits.batches, commits.requests) == (2, 2)


async def test_requests_that_arrive_while_a_batch_is_in_flight_share_the_next_batch() -> None:
    runner = Runner()
    commits = queue(runner)
    runner.gate.clear()
    first = asyncio.ensure_future(commits.submit("first"))
    await until_sent(runner, 1)
    rest = [asyncio.ensure_future(commits.submit(name)) for name in ("b", "c", "d")]
    await asyncio.sleep(0)
    assert runner.batches == [["first"]]  # the others wait for the slot
    runner.gate.set()
    assert await first == "result-of-first"
    assert await asyncio.gather(*rest) == ["result-of-b", "result-of-c", "result-of-d"]
    assert runner.batches == [["first"], ["b", "c", "d"]]


async def test_a_group_is_never_split_and_a_batch_holds_at_most_the_batch_size() -> None:
    runner = Runner()
    commits: GroupCommit[tuple[str, ...], str, str] = GroupCommit(
        runner.send, identity, name="test-batch", max_in_flight=1, max_batch_size=4, size_of=len
    )
    runner.gate.clear()
    held = asyncio.ensure_future(commits.submit(("x",)))
    await until_sent(runner, 1)
    groups = [("a", "a"), ("b", "b"), ("c", "c", "c", "c", "c"), ("d",)]
    waiting = [asyncio.ensure_future(commits.submit(group)) for group in groups]
    await asyncio.sleep(0)
    runner.gate.set()
    await asyncio.gather(held, *waiting)
    # Oldest first: two groups fill 4; the group of 5 is larger than a batch and goes alone.
    assert runner.batches[1:] == [[("a", "a"), ("b", "b")], [("c",) * 5], [("d",)]]
    assert commits.requests == 1 + 2 + 2 + 5 + 1


async def test_shared_out_the_queue_goes_over_every_free_slot() -> None:
    runner = Runner()
    commits = queue(runner, max_in_flight=3, share_out=True, next_turn=True)
    answers = await asyncio.gather(*(commits.submit(i) for i in range(7)))
    assert answers == [f"result-of-{i}" for i in range(7)]
    assert runner.batches == [[0, 1, 2], [3, 4], [5, 6]]


async def test_without_sharing_out_the_first_batch_is_filled_first() -> None:
    runner = Runner()
    commits = queue(runner, max_in_flight=3, max_batch_size=5, next_turn=True)
    await asyncio.gather(*(commits.submit(i) for i in range(7)))
    assert runner.batches == [[0, 1, 2, 3, 4], [5, 6]]


async def test_on_the_next_turn_every_request_of_this_turn_joins_one_batch() -> None:
    runner = Runner()
    commits = queue(runner, max_in_flight=4, next_turn=True)
    await asyncio.gather(*(commits.submit(i) for i in range(5)))
    assert runner.batches == [[0, 1, 2, 3, 4]]


async def test_at_once_each_request_that_finds_a_free_slot_goes_alone() -> None:
    runner = Runner()
    commits = queue(runner, max_in_flight=4)
    await asyncio.gather(*(commits.submit(i) for i in range(5)))
    assert runner.batches[:4] == [[0], [1], [2], [3]]
    assert runner.batches[4:] == [[4]]


async def test_per_key_batches_hold_one_key_and_the_others_keep_their_places() -> None:
    runner = Runner()
    commits = queue(runner, max_batch_size=2, batch_key=lambda request: request[0])
    runner.gate.clear()
    held = asyncio.ensure_future(commits.submit("x0"))
    await until_sent(runner, 1)
    names = ["a1", "b1", "a2", "b2", "a3", "c1"]
    waiting = [asyncio.ensure_future(commits.submit(name)) for name in names]
    await asyncio.sleep(0)
    runner.gate.set()
    assert await asyncio.gather(*waiting) == [f"result-of-{name}" for name in names]
    await held
    # a3 does not fit a's batch of 2 and waits, in order, behind it.
    assert runner.batches[1:] == [["a1", "a2"], ["b1", "b2"], ["a3"], ["c1"]]


async def test_a_batch_is_sent_in_lock_order_and_each_caller_gets_its_own_answer() -> None:
    runner = Runner()
    commits = queue(runner, next_turn=True, lock_order=lambda request: request[0])
    names = ["b1", "a1", "c1", "a2", "b2"]
    answers = await asyncio.gather(*(commits.submit(name) for name in names))
    assert runner.batches == [["a1", "a2", "b1", "b2", "c1"]]  # stable: arrival order within a key
    assert answers == [f"result-of-{name}" for name in names]


# -- answering --------------------------------------------------------------------------


async def test_what_answer_raises_is_that_callers_answer_alone() -> None:
    def answer(request: str, result: str) -> str:
        if request == "refused":
            raise StreamBridgeError("refused by its run")
        return result.upper()

    runner = Runner()
    commits = queue(runner, next_turn=True, answer=answer)
    answers = await asyncio.gather(
        commits.submit("a"), commits.submit("refused"), commits.submit("b"), return_exceptions=True
    )
    assert answers[0] == "RESULT-OF-A" and answers[2] == "RESULT-OF-B"
    assert isinstance(answers[1], StreamBridgeError) and str(answers[1]) == "refused by its run"
    assert runner.batches == [["a", "refused", "b"]]


async def test_committed_sees_the_whole_batch_before_any_caller_is_answered() -> None:
    seen: list[tuple[list[str], list[str]]] = []
    runner = Runner()
    callers: list[asyncio.Future[str]] = []

    def committed(requests: list[str], results: Sequence[str]) -> None:
        assert all(not task.done() for task in callers)
        seen.append((requests, list(results)))

    commits = queue(runner, next_turn=True, committed=committed)
    callers.extend(asyncio.ensure_future(commits.submit(name)) for name in ("a", "b"))
    await asyncio.gather(*callers)
    assert seen == [(["a", "b"], ["result-of-a", "result-of-b"])]


async def test_a_caller_that_went_away_leaves_the_batch_and_the_others_answered() -> None:
    runner = Runner()
    commits = queue(runner, next_turn=True)
    runner.gate.clear()
    gone = asyncio.ensure_future(commits.submit("gone"))
    stays = asyncio.ensure_future(commits.submit("stays"))
    await until_sent(runner, 1)
    gone.cancel()
    runner.gate.set()
    assert await stays == "result-of-stays"
    assert gone.cancelled()
    assert runner.batches == [["gone", "stays"]]  # it was sent all the same


async def test_a_batch_answered_with_the_wrong_number_of_results_fails_its_callers() -> None:
    async def send(requests: list[str]) -> list[str]:
        return ["only one"]

    commits: GroupCommit[str, str, str] = GroupCommit(
        send, identity, name="test-batch", max_in_flight=1, max_batch_size=10, next_turn=True
    )
    answers = await asyncio.gather(commits.submit("a"), commits.submit("b"), return_exceptions=True)
    assert all(isinstance(a, StreamBridgeError) and "answered 1 results" in str(a) for a in answers)


async def test_a_broken_callback_leaves_no_caller_waiting_forever() -> None:
    def committed(requests: list[str], results: Sequence[str]) -> None:
        raise RuntimeError("a bug in a callback")

    runner = Runner()
    commits = queue(runner, committed=committed)
    with pytest.raises(StreamBridgeError, match="ended without an answer"):
        await commits.submit("a")
    await commits.close()


async def test_close_waits_for_the_batches_in_flight_and_what_is_queued_behind_them() -> None:
    runner = Runner()
    commits = queue(runner)
    runner.gate.clear()
    callers = [asyncio.ensure_future(commits.submit(i)) for i in range(3)]
    await until_sent(runner, 1)
    closing = asyncio.ensure_future(commits.close())
    await asyncio.sleep(0)
    assert not closing.done()
    runner.gate.set()
    await closing
    assert all(caller.done() for caller in callers)
    assert runner.batches == [[0], [1, 2]]


# -- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-operation"), Failure.LOST),
        (ConnectionResetError("reset by peer"), Failure.LOST),
        (TimeoutError(), Failure.LOST),
        (PublishOutcomeUnknownError("lost"), Failure.LOST),
        (asyncpg.InterfaceError("connection is closed"), Failure.NOT_SENT),
        (asyncpg.exceptions.InternalClientError("cannot switch to state 11"), Failure.NOT_SENT),
        (DatabaseUnavailableError("no connection"), Failure.NOT_SENT),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), Failure.ABORTED),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), Failure.ABORTED),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), Failure.CONFLICT),
        (asyncpg.exceptions.SerializationError("could not serialize"), Failure.CONFLICT),
        (RolledBackByConflictError("rolled back"), Failure.CONFLICT),
        (asyncpg.exceptions.CheckViolationError("check"), Failure.REFUSED),
        (StreamBridgeError("something else"), Failure.REFUSED),
    ],
)
def test_each_failure_is_classified_once_for_every_user(exc: Exception, failure: Failure) -> None:
    assert classify_failure(exc) is failure
    assert is_retryable(exc) == (failure in (Failure.NOT_SENT, Failure.ABORTED, Failure.CONFLICT))


@pytest.mark.parametrize(
    "exc",
    [DatabaseUnavailableError("no connection"), asyncpg.exceptions.DeadlockDetectedError("deadlock")],
)
async def test_a_batch_that_wrote_nothing_is_sent_again(exc: Exception) -> None:
    runner = Runner()
    runner.failures = [exc, exc]
    commits = queue(runner, retry=Retry(5.0, FAST))
    assert await commits.submit("a") == "result-of-a"
    assert runner.batches == [["a"]] * 3
    assert commits.batches == 1


@pytest.mark.parametrize(
    "exc", [PublishOutcomeUnknownError("lost in flight"), asyncpg.exceptions.CheckViolationError("check")]
)
async def test_a_batch_that_may_have_committed_or_was_refused_is_not_sent_again(exc: Exception) -> None:
    runner = Runner()
    runner.failures = [exc]
    failed: list[tuple[list[str], Exception]] = []

    def report(requests: list[str], error: Exception) -> Exception:
        failed.append((requests, error))
        return error

    commits = queue(runner, retry=Retry(5.0, FAST), failed=report)
    with pytest.raises(type(exc)):
        await commits.submit("a")
    assert runner.batches == [["a"]]
    assert failed == [(["a"], exc)]


async def test_retries_stop_at_the_timeout_and_every_caller_gets_what_failed_says() -> None:
    runner = Runner()
    runner.failures = [DatabaseUnavailableError("down")] * 1000
    told = StreamBridgeError("told to the callers")
    commits = queue(runner, next_turn=True, retry=Retry(0.05, FAST), failed=lambda requests, exc: told)
    answers = await asyncio.gather(commits.submit("a"), commits.submit("b"), return_exceptions=True)
    assert list(answers) == [told, told]
    assert 1 < len(runner.batches) < 1000


async def test_without_a_retry_policy_a_batch_is_sent_once() -> None:
    runner = Runner()
    runner.failures = [DatabaseUnavailableError("down")]
    commits = queue(runner)
    with pytest.raises(DatabaseUnavailableError):
        await commits.submit("a")
    assert runner.batches == [["a"]]


async def test_a_refused_batch_is_sent_again_one_request_at_a_time_so_the_bad_one_fails_alone() -> None:
    runner = Runner()
    runner.failures = [asyncpg.exceptions.InvalidTextRepresentationError("not json")]
    commits = queue(runner, next_turn=True, send_alone=runner.send_alone)
    answers = await asyncio.gather(
        *(commits.submit(name) for name in ("a", "bad", "b")), return_exceptions=True
    )
    assert answers[0] == "alone-a" and answers[2] == "alone-b"
    assert isinstance(answers[1], StreamBridgeError) and str(answers[1]) == "bad alone"
    assert runner.alone == ["a", "bad", "b"]


@pytest.mark.parametrize(
    ("names", "exc"),
    [
        (("a", "b"), asyncpg.exceptions.AdminShutdownError("terminating connection")),
        (("a", "b"), ConnectionResetError("reset by peer")),
        (("a",), asyncpg.exceptions.CheckViolationError("check")),
    ],
)
async def test_a_lost_connection_or_a_lone_request_is_not_sent_again_alone(
    names: tuple[str, ...], exc: Exception
) -> None:
    runner = Runner()
    runner.failures = [exc]
    commits = queue(runner, next_turn=True, send_alone=runner.send_alone)
    answers = await asyncio.gather(*(commits.submit(name) for name in names), return_exceptions=True)
    assert all(answer is exc for answer in answers)
    assert runner.alone == []


async def test_shared_out_no_batch_is_smaller_than_the_minimum_share() -> None:
    runner = Runner()
    commits = queue(runner, max_in_flight=4, share_out=True, min_share=3, next_turn=True)
    await asyncio.gather(*(commits.submit(i) for i in range(7)))
    # Four free slots, but 7 requests make only two shares of at least 3.
    assert runner.batches == [[0, 1, 2, 3], [4, 5, 6]]


async def test_shared_out_a_queue_smaller_than_the_minimum_share_goes_as_one_batch() -> None:
    runner = Runner()
    commits = queue(runner, max_in_flight=4, share_out=True, min_share=50, next_turn=True)
    await asyncio.gather(*(commits.submit(i) for i in range(7)))
    assert runner.batches == [[0, 1, 2, 3, 4, 5, 6]]
