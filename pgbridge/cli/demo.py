"""``pgbridge demo``: the main job, end to end, on a real PostgreSQL.

A simulated agent run streams token events. A reader in a separate process
prints every event ID it receives; midway it is killed (SIGKILL, no
goodbye). A new process resumes from the last ID the first one printed and
receives the rest. The demo then counts published, received, duplicates and
missing events, and shows the run with a plain SQL query.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

from pgbridge.bridge import PostgresStreamBridge
from pgbridge.cli.progress import ProgressBar, progress_bars
from pgbridge.contract import HEARTBEAT_SENTINEL
from pgbridge.migrate import migrate
from pgbridge.sql import load_into

KILL_AFTER_FRACTION = 0.4


async def _start_reader(dsn: str, schema: str, run_id: str, cursor: str | None) -> asyncio.subprocess.Process:
    args = [sys.executable, "-m", "pgbridge.cli.demo", "subscribe", dsn, run_id, "--schema", schema]
    if cursor:
        args += ["--from", cursor]
    return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)


async def _read_line(process: asyncio.subprocess.Process) -> str | None:
    assert process.stdout is not None
    line = await process.stdout.readline()
    return line.decode().rstrip("\n") if line else None


async def run_demo(dsn: str, *, schema: str = "public", events: int = 300) -> int:
    """Run the demo against *dsn*; returns 0 when nothing was lost or duplicated."""
    print("migrating the schema ...", flush=True)
    await migrate(dsn, schema=schema)
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    print(f"run {run_id}: publishing {events} token events plus an end event", flush=True)
    published: list[str] = []
    received: list[str] = []
    with _bars(events) as (publishing, receiving):
        async with PostgresStreamBridge(dsn, schema=schema) as bridge:
            first_reader = await _start_reader(dsn, schema, run_id, None)
            kill_at = int(events * KILL_AFTER_FRACTION)

            async def publish_all() -> None:
                for index in range(events):
                    published.append(
                        await bridge.publish(run_id, "token", {"i": index, "text": f"tok{index} "})
                    )
                    publishing.update(completed=len(published))
                    await asyncio.sleep(0.005)
                published.append(await bridge.publish_end(run_id))
                publishing.update(completed=len(published))

            def receive(line: str) -> None:
                received.append(line.split(" ", 1)[0])
                receiving.update(completed=len(received))

            publisher = asyncio.create_task(publish_all())
            while len(received) < kill_at:
                line = await _read_line(first_reader)
                if line is None:
                    break
                if not line.startswith("resume "):
                    receive(line)
            first_reader.send_signal(signal.SIGKILL)
            await first_reader.wait()
            last_seen = received[-1] if received else None
            print(f"  killed the first reader after {len(received)} events; last ID it printed: {last_seen}")
            receiving.update(description="received (a new reader)")

            second_reader = await _start_reader(dsn, schema, run_id, last_seen)
            resume_line = await _read_line(second_reader)
            print(f"  a new reader process resumes from {last_seen}: {resume_line}")
            while (line := await _read_line(second_reader)) is not None:
                receive(line)
            await second_reader.wait()
            await publisher

    duplicates = len(received) - len(set(received))
    missing = len(set(published) - set(received))
    counts = f"published: {len(published)}  received: {len(received)}"
    print(f"{counts}  duplicates: {duplicates}  missing: {missing}")
    await _show_sql(dsn, schema, run_id)
    ok = duplicates == 0 and missing == 0 and received == published
    print("OK: every event arrived exactly once, in order" if ok else "FAILED: see the counts above")
    return 0 if ok else 1


@contextlib.contextmanager
def _bars(events: int) -> Iterator[tuple[ProgressBar, ProgressBar]]:
    """Events published, and received by the readers, out of all (the end event included)."""
    with progress_bars() as bars:
        yield bars.add("published", total=events + 1), bars.add("received", total=events + 1)


@dataclass(frozen=True, slots=True)
class DemoQueries:
    """The statements of ``pgbridge/sql/demo.sql``."""

    last_events: str

    @classmethod
    def for_schema(cls, schema: str) -> DemoQueries:
        return load_into(cls, "demo.sql", schema)


async def _show_sql(dsn: str, schema: str, run_id: str) -> None:
    """Print the statement that reads the run's last events, then run it and print them."""
    query = DemoQueries.for_schema(schema).last_events
    print("\nthe run is plain SQL:\n" + query.replace("$1", f"'{run_id}'") + ";")
    conn = await asyncpg.connect(dsn)
    try:
        for row in await conn.fetch(query, run_id):
            print(f"  {row['event_id']:<20} {row['event']:<6} {row['data']}")
    finally:
        await conn.close()


async def _subscribe_and_print(dsn: str, schema: str, run_id: str, cursor: str | None) -> None:
    """The reader process: print the resume status, then one line per event."""
    async with PostgresStreamBridge(dsn, schema=schema) as bridge:
        resume = await bridge.resolve(run_id, cursor)
        print(f"resume {resume.status} next_offset={resume.next_offset} gap={resume.gap_count}", flush=True)
        async for event in bridge.subscribe(run_id, last_event_id=cursor):
            if event == HEARTBEAT_SENTINEL:
                continue
            print(f"{event.id} {event.event} {json.dumps(event.data)}", flush=True)


def _reader_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pgbridge.cli.demo subscribe")
    parser.add_argument("dsn")
    parser.add_argument("run_id")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--from", dest="cursor")
    args = parser.parse_args(argv)
    asyncio.run(_subscribe_and_print(args.dsn, args.schema, args.run_id, args.cursor))


if __name__ == "__main__":
    if sys.argv[1:2] != ["subscribe"]:
        sys.exit("usage: python -m pgbridge.cli.demo subscribe DSN RUN [--from ID]")
    _reader_main(sys.argv[2:])
