"""The sharding plan of docs/scaling.md, checked against the code.

Plan: ``run_streams`` and ``run_events`` distributed by ``run_id`` and
co-located. That routes every statement to one shard only if it filters on
a single run id. Two checks:

* a workload (publish, group commit, publish_many, terminals, live
  subscribers in another bridge, replay from a cursor, resolve, run info)
  on the topology's primary, whose ``pg_stat_statements`` (``track = all``,
  so the statements inside ``pgbridge_append_batch`` count too) must show
  only statements that touch no pgbridge table, filter on one run id, or
  are the poll or the feeds' read of what woke, named in docs/scaling.md; and, with ``batch_per_run``, that
  every append call touched exactly one run;
* every statement of the SQL registry (``pgbridge/sql/queries.py``) that
  touches the tables without a single-run filter is named in
  docs/scaling.md's list of cross-run statements.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import asyncpg
import pytest

from pgbridge import HEARTBEAT_SENTINEL, PostgresStreamBridge, StreamStatus
from pgbridge.sql.queries import InspectQueries, Queries
from tests.support.helpers import collect, take
from tests.support.topology import ScaleDatabase

#: These tests start PostgreSQL servers of their own (.ci/run skips them in its second pass).
pytestmark = pytest.mark.own_server

TABLES = re.compile(r"\b(run_streams|run_events)\b")
#: A predicate (or inserted value) naming one run: a parameter, or the batch function's loop
#: variable, or the one run of a batch function call whose events all belong to one run.
ONE_RUN = re.compile(
    r"\brun_id\s*=\s*(\$\d+|current_run|run_ids\[\$\d+\])"
    r"|VALUES\s*\(\s*(current_run|run_ids\[\$\d+\])"
    r"|\(\s*run_id\b[^)]*\)\s*VALUES\s*\(\s*\$1\b"  # INSERT of one row whose run_id is $1
    r"|pgbridge_stream_append\(\s*\$1::text\b"  # the Durable Streams append: its run is $1
)
#: The group-commit call: arrays of run ids, one per event.
APPEND_CALL = re.compile(r"pgbridge_append_batch\(")
#: The set-based statements inside it (revision 0010), over the call's arrays: they touch the
#: runs of the call, one run with batch_per_run (checked below: one lock per call).
APPEND_INSERT = re.compile(r"unnest\((run_ids|up_run)\b")
#: Cross-run statements the workload may run, each named in docs/scaling.md.
POLL = re.compile(r"run_id\s*=\s*ANY\(\$1::text\[\]\)")
#: The feeds' shared read of every run that woke (read_runs_events_after): run ids and cursors as arrays.
WOKEN = re.compile(r"unnest\(\$1::text\[\],\s*\$2::bigint\[\]\)\s*WITH ORDINALITY")
#: Run ids passed as an array: the statement may touch several runs.
RUN_ARRAY = re.compile(r"\$1::text\[\]")
SCALING_DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


async def _workload(scale_db: ScaleDatabase) -> None:
    async with (
        PostgresStreamBridge(scale_db.primary, batch_per_run=True) as writer,
        PostgresStreamBridge(scale_db.primary, poll_interval=0.2) as reader,
    ):
        runs = [f"shard-{i}" for i in range(8)]
        live = [asyncio.create_task(collect(reader.subscribe(run), timeout=60)) for run in runs]

        async def one_run(run: str) -> None:
            for i in range(15):
                await writer.publish(run, "token", {"i": i})
            await writer.publish_many(run, [("token", {"i": i}) for i in range(15, 20)])
            await writer.mark_awaiting_input(run)
            await writer.publish_terminal(run, StreamStatus.ENDED)

        await asyncio.gather(*(one_run(run) for run in runs))
        received = await asyncio.gather(*live)
        middle = received[0][9].id
        replay = await collect(reader.subscribe(runs[0], last_event_id=middle), timeout=30)
        await reader.resolve(runs[1], received[1][3].id)
        await reader.run_info(runs[2])
        await take(writer.subscribe(runs[3]), 3)
        # A subscriber left idle for a while: the poll (the safety net) must check it.
        idle = reader.subscribe("shard-idle", heartbeat_interval=1.0)
        assert await anext(idle) is HEARTBEAT_SENTINEL  # a second of polls every 0.2 s
        await idle.aclose()
    assert all(len(events) == 21 for events in received)
    assert len(replay) == 11


async def test_every_statement_of_publish_subscribe_and_replay_routes_to_one_run_id(
    scale_db: ScaleDatabase,
) -> None:
    admin = await asyncpg.connect(scale_db.primary)
    try:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await _workload(scale_db)
        rows = await admin.fetch(
            "SELECT query, calls FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await admin.close()
    statements = {row["query"]: row["calls"] for row in rows if "pg_stat_statements" not in row["query"]}
    touching = {query: calls for query, calls in statements.items() if TABLES.search(query)}

    unexplained = [
        query
        for query in touching
        if not (ONE_RUN.search(query) or APPEND_CALL.search(query) or APPEND_INSERT.search(query))
        and not (POLL.search(query) or WOKEN.search(query))
    ]
    assert unexplained == [], "statements that would span shards:\n" + "\n---\n".join(unexplained)
    assert any("LEFT JOIN LATERAL" in q for q in touching), "the workload replayed"
    assert any(POLL.search(q) for q in touching), "the workload polled"
    assert any(WOKEN.search(q) for q in touching), "the feeds read what woke"

    # With batch_per_run, each append call held one run's events: it took the one-run path of
    # pgbridge_append_batch (revision 0010), whose single-row lock ran once per call, and never
    # the many-run lock of INSERT ... SELECT DISTINCT ... ON CONFLICT.
    appends = sum(calls for q, calls in statements.items() if APPEND_CALL.search(q) and "FROM" in q)
    locks = sum(calls for q, calls in touching.items() if "FOR UPDATE" in q and "run_ids[" in q)
    many_run_locks = sum(
        calls for q, calls in touching.items() if "SELECT DISTINCT" in q and "run_streams" in q
    )
    assert appends > 0
    assert (locks, many_run_locks) == (appends, 0)


def test_every_cross_run_statement_of_the_sql_registry_is_named_in_the_sharding_plan() -> None:
    queries = Queries.for_schema("public")
    registry: dict[str, str] = {}
    for field in fields(Queries):
        value = getattr(queries, field.name)
        if is_dataclass(value):  # a group of statements: retention, inspection, streams
            registry |= {f"{field.name}.{f.name}": getattr(value, f.name) for f in fields(value)}
        elif field.name != "schema":
            registry[field.name] = value
    inspect = InspectQueries.for_schema("public")  # pgbridge runs / events / stats
    registry |= {f"inspect.{f.name}": getattr(inspect, f.name) for f in fields(inspect) if f.name != "schema"}
    cross_run = sorted(
        name
        for name, sql in registry.items()
        if (TABLES.search(sql) or RUN_ARRAY.search(sql) or "pgbridge_" in sql) and not ONE_RUN.search(sql)
    )
    plan = SCALING_DOC.read_text()
    missing = [name for name in cross_run if f"`{name.split('.')[-1]}`" not in plan]
    assert missing == [], f"cross-run statements not listed in docs/scaling.md: {missing}"
    assert "run_heads" in cross_run  # the poll: a cross-run statement on a reader's path
    assert "read_runs_events_after" in cross_run  # the feeds' read of every run that woke: the other
    assert "append_events" in cross_run  # group commit, single-run only with batch_per_run
