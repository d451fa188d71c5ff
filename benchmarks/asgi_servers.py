"""The same pgbridge HTTP app on two ASGI servers, side by side: uvicorn (what ``pgbridge
serve`` runs) and granian, under the Durable Streams append workload driven by wrk.

    python benchmarks/asgi_servers.py                  # embedded PostgreSQL, 3 rounds
    python benchmarks/asgi_servers.py --rounds 5 --seconds 10

Issue 22 asked for it: once the append statement is cheap, is uvicorn + Starlette the
bound of ``pgbridge serve``, and would another server do better? Both servers run one
process with the app of :func:`pgbridge.http.app.create_app` on a bridge of their own
(default options, no token, no access log) against the same scratch database; they
take turns, round by round in alternating order, and each round is the throughput
workload of ``pgbridge bench --durable-streams`` (:func:`pgbridge.bench.durable_streams.
throughput`: 100 connections POSTing to 100 streams, after a 1 s warm-up, the streams
read back afterwards). Reported per server: appends/s, p50 latency, and CPU per append
of the server process and of PostgreSQL. Needs ``wrk`` and ``pip install granian``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgbridge.bench.durable_streams import (
    DsSizes,
    PostgresCpu,
    Served,
    _Client,
    _free_port,
    _stop,
    pgbridge_server,
    throughput,
)
from pgbridge.bench.servers import embedded_server, scratch_database

#: The granian process imports this module and calls :func:`app_from_environment` (``--factory``).
APP_FACTORY = "asgi_servers:app_from_environment"


def app_from_environment() -> Any:
    """The app ``pgbridge serve`` serves (no token), on a bridge of its own on ``$PGBRIDGE_DSN``,
    which the app starts and closes in its lifespan."""
    from pgbridge.bridge import PostgresStreamBridge
    from pgbridge.http.app import create_app

    return create_app(PostgresStreamBridge(os.environ["PGBRIDGE_DSN"]), manage_bridge=True)


#: granian's own settings for its one worker: uvloop, as uvicorn uses when it is installed, and
#: one Rust runtime thread (the machine's cores are for PostgreSQL and the client too).
GRANIAN_OPTIONS = ("--loop", "uvloop", "--runtime-mode", "st", "--runtime-threads", "1")


@contextlib.asynccontextmanager
async def granian_server(dsn: str) -> AsyncIterator[Served]:
    """The app under granian: one worker, its asyncio loop, no access log."""
    import aiohttp

    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "granian", "--interface", "asgi", "--factory", "--workers", "1"),
        *("--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"),
        *GRANIAN_OPTIONS,
        APP_FACTORY,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PGBRIDGE_DSN": dsn, "PYTHONPATH": _python_path()},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"granian exited ({process.returncode})")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/health") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("granian did not answer within 60 s")
                await asyncio.sleep(0.1)
        yield Served(url, _worker_pid(process.pid), {"processes": 1, "command": "granian --interface asgi"})
    finally:
        await _stop(process)


def _python_path() -> str:
    """This folder (the app factory) and the checkout (pgbridge), before what was there."""
    here = Path(__file__).resolve().parent
    return os.pathsep.join(p for p in (str(here), str(here.parent), os.environ.get("PYTHONPATH", "")) if p)


def _worker_pid(main: int) -> int:
    """granian's worker process (the one that runs the app), else the main process."""
    import psutil

    children = psutil.Process(main).children(recursive=True)
    return children[0].pid if children else main


async def measure(rounds: int, seconds: float) -> dict[str, list[dict[str, Any]]]:
    import aiohttp

    sizes = replace(DsSizes.full(), throughput_seconds=seconds)
    figures: dict[str, list[dict[str, Any]]] = {"uvicorn": [], "granian": []}
    with embedded_server() as admin:
        async with scratch_database(admin) as dsn:
            postgres = PostgresCpu(dsn, whole_server=True)
            await postgres.start()
            async with (
                pgbridge_server(dsn) as uvicorn,
                granian_server(dsn) as granian,
                aiohttp.ClientSession() as session,
            ):
                servers = {"uvicorn": uvicorn, "granian": granian}
                for index in range(rounds):
                    order = list(servers) if index % 2 == 0 else list(reversed(servers))
                    for name in order:
                        served = replace(servers[name], postgres=postgres)
                        result = await throughput(
                            _Client(session, served.url), served, sizes, f"{name}{index}-"
                        )
                        figures[name].append(
                            {
                                "appends_per_s": result.appends_per_s,
                                "p50_ms": result.latency.p50,
                                "server_us": result.server_cpu_us_per_append,
                                "postgres_us": result.postgres_cpu_us_per_append,
                            }
                        )
                        print(name, index, figures[name][-1], flush=True)
    return figures


HEADER = (
    "ASGI server (median of rounds)",
    "appends/s",
    "p50 ms",
    "server CPU µs/append",
    "PostgreSQL CPU µs/append",
)
KEYS = ("appends_per_s", "p50_ms", "server_us", "postgres_us")


def report(figures: dict[str, list[dict[str, Any]]]) -> str:
    """A Markdown table of each server's medians, and granian's throughput over uvicorn's."""
    medians = {name: [statistics.median(r[k] for r in rows) for k in KEYS] for name, rows in figures.items()}
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|---:|"]
    for name, (rate, p50, server, postgres) in medians.items():
        lines.append(f"| {name} | {rate:,.0f} | {p50:.2f} | {server:.1f} | {postgres:.1f} |")
    lines.append(f"\ngranian ÷ uvicorn appends/s: {medians['granian'][0] / medians['uvicorn'][0]:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(report(asyncio.run(measure(args.rounds, args.seconds))))


if __name__ == "__main__":
    main()
