"""``pgbridge verify`` and ``pgbridge export``: the audit commands, over the bridge's API."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterable

from pgbridge.audit.chain import CHAIN_VERSION, ChainReport
from pgbridge.audit.export import verify_export
from pgbridge.bridge import PostgresStreamBridge
from pgbridge.exceptions import StreamNotFoundError

DsnResolver = Callable[[argparse.Namespace], str]


def run_verify(args: argparse.Namespace, resolve_dsn: DsnResolver) -> int:
    """Exit status 0 when every chain verifies, 1 when one is broken, 2 on bad usage."""
    if args.file is not None:
        if args.runs or args.all:
            print("pgbridge: --file checks one export; give no RUN and no --all with it", file=sys.stderr)
            return 2
        try:
            with args.file.open(encoding="utf-8") as lines:
                report = verify_export(lines)
        except OSError as exc:
            print(f"pgbridge: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except KeyError as exc:
            print(
                f"pgbridge: {args.file}: not a {CHAIN_VERSION} export: a line has no {exc} field",
                file=sys.stderr,
            )
            return 2
        except (ValueError, TypeError) as exc:
            print(f"pgbridge: {args.file}: {exc}", file=sys.stderr)
            return 2
        return _print_reports([report], as_json=args.json)
    if not args.runs and not args.all:
        print("pgbridge: name the runs to verify, or --all", file=sys.stderr)
        return 2
    return asyncio.run(_verify_in_database(resolve_dsn(args), args))


async def _verify_in_database(dsn: str, args: argparse.Namespace) -> int:
    async with PostgresStreamBridge(dsn, schema=args.schema, pool_max_size=2) as bridge:
        reports = bridge.verify_all(progress=_progress) if args.all else _each(bridge, args.runs)
        collected = [report async for report in _echo(reports, as_json=args.json)]
    return _summary(collected, as_json=args.json)


async def _each(bridge: PostgresStreamBridge, run_ids: Iterable[str]) -> AsyncIterator[ChainReport]:
    for run_id in run_ids:
        yield await bridge.verify(run_id, progress=_progress)


async def _echo(reports: AsyncIterator[ChainReport], *, as_json: bool) -> AsyncIterator[ChainReport]:
    """Print each verdict as it comes (a table row, or a JSON line), and pass it on."""
    if not as_json:
        print(f"{'run':<40} {'events':>10}  result")
    async for report in reports:
        print(_format(report, as_json=as_json), flush=True)
        yield report


def _print_reports(reports: list[ChainReport], *, as_json: bool) -> int:
    if not as_json:
        print(f"{'run':<40} {'events':>10}  result")
    for report in reports:
        print(_format(report, as_json=as_json))
    return _summary(reports, as_json=as_json)


def _format(report: ChainReport, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(report.to_json())
    if report.verdict == "broken":
        verdict = f"BROKEN at seq {report.broken_at}: {report.problem} ({report.detail})"
    elif report.verdict == "deleted" and report.deletion is not None:
        verdict = report.deletion.describe()
    else:
        verdict = report.verdict  # ok, or no such run
    return f"{report.run_id:<40} {report.events_checked:>10}  {verdict}"


def _summary(reports: list[ChainReport], *, as_json: bool) -> int:
    """Exit status 1 unless every chain verified: one is broken, or a run named is gone."""
    broken = sum(r.verdict == "broken" for r in reports)
    deleted = sum(r.verdict == "deleted" for r in reports)
    missing = sum(r.verdict == "no such run" for r in reports)
    if not as_json:
        line = f"{len(reports)} run(s) checked, {broken} broken"
        line += f", {deleted} deleted" if deleted else ""
        line += f", {missing} not found" if missing else ""
        print(line, file=sys.stderr)
    return 0 if all(r.ok for r in reports) else 1


def _progress(events: int) -> None:
    print(f"  … {events:,} events checked", file=sys.stderr, flush=True)


def run_export(args: argparse.Namespace, resolve_dsn: DsnResolver) -> int:
    return asyncio.run(_export(resolve_dsn(args), args))


async def _export(dsn: str, args: argparse.Namespace) -> int:
    async with PostgresStreamBridge(dsn, schema=args.schema, pool_max_size=2) as bridge:
        try:
            if args.output is None:
                written = await bridge.export(args.run, sys.stdout)
            else:
                with args.output.open("w", encoding="utf-8") as out:
                    written = await bridge.export(args.run, out)
        except StreamNotFoundError as exc:
            print(f"pgbridge: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"pgbridge: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    print(f"exported {written} event(s) of run {args.run!r}", file=sys.stderr)
    return 0
