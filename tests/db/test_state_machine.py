"""The bridge against a pure model of docs/behaviour.md, driven by random operations (hypothesis).

Random publishes (single and batched, ordinary events named like terminals
included), terminals of every kind, ``mark_awaiting_input``, resolves and
subscriptions from random cursors (valid, evicted, foreign, past the end,
malformed), subscriber lineages that stop and restart from the last ID they
printed, retention passes that trim runs, and bridge restarts. After each
step the bridge's answer must equal :mod:`tests.support.spec_model`'s; the stored
rows must agree with it too. Each example gets a fresh database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pgbridge import (
    HEARTBEAT_SENTINEL,
    TERMINAL_STATES,
    PostgresStreamBridge,
    RetentionPolicy,
    StreamEvent,
    StreamStatus,
    StreamTerminatedError,
)
from tests.support.postgres_server import DatabaseFactory
from tests.support.spec_model import TERMINAL_EVENT_NAMES, ModelRun, split_id
from tests.support.sql_helpers import connected

T = TypeVar("T")

RUN_IDS = ("run/a", "run β", "run-c")
EVENT_NAMES = ("token", "error", "end", "values")  # ordinary events may carry terminal-looking names
COVERED: Counter[str] = Counter()
NEVER = 10**8  # seconds: retention rules that must not fire in this test

_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=5,
)
malformed_cursors = st.one_of(
    st.sampled_from(
        ["", "-", "1-", "-1", "1--1", "1-2-3", " 1-1", "1-1 ", "١-١", "1-1\n", "9" * 65 + "-1", "0x1-1"]
    ),
    st.text(max_size=70),
)


@dataclass
class Lineage:
    """A subscriber that stops and restarts from the last ID it printed."""

    run_id: str
    cursor: str | None


class BridgeAgainstModel(RuleBasedStateMachine):
    databases: DatabaseFactory

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dsn = self.wait(self.databases.create())
        self.bridge = self.wait(self.started_bridge())
        self.runs = {run_id: ModelRun() for run_id in RUN_IDS}
        self.lineages: list[Lineage] = []
        self.ids_seen: list[str] = []

    def wait(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(work, 30))

    async def started_bridge(self) -> PostgresStreamBridge:
        bridge = PostgresStreamBridge(self.dsn, poll_interval=0.2)
        await bridge.start()
        return bridge

    def teardown(self) -> None:
        self.wait(self.bridge.close())
        self.wait(self.databases.drop(self.dsn))
        self.loop.close()

    def exists(self, run_id: str) -> bool:
        return self.runs[run_id].last > 0

    # -- cursors -----------------------------------------------------------------

    def cursors(self, run_id: str) -> st.SearchStrategy[str | None]:
        """Cursors for *run_id*: mostly its own IDs (retained or evicted), then foreign,
        past-the-end, ``<ms>-0`` and malformed ones, and ``None``."""
        run = self.runs[run_id]
        own = [event.id for event in run.events]
        choices: list[st.SearchStrategy[str | None]] = [st.none(), malformed_cursors]
        if own:
            choices += [st.sampled_from(own)] * 4
        if self.ids_seen:
            seen = st.sampled_from(self.ids_seen)
            choices += [
                seen,  # often another run's: foreign
                seen.map(lambda i: f"{split_id(i)[0] + 1}-{split_id(i)[1]}"),  # right seq, wrong ms
                seen.map(lambda i: f"{split_id(i)[0]}-0"),
                seen.map(lambda i: f"{split_id(i)[0]}-{run.last + 1 + split_id(i)[1]}"),  # past the end
            ]
        return st.one_of(choices)

    # -- writes ------------------------------------------------------------------

    @rule(run_id=st.sampled_from(RUN_IDS), event=st.sampled_from(EVENT_NAMES), data=json_values)
    def publish(self, run_id: str, event: str, data: Any) -> None:
        run = self.runs[run_id]
        if run.terminal is not None:
            self.expect_refused(self.bridge.publish(run_id, event, data))
            return
        event_id = self.wait(self.bridge.publish(run_id, event, data))
        run.append(event_id, event, data)
        self.ids_seen.append(event_id)

    @rule(run_id=st.sampled_from(RUN_IDS), batch=st.lists(json_values, min_size=1, max_size=8))
    def publish_many(self, run_id: str, batch: list[Any]) -> None:
        run = self.runs[run_id]
        events = [("token", data) for data in batch]
        if run.terminal is not None:
            self.expect_refused(self.bridge.publish_many(run_id, events))
            return
        ids = self.wait(self.bridge.publish_many(run_id, events))
        assert len(ids) == len(batch)
        for event_id, data in zip(ids, batch, strict=True):
            run.append(event_id, "token", data)
        self.ids_seen += ids

    def expect_refused(self, publish: Coroutine[Any, Any, object]) -> None:
        try:
            self.wait(publish)
        except StreamTerminatedError:
            return
        raise AssertionError("a publish after the terminal event was accepted")

    @rule(run_id=st.sampled_from(RUN_IDS), kind=st.sampled_from(sorted(TERMINAL_STATES)), data=json_values)
    def publish_terminal(self, run_id: str, kind: StreamStatus, data: Any) -> None:
        run = self.runs[run_id]
        winner = run.terminal
        event_id = self.wait(self.bridge.publish_terminal(run_id, kind, data))
        if winner is not None:
            assert event_id == winner.id, "a later terminal must return the winning event's ID"
            return
        run.append(event_id, TERMINAL_EVENT_NAMES[kind.value], data, terminal=True)
        run.status = kind.value
        self.ids_seen.append(event_id)

    @rule(run_id=st.sampled_from(RUN_IDS))
    def mark_awaiting_input(self, run_id: str) -> None:
        self.wait(self.bridge.mark_awaiting_input(run_id))
        run = self.runs[run_id]
        if self.exists(run_id) and run.status == "active":
            run.status = "awaiting_input"

    @rule(keep=st.integers(0, 4))
    def retention_pass(self, keep: int) -> None:
        policy = RetentionPolicy(
            max_events_per_run=keep,
            ended_run_ttl=None,
            tombstone_ttl=None,
            active_timeout=NEVER,
            awaiting_input_timeout=NEVER,
        )
        report = self.wait(self.bridge.run_retention(policy))
        expected = sum(run.trim_to_newest(keep) for run in self.runs.values() if run.last > 0)
        assert report.events_deleted == expected
        assert (report.runs_deleted, report.runs_dead_lettered) == (0, 0)

    @rule()
    def restart_bridge(self) -> None:
        """A process restart: nothing in memory survives, everything stored does."""
        self.wait(self.bridge.close())
        self.bridge = self.wait(self.started_bridge())

    # -- reads -------------------------------------------------------------------

    @rule(run_id=st.sampled_from(RUN_IDS), data=st.data())
    def resolve(self, run_id: str, data: st.DataObject) -> None:
        cursor = data.draw(self.cursors(run_id), label="cursor")
        expected = self.runs[run_id].resolve(cursor)
        COVERED[f"resolve {expected.status}"] += 1
        assert self.wait(self.bridge.resolve(run_id, cursor)) == expected

    @rule(run_id=st.sampled_from(RUN_IDS), data=st.data())
    def subscribe_from_a_cursor(self, run_id: str, data: st.DataObject) -> None:
        cursor = data.draw(self.cursors(run_id), label="cursor")
        lineage = Lineage(run_id, cursor)
        self.read_on(lineage)
        self.lineages.append(lineage)

    @precondition(lambda self: self.lineages)
    @rule(data=st.data())
    def restart_a_subscriber(self, data: st.DataObject) -> None:
        """Restart a subscriber from the last ID it printed: it must get exactly the remainder."""
        self.read_on(data.draw(st.sampled_from(self.lineages), label="lineage"))

    def read_on(self, lineage: Lineage) -> None:
        expected, returns = self.runs[lineage.run_id].subscription(lineage.cursor)
        COVERED[f"subscribe {self.runs[lineage.run_id].resolve(lineage.cursor).status}"] += 1
        got, returned = self.wait(self.read(lineage, len(expected)))
        assert got == expected
        assert returned == returns
        printed = [item.id for item in got if item.id]
        if printed:
            lineage.cursor = printed[-1]

    async def read(self, lineage: Lineage, count: int) -> tuple[list[StreamEvent], bool]:
        """The first *count* items of a new subscription, and whether it then returned."""
        stream = self.bridge.subscribe(lineage.run_id, last_event_id=lineage.cursor, heartbeat_interval=0.05)
        got: list[StreamEvent] = []
        try:
            while len(got) < count:
                item = await anext(stream)
                if item is not HEARTBEAT_SENTINEL:
                    got.append(item)
            following = await anext(stream, None)
            if following is not None and following is not HEARTBEAT_SENTINEL:
                got.append(following)  # one more than docs/behaviour.md allows: the comparison shows it
            return got, following is None
        finally:
            await stream.aclose()

    @invariant()
    def stored_runs_agree_with_the_model(self) -> None:
        rows = self.wait(self.stored_runs())
        expected = {
            run_id: (run.status, run.first, run.last, run.terminal.seq if run.terminal else None)
            for run_id, run in self.runs.items()
            if run.last > 0
        }
        assert rows == expected

    async def stored_runs(self) -> dict[str, tuple[str, int, int, int | None]]:
        async with connected(self.dsn) as conn:
            # A run's head as pgbridge reads it (its row lags its newest event: revision 0012),
            # and the row itself never more than 255 events behind.
            rows = await conn.fetch(
                "SELECT r.run_id, r.status, r.first_seq, h.last_seq, r.terminal_seq, r.last_seq AS row_seq "
                "FROM run_streams AS r CROSS JOIN LATERAL "
                "pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h"
            )
            retained = await conn.fetch(
                "SELECT run_id, min(seq) AS low, count(*) AS n FROM run_events GROUP BY run_id"
            )
        assert all(0 <= r["last_seq"] - r["row_seq"] < 256 for r in rows)
        for row in retained:  # the retained events are the one contiguous range first..last
            run = self.runs[row["run_id"]]
            assert (row["low"], row["n"]) == (run.first, run.last - run.first + 1)
        return {r["run_id"]: (r["status"], r["first_seq"], r["last_seq"], r["terminal_seq"]) for r in rows}


@pytest.mark.timeout(600)
def test_the_bridge_answers_as_the_model_of_spec_does(databases: DatabaseFactory) -> None:
    BridgeAgainstModel.databases = databases
    run_state_machine_as_test(
        BridgeAgainstModel,
        settings=settings(
            max_examples=25,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print("resume statuses exercised:", sorted(COVERED.items()))  # shown with pytest -s
