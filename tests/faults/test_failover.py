"""A primary failover on real servers, with an exact accounting (docs/reliability.md).

A primary and a streaming standby on loopback (tests/support/topology.py);
every client (publisher and subscriber processes, ``pgbridge serve``) is
given one multi-host DSN, ``host=primary,standby`` with
``target_session_attrs=read-write``, and finds the new primary by itself.
The primary is SIGKILLed with every process it started (a machine that
died), and the standby promoted (``pg_ctl promote``).

* Synchronous replication: no acknowledged event is lost, none is stored
  twice, and every subscriber continues from its cursor.
* Asynchronous replication, the standby cut off the primary's WAL (so it is
  provably behind): the acknowledged events it never received are lost, and
  counted; the runs go on at the same seqs on the new primary; every cursor
  naming a lost event resolves ``unknown`` (never ``resumed``), also at
  ``first_seq - 1`` after retention deleted it; a subscriber that yielded a
  lost event ends (``RunHistoryChangedError``, an SSE ``history_changed``
  frame) and one whose cursor survived goes on with the new history.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
import pytest_asyncio
from httpx_sse import aconnect_sse

from pgbridge import PostgresStreamBridge, ResumeResult, migrate
from pgbridge.ids import parse_event_id
from tests.support.http_server import ServerProcess
from tests.support.sql_helpers import evict_prefix
from tests.support.topology import (
    Topology,
    make_synchronous,
    missing_reason,
    running_topology,
    stop_replication,
    wait_for_standby,
    wait_until_primary,
)

#: These tests start PostgreSQL servers of their own (.ci/run skips them in its second pass).
pytestmark = pytest.mark.own_server

DATABASE = "failover"


@pytest.fixture
def failover_topology() -> Iterator[Topology]:
    """A primary and a standby of this test's own (a failover leaves them unusable for another)."""
    reason = missing_reason()
    if reason is not None:
        import os

        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the failover tests, but: {reason}")
        pytest.skip(f"no primary/standby topology on this machine: {reason}")
    with running_topology(bouncer=False) as built:
        yield built


@pytest_asyncio.fixture
async def topology(failover_topology: Topology) -> AsyncIterator[Topology]:
    """The topology with a migrated database, already on the standby."""
    conn = await asyncpg.connect(failover_topology.primary())
    try:
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    await migrate(failover_topology.primary(DATABASE))
    await wait_for_standby(failover_topology)
    yield failover_topology


# -- processes --------------------------------------------------------------------------


@dataclass
class Child:
    """A process of the test, its output collected line by line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def wait_for(self, predicate: str, count: int = 1, timeout: float = 60) -> None:
        """Wait until *count* lines start with *predicate*."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(line.startswith(predicate) for line in self.lines) < count:
            assert self.reader is not None and not self.reader.done(), (
                f"the process ended before printing {count} {predicate!r} lines: {self.lines[-5:]}"
            )
            assert loop.time() < deadline, f"no {count} {predicate!r} lines in time: {self.lines[-5:]}"
            await asyncio.sleep(0.02)

    async def finish(self, timeout: float = 90) -> int:
        assert self.reader is not None
        await asyncio.wait_for(self.reader, timeout)
        return await self.process.wait()


