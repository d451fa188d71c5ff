"""``pgbridge runs``, ``events``, ``tail`` and ``stats``: looking at runs from a terminal.

Thin glue: reads go through :mod:`pgbridge.inspection`, ``tail`` through the
bridge's ``subscribe``, and the look is :mod:`pgbridge.cli.format`.
Colour only when standard output is a terminal; ``--json`` for scripts.
Errors are raised as :class:`~pgbridge.exceptions.StreamBridgeError` and turned
into exit statuses by :func:`pgbridge.cli.main.main` (2 for bad input, 1 for the
rest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgbridge.cli.signals import until_signalled
from pgbridge.exceptions import InvalidEventError, StreamNotFoundError
from pgbridge.sql import RUN_STATUSES

if TYPE_CHECKING:
    from rich.console import RenderableType

    from pgbridge.cli.format import EventLine

DsnResolver = Callable[[argparse.Namespace], str]
AddOptions = Callable[[argparse.ArgumentParser], None]
#: The commands this module runs.
COMMANDS = frozenset({"runs", "events", "tail", "stats"})


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_parsers(
    commands: argparse._SubParsersAction[Any],
    *,
    connection_options: AddOptions,
    duration: Callable[[str], float],
) -> None:
    """Add the four commands to the ``pgbridge`` parser."""

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)
        connection_options(parser)
        return parser

    runs = command(
        "runs",
        help="list runs: status, events, first and last ID, start, end, duration",
        description="The most recently active runs first (open runs by their last activity, "
        "ended runs by their end): the pgbridge_runs view.",
    )
    runs.add_argument("--status", choices=RUN_STATUSES, help="only runs of this status")
    runs.add_argument(
        "--since",
        type=duration,
        metavar="DURATION",
        help="only runs active in the last DURATION (90s, 15m, 12h, 7d): open runs that published since, "
        "ended runs that ended since",
    )
    runs.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N runs (default: %(default)s)"
    )
    runs.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: the columns of pgbridge_runs, then fork_of, "
        "events_inherited, deleted, expired",
    )
    runs.add_argument(
        "--wide",
        action="store_true",
        help="every column, however wide the terminal (by default a terminal gets the columns that "
        "fit it, the run id always whole)",
    )

    events = command(
        "events",
        help="print a run's stored events, oldest first",
        description="A run's retained events in seq order, one a line: time (UTC), event ID, "
        "event name, data as JSON. Coloured on a terminal.",
    )
    _add_run(events, after_help="start after this event ID, as a client resuming with it would")
    events.add_argument("--limit", type=_positive_int, metavar="N", help="at most N events")
    events.add_argument(
        "--json", action="store_true", help="one JSON object per line: the columns of pgbridge_events"
    )

    tail = command(
        "tail",
        help="follow a run live, like tail -f, until its terminal event",
        description="Print a run's events, then new ones as they are published, until its terminal "
        "event. Ctrl-C stops and prints the last event ID seen, to resume from with --from.",
    )
    _add_run(tail, after_help="resume after this event ID")
    tail.add_argument(
        "-n",
        "--lines",
        type=_count,
        metavar="N",
        help="start with the last N events (0: only new ones), like tail -n (default: all of them)",
    )
    tail.add_argument("--wait", action="store_true", help="wait for a run that has not started yet")
    tail.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line, as `pgbridge events --json` (without `terminal`)",
    )

    stats = command("stats", help="table sizes, runs and events by status, oldest event, last retention pass")
    stats.add_argument("--json", action="store_true", help="one JSON object")


def _add_run(parser: argparse.ArgumentParser, *, after_help: str) -> None:
    """The run a command reads, and the event ID to start after."""
    parser.add_argument("run", metavar="RUN", help="the run id")
    parser.add_argument("--from", dest="after", metavar="ID", help=after_help)


def run_command(args: argparse.Namespace, resolve_dsn: DsnResolver) -> int:
    """Run ``args.command`` (one of :data:`COMMANDS`); returns the exit status."""
    commands = {"runs": _runs, "events": _events, "tail": _tail, "stats": _stats}
    dsn = resolve_dsn(args)
    try:
        return asyncio.run(commands[args.command](dsn, args))
    except BrokenPipeError:
        # The reader left (`pgbridge events RUN | head`): not an error. Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _colour() -> bool:
    return sys.stdout.isatty()


def _show(renderable: RenderableType) -> None:
    from rich.console import Console

    from pgbridge.cli.format import plain

    if _colour():
        Console(highlight=False, soft_wrap=True).print(renderable)
    else:
        print(plain(renderable))


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- runs -------------------------------------------------------------------------------


async def _runs(dsn: str, args: argparse.Namespace) -> int:
    from pgbridge.cli.format import runs_table
    from pgbridge.inspection import Inspector

    async with Inspector(dsn, schema=args.schema) as inspector:
        runs = await inspector.runs(status=args.status, since=args.since, limit=args.limit)
    if args.json:
        for run in runs:
            print(json.dumps(run.to_json()))
    elif not runs:
        _note("no runs" + (" match" if args.status or args.since is not None else ""))
    elif not _colour():
        _show(runs_table(runs, colour=False))
    elif args.wide:  # every column whole: the terminal wraps long lines
        from rich.console import Console

        from pgbridge.cli.format import PLAIN_WIDTH

        Console(highlight=False, soft_wrap=True, width=PLAIN_WIDTH).print(runs_table(runs, colour=True))
    else:
        from rich.console import Console

        from pgbridge.cli.format import hidden_columns

        console = Console(highlight=False)  # no soft wrap: the table's cells may wrap to fit
        width = console.width
        console.print(runs_table(runs, colour=True, width=width))
        hidden = hidden_columns(runs, width)
        if hidden:
            _note(f"({', '.join(hidden)} left out to fit {width} columns: --wide shows every column)")
    return 0


# -- events -----------------------------------------------------------------------------


class _EventPrinter:
    """Prints events (and gap markers) as lines, coloured lines, or JSON lines."""

    def __init__(self, *, as_json: bool, flush: bool) -> None:
        self._json = as_json
        self._flush = flush
        self._console: Any = None
        if not as_json and _colour():
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True)

    def event(self, line: EventLine, json_text: str | None = None) -> None:
        from pgbridge.cli.format import event_json, event_line, event_text

        if self._json:
            self._write(json_text if json_text is not None else event_json(line))
        elif self._console is not None:
            self._console.print(event_text(line))
        else:
            self._write(event_line(line))

    def gap(self, run_id: str, data: Any) -> None:
        from pgbridge.cli.format import gap_json, gap_line

        if self._json:
            self._write(gap_json(run_id, data))
        elif self._console is not None:
            self._console.print(gap_line(data), style="bold magenta", markup=False)
        else:
            self._write(gap_line(data))

    def _write(self, text: str) -> None:
        sys.stdout.write(text + "\n")
        if self._flush:
            sys.stdout.flush()


async def _events(dsn: str, args: argparse.Namespace) -> int:
    from pgbridge.cli.format import EventLine
    from pgbridge.inspection import Inspector

    printer = _EventPrinter(as_json=args.json, flush=False)
    async with (
        Inspector(dsn, schema=args.schema) as inspector,
        inspector.read_events(args.run, after=args.after, limit=args.limit) as listing,
    ):
        if listing.resume.status == "evicted":
            _note(
                f"note: {listing.resume.gap_count} event(s) after {args.after} were deleted by retention; "
                f"listing from the earliest retained event, {listing.run.first_event_id}"
            )
        printed = 0
        async for row in listing.events:
            printer.event(EventLine.from_row(row), json.dumps(row.to_json()) if args.json else None)
            printed += 1
    if printed == 0:
        after = f" after {args.after}" if args.after else ""
        _note(f"run {args.run!r} has no stored events{after}")
    return 0


# -- tail -------------------------------------------------------------------------------


@dataclass
class _Seen:
    """The ID of the last event printed (or the starting cursor): where to resume."""

    last_id: str | None


async def _tail(dsn: str, args: argparse.Namespace) -> int:
    """Follow the run; Ctrl-C (or SIGTERM) stops it and prints where to resume."""
    seen = _Seen(last_id=args.after)
    return await until_signalled(_follow(dsn, args, seen), on_signal=lambda: _report_interrupt(args, seen))


def _report_interrupt(args: argparse.Namespace, seen: _Seen) -> None:
    _note(f"last event ID: {seen.last_id or 'none (no event was printed)'}")
    _note(f"resume with: {shlex.join(resume_command(args, seen.last_id))}")


def resume_command(args: argparse.Namespace, last_id: str | None) -> list[str]:
    """The ``pgbridge tail`` that goes on after *last_id*, with the options the user gave to
    reach the same database (a DSN's password shown as ``***``, as everywhere)."""
    from pgbridge.dsn import redact_dsn
    from pgbridge.sql import DEFAULT_SCHEMA

    command = ["pgbridge", "tail", args.run]
    if last_id:
        command += ["--from", last_id]
    if args.dsn:
        command += ["--dsn", redact_dsn(args.dsn)]
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir)]
    if args.schema != DEFAULT_SCHEMA:
        command += ["--schema", args.schema]
    if args.json:
        command.append("--json")
    return command


