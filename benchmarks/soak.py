"""Soak: minutes of mixed load with random faults, ending with an exact accounting.

    python benchmarks/soak.py --minutes 10 [--runs 4] [--json FILE]

On an embedded PostgreSQL of its own (so it can crash it), ``--runs`` runs
each get one publisher process and two subscriber processes. Every few
seconds one fault, at random:

* ``crash``: PostgreSQL stopped with ``pg_ctl stop -m immediate`` and started
  again a second later;
* ``terminate``: ``pg_terminate_backend`` of every client connection;
* ``cut``: every client connection aborted by the TCP fault proxy the
  publishers and subscribers connect through (``tests/support/fault_proxy.py``);
* ``stall``: the proxy stops forwarding bytes for 0.5 to 3 seconds;
* ``kill-publisher``: a publisher SIGKILLed and a new one started on its run;
* ``kill-subscriber``: a subscriber SIGKILLed and restarted from the last ID
  it printed (``Last-Event-ID``, as a browser would).

At the end each run gets its terminal event, every subscriber lineage runs to
it, and the accounting checks: every event a publisher was told is committed
is stored; no event it was told failed is; every subscriber lineage received
exactly the stored events of its run, once each, in order. Exit status 1 if
anything was lost or duplicated. Uses the fault helpers of ``tests/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgbridge import PostgresStreamBridge, migrate
from tests.support.fault_proxy import FaultProxy
from tests.support.postgres_server import RestartableServer, restartable_server

FAULTS = ("crash", "terminate", "cut", "stall", "kill-publisher", "kill-subscriber")


@dataclass
class Child:
    """A child process and every line it printed."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        child = cls(process)
        child.reader = asyncio.create_task(child._read())
        return child

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.finished()

    async def finished(self) -> None:
        await self.process.wait()
        if self.reader is not None:
            await self.reader


@dataclass
class Subscriber:
    """One reader of a run, through its restarts: what it received, in order."""

    run_id: str
    dsn: str
    lives: list[Child] = field(default_factory=list)

    async def start(self) -> None:
        cursor = self.last_id()
        args = ["pgbridge.cli.demo", "subscribe", self.dsn, self.run_id]
        self.lives.append(await Child.start(*args, *(["--from", cursor] if cursor else [])))

    def received(self) -> list[str]:
        return [line.split(" ", 1)[0] for life in self.lives for line in life.lines if line[:1].isdigit()]

    def last_id(self) -> str | None:
        got = self.received()
        return got[-1] if got else None


@dataclass
class Publisher:
    """One publisher process of a run (a new one, with a new tag, after each kill)."""

    tag: str
    child: Child

    def outcomes(self) -> list[tuple[str, int, str | None]]:
        found = []
        for line in self.child.lines:
            kind, _, rest = line.partition(" ")
            if kind in ("ok", "unknown", "failed"):
                index, *event_id = rest.split(" ")
                found.append((kind, int(index), event_id[0] if event_id else None))
        return found


async def start_publisher(dsn: str, run_id: str, tag: str) -> Publisher:
    child = await Child.start(
        "tests.support.processes.publish_through_faults",
        dsn,
        run_id,
        "10000000",
        "--tag",
        tag,
        "--delay",
        "0.01",
    )
    return Publisher(tag, child)