class Processes:
    """The processes and servers a test starts; whatever is left is ended at its teardown."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.servers: list[ServerProcess] = []

    async def spawn(self, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        child = Child(process)

        async def read() -> None:
            assert process.stdout is not None
            async for raw in process.stdout:
                child.lines.append(raw.decode().rstrip("\n"))

        child.reader = asyncio.ensure_future(read())
        self.children.append(child)
        return child

    async def serve(self, dsn: str) -> ServerProcess:
        server = ServerProcess(dsn)
        self.servers.append(server)
        await server.start()
        return server

    async def end_all(self) -> None:
        for server in self.servers:
            await server.kill()
        for child in self.children:
            if child.process.returncode is None:
                child.process.kill()
                await child.process.wait()


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[Processes]:
    started = Processes()
    yield started
    await started.end_all()


def followed_ids(child: Child) -> list[str]:
    """The event IDs a follow_run process printed, in order."""
    return [line.split(" ", 2)[1] for line in child.lines if line.startswith("ev ")]


@dataclass
class SseFollower:
    """An EventSource-like client of ``pgbridge serve``: one stream, its frames in order."""

    ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self, server: ServerProcess, run_id: str) -> None:
        async def follow() -> None:
            async with (
                httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=120) as client,
                aconnect_sse(client, "GET", f"/runs/{run_id}/stream") as source,
            ):
                async for frame in source.aiter_sse():
                    if not frame.event or frame.event == "message":
                        continue
                    self.kinds.append(frame.event)
                    if frame.id:
                        self.ids.append(frame.id)
                    if frame.event in ("end", "history_changed"):
                        return

        self.task = asyncio.ensure_future(follow())


async def stored(dsn: str, run_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT seq, created_ms, created_ms || '-' || seq AS id, data::text AS data FROM run_events "
            "WHERE run_id = $1 ORDER BY seq",
            run_id,
        )
    finally:
        await conn.close()


# -- synchronous replication --------------------------------------------------------------


async def test_with_synchronous_replication_a_failover_loses_and_repeats_no_acknowledged_event(
    topology: Topology, processes: Processes
) -> None:
    await make_synchronous(topology)
    dsn = topology.both(DATABASE)
    runs = ("run-a", "run-b")
    followers = [await processes.spawn("tests.support.processes.follow_run", dsn, run) for run in runs]
    for follower in followers:
        await follower.wait_for("resume")
    server = await processes.serve(dsn)
    sse = SseFollower()
    sse.start(server, runs[0])
    # Three publisher processes, two on the first run and one on the second.
    tags = {"p1": runs[0], "p2": runs[0], "p3": runs[1]}
    publishers = {
        tag: await processes.spawn(
            "tests.support.processes.publish_through_faults", dsn, run, "60", "--tag", tag, "--delay", "0.01"
        )
        for tag, run in tags.items()
    }
    for publisher in publishers.values():
        await publisher.wait_for("ok ", count=25)  # mid-run
    # Cut the standby off: from here no commit can be acknowledged (with asynchronous replication
    # the commits of the next moment would be, and lost with the primary).
    await stop_replication(topology)
    await asyncio.sleep(0.3)

    topology.kill_primary()
    topology.promote_standby()

    for publisher in publishers.values():
        assert await publisher.finish() == 0
    async with PostgresStreamBridge(dsn) as bridge:
        ends = {run: await bridge.publish_end(run) for run in runs}
    for follower in followers:
        assert await follower.finish() == 0, follower.lines[-3:]
    assert sse.task is not None
    await asyncio.wait_for(sse.task, 60)
    await server.stop()

    new_primary = topology.standby(DATABASE)
    accounting: dict[str, int] = {"acknowledged": 0, "unknown": 0, "failed": 0, "lost": 0, "duplicated": 0}
    for run, follower in zip(runs, followers, strict=True):
        rows = await stored(new_primary, run)
        ids = [row["id"] for row in rows]
        datas = [row["data"] for row in rows]
        assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))  # gapless
        accounting["duplicated"] += len(datas) - len(set(datas))
        for tag in (t for t, r in tags.items() if r == run):
            for line in publishers[tag].lines:
                kind, _, rest = line.partition(" ")
                if kind not in ("ok", "unknown", "failed"):
                    continue  # "ready", or a line the bridge logged
                accounting["acknowledged" if kind == "ok" else kind] += 1
                index, *event_id = rest.split(" ")
                if kind == "ok" and event_id[0] not in ids:
                    accounting["lost"] += 1
                if kind == "failed":
                    assert json.dumps({"from": tag, "i": int(index)}) not in datas
        assert ids[-1] == ends[run]
        # Every subscriber continued from its cursor: the stored events, each once, in order.
        assert followed_ids(follower) == ids
        if run == runs[0]:
            assert sse.ids == ids and sse.kinds[-1] == "end"
    print("synchronous failover:", accounting)
    assert accounting["lost"] == 0 and accounting["duplicated"] == 0 and accounting["failed"] == 0
    assert accounting["acknowledged"] + accounting["unknown"] == 180
    assert accounting["acknowledged"] > 75  # acknowledged before the kill, and after it


# -- asynchronous replication -------------------------------------------------------------


async def test_with_asynchronous_replication_lost_events_are_counted_and_no_cursor_resumes_onto_new_ones(
    topology: Topology, processes: Processes
) -> None:
    dsn = topology.both(DATABASE)
    old_primary, new_primary = topology.primary(DATABASE), topology.standby(DATABASE)
    shared, lost_count, after = 20, 15, 25
    # "lost" and "trimmed" get events the standby never receives; "quiet" does not.
    async with PostgresStreamBridge(old_primary) as old:
        for run in ("lost", "trimmed", "quiet"):
            await old.publish_many(run, [("token", {"phase": 1, "i": i}) for i in range(shared)])
        await wait_for_standby(topology)
        followers = {
            run: await processes.spawn("tests.support.processes.follow_run", dsn, run)
            for run in ("lost", "quiet")
        }
        for follower in followers.values():
            await follower.wait_for("ev ", count=shared)
        server = await processes.serve(dsn)
        sse = {run: SseFollower() for run in ("lost", "quiet")}
        for run, follower in sse.items():
            follower.start(server, run)
        async with server.client() as http:  # a Durable Streams reader's offset, of a kept event
            kept_offset = (await http.head("/v1/stream/lost")).headers["Stream-Next-Offset"]

        await stop_replication(topology)  # the standby stays where it is: replay paused, no WAL received
        acknowledged: dict[str, list[str]] = {"lost": [], "trimmed": []}
        for i in range(lost_count):
            for run, ids in acknowledged.items():
                ids.append(
                    await old.publish(run, "token", {"phase": 2, "i": i})
                )  # committed on the old primary
        await followers["lost"].wait_for("ev ", count=shared + lost_count)  # it yielded them all
        async with server.client() as http:  # ... and one of a lost event
            lost_offset = (await http.head("/v1/stream/lost")).headers["Stream-Next-Offset"]
        for _ in range(200):
            if len(sse["lost"].ids) == shared + lost_count:
                break
            await asyncio.sleep(0.02)

    topology.kill_primary()
    topology.promote_standby()
    await wait_until_primary(new_primary)

    async with PostgresStreamBridge(dsn) as new:
        for run in ("lost", "trimmed", "quiet"):
            await new.publish_many(run, [("token", {"phase": 3, "i": i}) for i in range(after)])
        ends = {run: await new.publish_end(run) for run in ("lost", "quiet")}

        # The accounting: every acknowledged event the standby never received is gone, and counted.
        stored_ids = {run: [row["id"] for row in await stored(new_primary, run)] for run in acknowledged}
        lost = {run: [i for i in ids if i not in stored_ids[run]] for run, ids in acknowledged.items()}
        print(
            "asynchronous failover: acknowledged",
            sum(len(ids) for ids in acknowledged.values()) + 3 * shared,
            "lost",
            {run: len(ids) for run, ids in lost.items()},
        )
        assert lost == acknowledged  # the standby had none of them: all lost
        for run in ("lost", "trimmed"):
            assert len(stored_ids[run]) == shared + after + (run in ends)  # it went on at the same seqs ...
            assert not set(acknowledged[run]) & set(stored_ids[run])  # ... with other IDs

        # No cursor naming a lost event resolves resumed, and none could share an ID with the
        # event that took its seq: the old timeline's events have odd ms, the new one's even.
        for run, ids in lost.items():
            for event_id in ids:
                assert (await new.resolve(run, event_id)).status == "unknown"
        for run in ("lost", "trimmed", "quiet"):
            rows = await stored(new_primary, run)
            assert {row["created_ms"] % 2 for row in rows[:shared]} == {1}  # timeline 1
            assert {row["created_ms"] % 2 for row in rows[shared:]} == {0}  # timeline 2
        replacement = (await stored(new_primary, "lost"))[shared]  # seq shared + 1, in both histories
        same_ms_cursors = [f"{replacement['created_ms'] + d}-{replacement['seq']}" for d in (-1, 1)]
        for cursor in same_ms_cursors:  # what a lost event stamped in the same millisecond carries
            assert (await new.resolve("lost", cursor)).status == "unknown"
        assert (await new.resolve("lost", replacement["id"])).status == "resumed"

        # s = first - 1 after retention deleted it: the kept creation time tells the histories apart.
        cut = shared + 5
        await evict_prefix(new_primary, "trimmed", keep_from_seq=cut + 1)
        lost_at_cut = next(i for i in lost["trimmed"] if parse_event_id(i).seq == cut)  # type: ignore[union-attr]
        kept_at_cut = stored_ids["trimmed"][cut - 1]
        assert await new.resolve("trimmed", lost_at_cut) == ResumeResult(
            next_offset=cut + 1, status="unknown"
        )
        assert await new.resolve("trimmed", kept_at_cut) == ResumeResult(
            next_offset=cut + 1, status="resumed"
        )

        # Live across the failover: the subscriber that yielded lost events ends, saying why, and
        # yielded nothing of the new history; the one whose cursor survived goes on with it.
        lost_follower, quiet_follower = followers["lost"], followers["quiet"]
        assert await lost_follower.finish() == 3  # RunHistoryChangedError
        # Said so (a line a closing connection to the dead primary logs may come after it).
        assert any(line.startswith("changed ") for line in lost_follower.lines), lost_follower.lines[-5:]
        old_history = stored_ids["lost"][:shared] + acknowledged["lost"]
        assert followed_ids(lost_follower) == old_history
        assert (await new.resolve("lost", followed_ids(lost_follower)[-1])).status == "unknown"
        assert await quiet_follower.finish() == 0
        quiet_ids = [row["id"] for row in await stored(new_primary, "quiet")]
        assert followed_ids(quiet_follower) == quiet_ids and quiet_ids[-1] == ends["quiet"]
        # Durable Streams offsets name events as IDs do: the lost one's is gone, the kept one's
        # reads on in the new history (pgbridge serve found the new primary by itself).
        async with server.client() as http:
            assert (await http.get("/v1/stream/lost", params={"offset": lost_offset})).status_code == 410
            after_kept = await http.get("/v1/stream/lost", params={"offset": kept_offset})
            assert after_kept.status_code == 200
            assert [m["id"] for m in after_kept.json()] == stored_ids["lost"][shared:]
        # The same through pgbridge serve, over SSE.
        for follower in sse.values():
            assert follower.task is not None
            await asyncio.wait_for(follower.task, 60)
        assert sse["lost"].kinds[-1] == "history_changed"
        assert set(sse["lost"].ids) <= set(old_history)
        assert sse["quiet"].ids == quiet_ids and sse["quiet"].kinds[-1] == "end"
    await server.stop()
