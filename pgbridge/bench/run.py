"""``pgbridge bench``: run every workload against every contender and write the report.

    python -m pgbridge.bench [--quick] [--dsn URI] [--out DIR]

With no DSN (and neither ``PGBRIDGE_DSN`` nor ``DATABASE_URL``) it starts an
embedded PostgreSQL in a temporary folder. Either way it works in a scratch
database it creates, migrates and drops, and measures Redis Streams only
when Redis answers at ``$REDIS_URL`` (default ``redis://127.0.0.1:6379``).
A workload that fails for one contender is recorded as an error and the
rest still run, so a report is always written; the exit status is 1 then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgbridge.bench.ceilings import measure_ceilings
from pgbridge.bench.contenders import (
    Contender,
    InProcessContender,
    PgBridgeContender,
    RedisContender,
    redis_unavailable_reason,
    redis_url,
)
from pgbridge.bench.payload import payload_bytes
from pgbridge.bench.report import write_report
from pgbridge.bench.servers import (
    describe_machine,
    describe_pgbridge,
    describe_postgres,
    describe_redis,
    embedded_server,
    scratch_database,
)
from pgbridge.bench.workloads import WORKLOADS, Sizes, Workload
from pgbridge.cli.progress import progress_bars

DEFAULT_OUT = Path("bench-results")
ContenderFactory = Callable[[], Contender]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_benchmark(dsn: str | None, *, quick: bool, out_dir: Path, durable_streams: bool = False) -> int:
    """Measure, then write ``results.md``, ``results.json`` and ``results.png`` to *out_dir*.

    *dsn* names a server where databases can be created; None starts an
    embedded one in a temporary folder. Returns 0, or 1 when any workload
    could not be measured (the report says which). With *durable_streams*,
    measure the Durable Streams endpoint against the reference server
    instead, and write ``durable-streams.md`` and ``durable-streams.json``.

    SIGINT and SIGTERM stop it through its ``finally`` blocks: the scratch
    database is dropped, an embedded server stopped and its temporary folder
    removed; the exit status is then 130 or 143, as a shell reports.
    """
    from pgbridge.cli.signals import until_signalled

    return await until_signalled(
        _run_benchmark(dsn, quick=quick, out_dir=out_dir, durable_streams=durable_streams)
    )


async def _run_benchmark(dsn: str | None, *, quick: bool, out_dir: Path, durable_streams: bool) -> int:
    sizes = Sizes.quick() if quick else Sizes.full()
    with contextlib.ExitStack() as stack:
        if dsn is None:
            _say("starting an embedded PostgreSQL in a temporary folder ...")
            admin_dsn, server = stack.enter_context(embedded_server()), "embedded, temporary folder"
        else:
            admin_dsn, server = dsn, "given DSN"
        if durable_streams:
            return await _run_durable_streams(
                admin_dsn, quick=quick, server=server, out_dir=out_dir, whole_server=dsn is None
            )
        results = await measure(admin_dsn, sizes, mode="quick" if quick else "full", server=server)
    files = write_report(results, out_dir)
    print(files.markdown.read_text(), flush=True)
    _say(f"wrote {files.markdown}, {files.json} and {files.chart}")
    return 1 if results["errors"] else 0


async def _run_durable_streams(
    admin_dsn: str, *, quick: bool, server: str, out_dir: Path, whole_server: bool
) -> int:
    """The Durable Streams comparison in a scratch database; its report; 1 if anything failed."""
    from pgbridge.bench.durable_streams import DsSizes, measure_durable_streams
    from pgbridge.bench.durable_streams_report import write_ds_report

    started = time.perf_counter()
    meta: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "server": server,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "pgbridge": describe_pgbridge(),
        "pgbridge_processes": 1,
    }
    async with scratch_database(admin_dsn) as dsn:
        meta["postgres"] = await describe_postgres(dsn)
        sizes = DsSizes.quick() if quick else DsSizes.full()
        results = {
            "meta": meta,
            **await measure_durable_streams(dsn, sizes, _say, whole_server=whole_server),
        }
    meta["seconds"] = round(time.perf_counter() - started, 1)
    markdown, data = write_ds_report(results, out_dir)
    print(markdown.read_text(), flush=True)
    _say(f"wrote {markdown} and {data}")
    return 1 if results["errors"] else 0


async def measure(admin_dsn: str, sizes: Sizes, *, mode: str, server: str) -> dict[str, Any]:
    """Every ceiling and workload, in a scratch database on *admin_dsn*'s server."""
    started = time.perf_counter()
    tag = uuid.uuid4().hex[:6]
    redis_prefix = f"pgbridge-bench:{tag}:"
    meta: dict[str, Any] = {
        "mode": mode,
        "server": server,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "pgbridge": describe_pgbridge(),
        "payload_bytes": payload_bytes(),
        "sizes": asdict(sizes),
        "contenders": {},
    }
    results: dict[str, Any] = {"meta": meta, "ceilings": {}, "workloads": {}, "errors": []}
    async with scratch_database(admin_dsn) as dsn:
        meta["postgres"] = await describe_postgres(dsn)
        factories, redis = await _contenders(dsn, redis_prefix, meta)
        for name, factory in factories.items():
            if not isinstance(factory, str):
                meta["contenders"][name] = _describe(factory)
        try:
            # A bar on a terminal: the ceilings, then each workload for each contender.
            with progress_bars() as bars:
                bar = bars.add("benchmark", total=1 + len(WORKLOADS) * len(factories), detail="ceilings")
                _say("ceilings: batched INSERT, COPY, single-row commit, NOTIFY round trip, append cost ...")
                results["ceilings"] = await _guarded(
                    results["errors"],
                    "ceilings",
                    lambda: measure_ceilings(
                        dsn,
                        seconds=sizes.ceiling_seconds,
                        round_trips=sizes.round_trips,
                        append_samples=sizes.append_cost_samples,
                        paced_interval=sizes.latency_interval,
                    ),
                )
                bar.advance()
                for key, workload in WORKLOADS.items():
                    entries: dict[str, Any] = results["workloads"].setdefault(key, {})
                    for name, factory in factories.items():
                        bar.update(detail=f"{key}: {name}")
                        entries[name] = (
                            {"skipped": factory}
                            if isinstance(factory, str)
                            else await _measure_one(
                                results["errors"], key, name, workload, factory, sizes, tag
                            )
                        )
                        bar.advance()
        finally:
            if redis is not None:
                await _delete_redis_streams(redis, redis_prefix)
    meta["seconds"] = round(time.perf_counter() - started, 1)
    return results


