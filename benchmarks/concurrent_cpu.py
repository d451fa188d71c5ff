"""Workload (b) alone, with the CPU each process spends per acknowledged event.

    python benchmarks/concurrent_cpu.py                         # pgbridge then Redis, 3 rounds
    python benchmarks/concurrent_cpu.py --contenders pgbridge --seconds 30
    python benchmarks/concurrent_cpu.py --dsn URI               # another server (a scratch database)

Runs ``pgbridge bench``'s workload (b) (100 runs, each with one publisher
publishing back to back and two subscribers in another process), the
contenders taking turns, and samples ``/proc`` every 0.2 s: CPU time (user
+ system) per acknowledged event of this process (the publishers), the
subscriber process, PostgreSQL (every process of the server: backends, WAL
writer, ...), Redis, and everything else on the machine. The window spans
the whole workload (opening the subscriptions, the measured seconds, the
end events), so the figures are a little above the measured seconds' own.
Linux only. Figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import uuid
from collections.abc import Callable

from pgbridge.bench.contenders import Contender, PgBridgeContender, RedisContender, redis_url
from pgbridge.bench.servers import scratch_database_on
from pgbridge.bench.workloads import Sizes, concurrent

TICKS = os.sysconf("SC_CLK_TCK")


def _kind(pid: int, command: str, name: str) -> str:
    if pid == os.getpid():
        return "publisher"
    if "pgbridge.bench.subscriber" in command:
        return "subscriber"
    if name.startswith("postgres") or command.startswith("postgres"):
        return "postgres"
    if "redis-server" in command:
        return "redis"
    return "other"


def _processes() -> dict[int, tuple[str, float]]:
    """Every process's kind and CPU seconds so far."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry)] = (_kind(int(entry), command, name), (int(fields[11]) + int(fields[12])) / TICKS)
    return found


class CpuByKind:
    """CPU seconds per kind of process, summed from samples (a process that exits between
    two samples loses at most one interval)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.seconds: dict[str, float] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> CpuByKind:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        before = _processes()
        while not self._stop.wait(self._interval):
            now = _processes()
            for pid, (kind, cpu) in now.items():
                if pid in before:
                    self.seconds[kind] = self.seconds.get(kind, 0.0) + cpu - before[pid][1]
            before = now


async def main(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:6]
    sizes = Sizes(concurrent_seconds=args.seconds)
    async with scratch_database_on(args.dsn) as dsn:
        factories: dict[str, Callable[[], Contender]] = {
            "pgbridge": lambda: PgBridgeContender(dsn),
            "redis": lambda: RedisContender(redis_url(), f"pgbridge-cpu:{tag}:"),
        }
        for round_number in range(args.rounds):
            for name in args.contenders.split(","):
                async with factories[name]() as contender:
                    with CpuByKind() as cpu:
                        result = await concurrent(contender, sizes, f"{tag}-{round_number}-{name}-")
                per_event = {kind: seconds * 1e6 / result.events for kind, seconds in cpu.seconds.items()}
                shares = ", ".join(f"{kind} {us:.1f}" for kind, us in sorted(per_event.items()) if us >= 0.5)
                p50 = result.end_to_end.p50
                print(
                    f"{name:9s} {result.events_per_s:9,.0f} events/s, delivery p50 {p50} ms,"
                    f" lost {result.lost}; CPU µs an event: {shares}",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="a server where databases can be created (default: an embedded one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds of each run")
    parser.add_argument("--contenders", default="pgbridge,redis", help="comma-separated: pgbridge, redis")
    asyncio.run(main(parser.parse_args()))
