"""Faults for real, with an exact accounting of every event.

PostgreSQL crashed (``pg_ctl stop -m immediate``) and started again while
publisher and subscriber processes run; a publisher SIGKILLed mid-run. After
each: every event a publisher was told is committed is in the table, no event
a publisher was told failed is, and every subscriber received exactly the
committed events, once each, in seq order.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge, RetentionPolicy, migrate
from tests.support.postgres_server import RestartableServer, restartable_server

#: These tests start PostgreSQL servers of their own (.ci/run skips them in its second pass).
pytestmark = pytest.mark.own_server

RUN = "run"


@pytest.fixture
def crashable() -> Iterator[RestartableServer]:
    with restartable_server() as server:
        yield server


@pytest_asyncio.fixture
async def crashable_dsn(crashable: RestartableServer) -> AsyncIterator[str]:
    await migrate(crashable.dsn)
    yield crashable.dsn


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def read_until(process: asyncio.subprocess.Process, prefix: str, lines: list[str]) -> None:
    """Collect *process*'s lines into *lines* until one starts with *prefix*."""
    assert process.stdout is not None
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().rstrip("\n")
        assert line, f"process ended before printing {prefix!r}: {lines[-5:]}"
        lines.append(line)
        if line.startswith(prefix):
            return


async def drain(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        lines.append(raw.decode().rstrip("\n"))
    await process.wait()


async def stored_events(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT created_ms || '-' || seq AS id, event, data::text AS data FROM run_events "
            "WHERE run_id = $1 ORDER BY seq",
            RUN,
        )
    finally:
        await conn.close()


def received_ids(lines: list[str]) -> list[str]:
    """Event IDs a `pgbridge.cli.demo subscribe` process printed, in order."""
    return [line.split(" ", 1)[0] for line in lines if line[:1].isdigit()]


async def test_a_postgres_crash_loses_no_acknowledged_event_and_delivers_each_once(
    crashable: RestartableServer, crashable_dsn: str
) -> None:
    dsn = crashable_dsn
    subscribers = [await spawn("pgbridge.cli.demo", "subscribe", dsn, RUN) for _ in range(3)]
    subscriber_lines: list[list[str]] = [[] for _ in subscribers]
    for process, lines in zip(subscribers, subscriber_lines, strict=True):
        await read_until(process, "resume", lines)
    readers = [
        asyncio.ensure_future(drain(p, lines)) for p, lines in zip(subscribers, subscriber_lines, strict=True)
    ]

    publishers = {
        tag: await spawn("tests.support.processes.publish_through_faults", dsn, RUN, "150", "--tag", tag)
        for tag in ("p1", "p2")
    }
    publisher_lines: dict[str, list[str]] = {tag: [] for tag in publishers}
    for tag, process in publishers.items():
        await read_until(process, "ready", publisher_lines[tag])
    writers = [asyncio.ensure_future(drain(p, publisher_lines[t])) for t, p in publishers.items()]

    await asyncio.sleep(0.7)  # mid-run
    crashable.stop_immediately()
    await asyncio.sleep(1.0)  # publishers retry, subscribers heartbeat
    crashable.start()
    await asyncio.wait_for(asyncio.gather(*writers), 120)
    async with PostgresStreamBridge(dsn) as bridge:
        end_id = await bridge.publish_end(RUN)
    await asyncio.wait_for(asyncio.gather(*readers), 120)

    stored = await stored_events(dsn)
    stored_ids = [row["id"] for row in stored]
    stored_data = {row["data"] for row in stored}
    assert stored_ids[-1] == end_id
    outcomes: dict[str, int] = {"ok": 0, "unknown": 0, "failed": 0}
    for tag, lines in publisher_lines.items():
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind not in outcomes:
                continue  # "ready", or a warning the bridge logged
            index, *event_id = rest.split(" ")
            outcomes[kind] += 1
            data = json.dumps({"from": tag, "i": int(index)})
            if kind == "ok":
                assert event_id[0] in stored_ids  # acknowledged: committed
            elif kind == "failed":
                assert data not in stored_data  # reported not written: not written
    print("publish outcomes through the crash:", outcomes)
    assert outcomes["ok"] + outcomes["unknown"] + outcomes["failed"] == 300
    assert outcomes["ok"] > 0
    for lines in subscriber_lines:
        assert received_ids(lines) == stored_ids  # every committed event, once, in order


async def test_a_publisher_killed_mid_run_leaves_a_run_the_reaper_ends(
    crashable: RestartableServer, crashable_dsn: str
) -> None:
    dsn = crashable_dsn
    subscriber = await spawn("pgbridge.cli.demo", "subscribe", dsn, RUN)
    seen: list[str] = []
    await read_until(subscriber, "resume", seen)
    reading = asyncio.ensure_future(drain(subscriber, seen))
    publisher = await spawn(
        "tests.support.processes.publish_through_faults", dsn, RUN, "100000", "--tag", "p"
    )
    acknowledged: list[str] = []
    await read_until(publisher, "ok 20", acknowledged)
    publisher.send_signal(signal.SIGKILL)  # no goodbye, mid-publish
    await publisher.wait()

    # Silent for longer than a short active_timeout (backdating the run would rewrite its events'
    # times, and so their IDs, under the live subscriber).
    await asyncio.sleep(1.0)
    async with PostgresStreamBridge(dsn) as bridge:
        report = await bridge.run_retention(
            RetentionPolicy(ended_run_ttl=None, tombstone_ttl=None, active_timeout=0.5)
        )
        assert report.runs_dead_lettered == 1
        await asyncio.wait_for(reading, 60)
        stored_ids = [row["id"] for row in await stored_events(dsn)]
        assert received_ids(seen) == stored_ids  # everything committed, then the dead letter
        assert (await stored_events(dsn))[-1]["event"] == "dead_letter"
        acked = [line.split(" ")[2] for line in acknowledged[1:] if line.startswith("ok")]
        assert set(acked) <= set(stored_ids)
        for position, event_id in enumerate(stored_ids):
            resume = await bridge.resolve(RUN, event_id)
            assert (resume.status, resume.next_offset) == ("resumed", position + 2)


async def test_a_bridge_started_while_postgres_is_down_comes_up_when_it_is_back(
    crashable: RestartableServer, crashable_dsn: str
) -> None:
    crashable.stop_immediately()
    bridge = PostgresStreamBridge(crashable_dsn, connect_timeout=60)
    starting = asyncio.create_task(bridge.start())
    await asyncio.sleep(1.0)  # start() is retrying meanwhile
    assert not starting.done()
    await asyncio.to_thread(crashable.start)
    await asyncio.wait_for(starting, 60)
    try:
        assert await bridge.publish(RUN, "token", 1)
    finally:
        await bridge.close()