async def _contenders(
    dsn: str, redis_prefix: str, meta: dict[str, Any]
) -> tuple[dict[str, ContenderFactory | str], str | None]:
    """A factory per contender, or why it is skipped; and Redis's URL if it is measured."""
    url = redis_url()
    reason = await redis_unavailable_reason(url)
    meta["redis"] = {"skipped": reason} if reason else await describe_redis(url)
    if reason:
        _say(f"Redis Streams skipped: {reason}")
    redis_factory: ContenderFactory | str = reason or (lambda: RedisContender(url, redis_prefix))
    factories: dict[str, ContenderFactory | str] = {
        "pgbridge": lambda: PgBridgeContender(dsn),
        "inprocess": InProcessContender,
        "redis": redis_factory,
    }
    return factories, None if reason else url


async def _measure_one(
    errors: list[str],
    key: str,
    name: str,
    workload: Workload,
    factory: ContenderFactory,
    sizes: Sizes,
    tag: str,
) -> dict[str, Any]:
    """One workload against one fresh contender: its figures, or the error that stopped it."""

    async def run() -> dict[str, Any]:
        async with factory() as contender:
            result = await workload(contender, sizes, f"{tag}-{key}-{name}-")
        figures: dict[str, Any] = asdict(result)
        return figures

    _say(f"{key}: {name} ...")
    started = time.perf_counter()
    figures = await _guarded(errors, f"{key}/{name}", run)
    _say(f"{key}: {name} done in {time.perf_counter() - started:.1f} s")
    return figures


async def _guarded(errors: list[str], what: str, measure_it: Callable[[], Any]) -> dict[str, Any]:
    """The figures *measure_it* returns, or ``{"error": ...}`` (also added to *errors*)."""
    try:
        figures = await measure_it()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        message = f"{type(exc).__name__}: {exc}"
        errors.append(f"{what}: {message}")
        return {"error": message}
    return figures if isinstance(figures, dict) else asdict(figures)


def _describe(factory: ContenderFactory) -> dict[str, Any]:
    """What the report says about how a contender was driven."""
    contender = factory()
    return {
        "label": contender.label,
        "fill_method": contender.batch_method,
        "store_calls_counted": contender.store_calls is not None,
    }


async def _delete_redis_streams(url: str, prefix: str) -> None:
    """Remove every stream this benchmark run wrote: all of them, and only them, share *prefix*."""
    async with RedisContender(url, prefix) as cleaner:
        await cleaner.delete_streams()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgbridge bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run in well under a minute"
    )
    parser.add_argument(
        "--dsn", help="a server where databases can be created (default: $PGBRIDGE_DSN, else embedded)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--durable-streams",
        action="store_true",
        help="instead: the Durable Streams endpoint (pgbridge serve) against the reference server",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    args = build_parser().parse_args(argv)
    from pgbridge.embedded import dsn_from_environment

    dsn = args.dsn or dsn_from_environment()
    return asyncio.run(
        run_benchmark(dsn, quick=args.quick, out_dir=args.out, durable_streams=args.durable_streams)
    )


if __name__ == "__main__":
    sys.exit(main())