async def _follow(dsn: str, args: argparse.Namespace, seen: _Seen) -> int:
    from pgbridge.bridge import PostgresStreamBridge
    from pgbridge.cli.format import EventLine
    from pgbridge.contract import END_SENTINEL, GAP_EVENT, HEARTBEAT_SENTINEL

    printer = _EventPrinter(as_json=args.json, flush=True)
    async with PostgresStreamBridge(dsn, schema=args.schema, pool_min_size=1, pool_max_size=2) as bridge:
        info = await bridge.run_info(args.run)
        if info is None and not args.wait:
            raise StreamNotFoundError(f"no run {args.run!r} (give --wait to wait for it to start)")
        if info is None:
            _note(f"waiting for run {args.run!r} to start (Ctrl-C to stop)")
        if args.after is not None:
            resume = await bridge.resolve(args.run, args.after)
            if resume.status == "invalid":
                raise InvalidEventError(
                    f"not an event ID: {args.after!r} (an event ID is <ms>-<seq>, e.g. 1764000000123-5)"
                )
            if resume.status == "unknown":
                raise InvalidEventError(f"{args.after!r} is not an event ID of run {args.run!r}")
        start = args.after
        if args.after is None and args.lines is not None and info is not None:
            start = seen.last_id = await _before_last(dsn, args, args.lines)
        async for item in bridge.subscribe(args.run, last_event_id=start):
            if item == HEARTBEAT_SENTINEL:
                continue
            if item == END_SENTINEL:
                if seen.last_id is not None:
                    _note(f"run {args.run!r} has already ended; nothing follows {seen.last_id}")
                else:
                    _note(f"run {args.run!r} has already ended and no event of it is left to print")
                continue
            if item.event == GAP_EVENT:
                printer.gap(args.run, item.data)
                continue
            if not item.id:  # CANCELLED_SENTINEL: the bridge is closing
                continue
            printer.event(EventLine.from_id(args.run, item.id, item.event, item.data))
            seen.last_id = item.id
    return 0


async def _before_last(dsn: str, args: argparse.Namespace, count: int) -> str | None:
    """The ID of the event before the run's last *count* (None: start from its first)."""
    from pgbridge.inspection import Inspector

    async with Inspector(dsn, schema=args.schema) as inspector:
        return await inspector.event_before_last(args.run, count)


# -- stats ------------------------------------------------------------------------------


async def _stats(dsn: str, args: argparse.Namespace) -> int:
    from pgbridge.cli.format import stats_view
    from pgbridge.inspection import Inspector

    async with Inspector(dsn, schema=args.schema) as inspector:
        stats = await inspector.stats()
    if args.json:
        print(json.dumps(stats.to_json()))
    else:
        _show(stats_view(stats, colour=_colour()))
    return 0