async def terminate_clients(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    finally:
        await conn.close()


async def soak(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    with restartable_server() as server:
        dsn = server.dsn
        await migrate(dsn)
        async with FaultProxy.in_front_of(dsn) as proxy:
            return await soak_through(proxy, server, args, rng)


async def soak_through(
    proxy: FaultProxy, server: RestartableServer, args: argparse.Namespace, rng: random.Random
) -> dict[str, object]:
    """The load and the faults; the children connect through *proxy*, the accounting directly."""
    dsn, client_dsn = server.dsn, proxy.dsn(server.dsn)
    runs = [f"soak-{i}" for i in range(args.runs)]
    subscribers = [Subscriber(run, client_dsn) for run in runs for _ in range(2)]
    for subscriber in subscribers:
        await subscriber.start()
    publishers: dict[str, list[Publisher]] = {
        run: [await start_publisher(client_dsn, run, f"{run}-0")] for run in runs
    }
    faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
    deadline = time.monotonic() + args.minutes * 60
    while time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(2, 6))
        fault = rng.choice(FAULTS)
        faults[fault] += 1
        print(f"{time.strftime('%H:%M:%S')} fault: {fault}", flush=True)
        if fault == "crash":
            server.stop_immediately()
            await asyncio.sleep(1.0)
            server.start()
        elif fault == "terminate":
            await terminate_clients(dsn)
        elif fault == "cut":
            proxy.cut()
        elif fault == "stall":
            proxy.stall()
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            proxy.resume()
        elif fault == "kill-publisher":
            run = rng.choice(runs)
            await publishers[run][-1].child.kill()
            tag = f"{run}-{len(publishers[run])}"
            publishers[run].append(await start_publisher(client_dsn, run, tag))
        else:
            subscriber = rng.choice(subscribers)
            await subscriber.lives[-1].kill()
            await subscriber.start()
    for run in runs:
        await publishers[run][-1].child.kill()
    async with PostgresStreamBridge(dsn) as bridge:
        for run in runs:
            await bridge.publish_end(run)
    for subscriber in subscribers:
        await asyncio.wait_for(subscriber.lives[-1].finished(), 300)
    return await account(dsn, runs, publishers, subscribers, faults, args)


async def account(
    dsn: str,
    runs: list[str],
    publishers: dict[str, list[Publisher]],
    subscribers: list[Subscriber],
    faults: dict[str, int],
    args: argparse.Namespace,
) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        stored = {
            run: await conn.fetch(
                "SELECT created_ms || '-' || seq AS id, data::text AS data FROM run_events "
                "WHERE run_id = $1 ORDER BY seq",
                run,
            )
            for run in runs
        }
    finally:
        await conn.close()
    totals = {"ok": 0, "unknown": 0, "failed": 0}
    lost, wrongly_stored = 0, 0
    for run in runs:
        ids = {row["id"] for row in stored[run]}
        datas = {row["data"] for row in stored[run]}
        for publisher in publishers[run]:
            for kind, index, event_id in publisher.outcomes():
                totals[kind] += 1
                if kind == "ok" and event_id not in ids:
                    lost += 1
                if kind == "failed" and json.dumps({"from": publisher.tag, "i": index}) in datas:
                    wrongly_stored += 1
    mismatched = [
        mismatch(s, [row["id"] for row in stored[s.run_id]])
        for s in subscribers
        if s.received() != [row["id"] for row in stored[s.run_id]]
    ]
    delivered = sum(len(s.received()) for s in subscribers)
    return {
        "minutes": args.minutes,
        "runs": len(runs),
        "faults": faults,
        "publishes": totals,
        "events_stored": sum(len(rows) for rows in stored.values()),
        "deliveries": delivered,
        "subscriber_restarts": sum(len(s.lives) - 1 for s in subscribers),
        "acknowledged_but_lost": lost,
        "reported_failed_but_stored": wrongly_stored,
        "subscribers_with_lost_or_duplicated_events": mismatched,
        "ok": lost == 0 and wrongly_stored == 0 and not mismatched,
    }


def mismatch(subscriber: Subscriber, expected: list[str]) -> dict[str, object]:
    """What a subscriber lineage got wrong, and how each of its lives ended, to diagnose it."""
    got = subscriber.received()
    diverged = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
    return {
        "run": subscriber.run_id,
        "received": len(got),
        "expected": len(expected),
        "duplicates": len(got) - len(set(got)),
        "first_divergence": diverged,
        "lives": [
            {"exit": life.process.returncode, "last_lines": life.lines[-8:]} for life in subscriber.lives
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", help="also write the accounting to this file")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
