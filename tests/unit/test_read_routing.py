"""The shared read of many runs (pgbridge.engine.replica.ReadRouter.read_many) routes each run
as a single read would: to the standby only when it has replayed what that run's reader was woken
for and its answer is as new as what the reader knows; the rest on the primary, in one statement."""

from __future__ import annotations

from collections.abc import Sequence

from pgbridge.engine.replica import Known, ReadRouter
from pgbridge.store.events import EventStore, Page, RunState


class FakeStore:
    """An EventStore stand-in: each run's state as this server holds it; records each call."""

    def __init__(self, heads: dict[str, int]) -> None:
        self.heads = heads
        self.calls: list[list[str]] = []

    async def read_many_after(self, reads: Sequence[tuple[str, int]], limit: int) -> list[Page]:
        self.calls.append([run_id for run_id, _ in reads])
        return [Page(state=RunState(exists=True, last_seq=self.heads[run_id])) for run_id, _ in reads]


def router(primary: FakeStore, replica: FakeStore, replayed: int) -> ReadRouter:
    routed = ReadRouter(primary)  # type: ignore[arg-type]
    routed._replica = replica  # type: ignore[assignment]
    routed.replayed_lsn = replayed

    async def no_newer_position() -> None:
        return None

    routed._refresh_replay_position = no_newer_position  # type: ignore[method-assign]
    return routed


async def test_each_run_goes_where_a_single_read_would_and_each_server_gets_one_statement() -> None:
    primary = FakeStore({"current": 5, "ahead": 5, "distrusted": 5, "short": 5})
    replica = FakeStore({"current": 5, "ahead": 5, "distrusted": 5, "short": 4})
    known = {
        "current": Known(last_seq=5, lsn=100),  # the standby replayed its wake-up: served there
        "ahead": Known(last_seq=5, lsn=200),  # woken at a position the standby has not replayed
        "distrusted": Known(last_seq=5, lsn=100, epoch=1),  # something happened nobody described
        "short": Known(last_seq=5, lsn=100),  # the standby's answer is older than what is known
    }
    routed = router(primary, replica, replayed=150)
    pages = await routed.read_many([(run, 0, k) for run, k in known.items()], 10)
    assert [page.state.last_seq for page in pages] == [5, 5, 5, 5]
    assert replica.calls == [["current", "short"]]
    assert primary.calls == [["ahead", "distrusted", "short"]]
    assert (routed.replica_reads, routed.primary_reads, routed.replica_short_reads) == (1, 3, 1)
    assert known["distrusted"].trusted  # the primary's answer covered what was distrusted


async def test_without_a_replica_every_run_is_read_on_the_primary_in_one_statement() -> None:
    primary = FakeStore({"a": 1, "b": 2})
    routed = ReadRouter(primary)  # type: ignore[arg-type]
    pages = await routed.read_many([("a", 0, Known()), ("b", 0, Known())], 10)
    assert [page.state.last_seq for page in pages] == [1, 2]
    assert primary.calls == [["a", "b"]]


def test_the_fake_has_the_stores_signature() -> None:
    assert FakeStore.read_many_after.__name__ in vars(EventStore)
