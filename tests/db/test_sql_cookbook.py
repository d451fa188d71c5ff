"""docs/sql.md: every cookbook query runs, on realistic runs, and gives the right answer;
every column of the views is documented.

The queries are read out of the Markdown itself, so an edit to the document
is tested as written. A new query needs a check here (a test fails until it
has one).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge
from tests.support.catalog import EVENTS_VIEW, RUNS_VIEW
from tests.support.postgres_server import DatabaseFactory
from tests.support.run_seeds import HOUR, Seeded, seed_agent_runs
from tests.support.sql_helpers import connected

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
EVENT_ID = re.compile(r"^[0-9]+-[0-9]+$")


def cookbook() -> dict[str, str]:
    """Each question (a ``###`` heading of the Cookbook) and the one SQL block under it."""
    section = DOC.read_text(encoding="utf-8").split("\n## Cookbook\n", 1)[1]
    recipes = {}
    for chunk in section.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        blocks = re.findall(r"```sql\n(.*?)```", body, re.DOTALL)
        assert len(blocks) == 1, f"{title!r} needs exactly one ```sql block, has {len(blocks)}"
        recipes[title.strip()] = blocks[0]
    return recipes


def documented_columns(view: str) -> list[str]:
    """The column names in the table under ``## `<view>` ``, in order."""
    section = DOC.read_text(encoding="utf-8").split(f"\n## `{view}`\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)


@pytest_asyncio.fixture(scope="module")
async def seeded(databases: DatabaseFactory) -> AsyncIterator[tuple[str, Seeded]]:
    """One database of agent runs for every query (they only read)."""
    dsn = await databases.create()
    async with PostgresStreamBridge(dsn) as bridge:
        seeds = await seed_agent_runs(bridge, dsn)
    yield dsn, seeds
    await databases.drop(dsn)


Rows = list[asyncpg.Record]
Check = Callable[[Rows, Seeded, asyncpg.Connection], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def answers(title: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        CHECKS[title] = check
        return check

    return register


def data(value: str | None) -> object:
    """A ``json`` column as the value it holds (asyncpg hands json over as text)."""
    return None if value is None else json.loads(value)


# -- the checks, one per question ------------------------------------------------------------


@answers("Runs that errored in the last day, and their last events")
async def _errored(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["run_id"], r["terminal_event"], r["event"]) for r in rows] == [
        ("run-dead", "dead_letter", "dead_letter"),
        ("run-dead", "dead_letter", "token"),
        ("run-errored-recent", "error", "error"),
        ("run-errored-recent", "error", "tool_call"),
        ("run-errored-recent", "error", "token"),
    ]
    assert data(rows[2]["data"]) == {"message": "rate limited by the model provider"}


@answers("A run's full transcript")
async def _transcript(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["event"], data(r["data"])) for r in rows] == seeds.events["run-42"]
    assert [r["event_id"].split("-")[1] for r in rows] == [str(seq) for seq in range(1, 8)]
    assert all(EVENT_ID.match(r["event_id"]) for r in rows)
    times = [r["created_at"] for r in rows]
    assert times == sorted(times) and times[-1] - times[0] == timedelta(seconds=90)


@answers("The text a run streamed")
async def _text(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [r["text"] for r in rows] == ["It is sunny in Paris."]


@answers("Everything after an event ID a client saw")
async def _after(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["event_id"].split("-")[1], r["event"]) for r in rows] == [
        ("5", "token"),
        ("6", "token"),
        ("7", "end"),
    ]


@answers("Events per minute over the last hour")
async def _per_minute(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    # The same count made another way: raw milliseconds, bucketed in Python.
    stamps = await conn.fetch(
        "SELECT created_ms FROM run_events "
        "WHERE created_ms > extract(epoch FROM now() - interval '1 hour') * 1000"
    )
    expected = Counter(row["created_ms"] // 60_000 for row in stamps)
    assert {int(r["minute"].timestamp()) // 60: r["events"] for r in rows} == expected
    # run-dead's end, run-42's 7, the two waiting runs' 2 each, run-live's 5, run-stuck's 1, run-fast's 2
    assert sum(r["events"] for r in rows) == 20
    assert [r["minute"] for r in rows] == sorted(r["minute"] for r in rows)


@answers("The slowest runs of the last day")
async def _slowest(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["run_id"], r["duration"]) for r in rows[:3]] == [
        ("run-dead", timedelta(minutes=65)),
        ("run-slow", timedelta(hours=1)),
        ("run-trimmed", timedelta(minutes=30)),
    ]
    assert len(rows) == 5 and rows[0]["terminal_event"] == "dead_letter"


@answers("Who is waiting for input, for how long, and what they asked")
async def _waiting(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["run_id"], r["event"], data(r["asked"])) for r in rows] == [
        ("run-waiting", "question", {"text": "Which city should I book?"}),
        ("run-waiting-2", "question", {"text": "Approve the refund of 40 EUR?"}),
    ]
    assert rows[0]["waiting_for"] >= timedelta(minutes=30) > rows[1]["waiting_for"] >= timedelta(minutes=5)


@answers("Active runs that have gone quiet")
async def _quiet(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [r["run_id"] for r in rows] == ["run-stuck"]
    assert rows[0]["silent_for"] >= timedelta(minutes=20)


@answers("Runs whose worker died")
async def _dead(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["run_id"], r["was"]) for r in rows] == [("run-dead", "active")]
    assert "presumed gone" in rows[0]["reason"]
    assert rows[0]["ended_at"] - rows[0]["last_heard_from"] >= timedelta(seconds=HOUR)


@answers("Time to first token")
async def _first_token(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    waited = {r["run_id"]: r["time_to_first_token"] for r in rows}
    assert set(waited) == {
        "run-42",
        "run-dead",
        "run-errored-recent",
        "run-waiting",
        "run-waiting-2",
        "run-live",
        "run-cancelled",
        "run-fast",
        "run-trimmed",
    }
    assert rows[0]["run_id"] == "run-trimmed"  # its first stored token is its 41st event
    assert waited["run-42"] == timedelta(seconds=45)  # thought, searched, read: 3 of 6 steps of 15 s
    assert waited["run-live"] == timedelta(0)


@answers("Which tools were called, and by how many runs")
async def _tools(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["tool"], r["calls"], r["runs"]) for r in rows] == [("search", 3, 3), ("browse", 1, 1)]


@answers("Runs started in the last day, by status")
async def _by_status(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [(r["status"], r["runs"], r["events"]) for r in rows] == [
        ("ended", 4, 7 + 2 + 2 + 50),
        ("active", 2, 5 + 1),
        ("awaiting_input", 2, 2 + 2),
        ("errored", 2, 3 + 2),
        ("cancelled", 1, 2),
    ]


@answers("What retention deleted, run by run")
async def _deleted(rows: Rows, seeds: Seeded, conn: asyncpg.Connection) -> None:
    assert [tuple(r.values())[:5] for r in rows] == [("run-trimmed", "ended", 50, 40, 10)]
    assert rows[0]["first_event_id"].endswith("-41")


# -- the tests ---------------------------------------------------------------------------------------


def test_every_cookbook_query_has_a_check() -> None:
    assert sorted(cookbook()) == sorted(CHECKS)


@pytest.mark.parametrize("question", sorted(CHECKS))
async def test_cookbook_query_answers_its_question(seeded: tuple[str, Seeded], question: str) -> None:
    dsn, seeds = seeded
    async with connected(dsn) as conn:
        rows = await conn.fetch(cookbook()[question])
        await CHECKS[question](rows, seeds, conn)


@pytest.mark.parametrize("view", [RUNS_VIEW, EVENTS_VIEW])
async def test_every_column_of_the_view_is_documented_in_order(dsn: str, view: str) -> None:
    async with connected(dsn) as conn:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            view,
        )
    assert documented_columns(view) == [c["column_name"] for c in columns]
