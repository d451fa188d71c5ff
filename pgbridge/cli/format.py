"""How ``pgbridge runs``, ``events``, ``tail`` and ``stats`` look: text, colour, JSON.

Pure: values in, text (or rich renderables) out, no database and no I/O, so
the look is tested without either. Colour is decided by the caller (a
terminal gets rich's styles, anything else the same text plain).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.filesize import decimal
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from pgbridge.contract import JSONValue
from pgbridge.inspection import EventRow, RunSummary, Stats

STATUS_STYLES = {
    "active": "green",
    "awaiting_input": "bold yellow",
    "ended": "blue",
    "cancelled": "magenta",
    "errored": "bold red",
    "deleted": "dim",
    "expired": "dim",
}
#: Wide enough that no plain table is ever wrapped or cut.
PLAIN_WIDTH = 10_000


@dataclass(frozen=True, slots=True)
class EventLine:
    """One event as the commands print it; ``terminal`` is None when not known (``tail``)."""

    run_id: str
    event_id: str
    event: str
    data: JSONValue
    created_at: datetime | None
    terminal: bool | None = None

    @classmethod
    def from_row(cls, row: EventRow) -> EventLine:
        return cls(row.run_id, row.event_id, row.event, row.data, row.created_at, row.terminal)

    @classmethod
    def from_id(cls, run_id: str, event_id: str, event: str, data: JSONValue) -> EventLine:
        """An event known by its ID alone: its creation time is the ID's ms."""
        ms = int(event_id.split("-", 1)[0])
        return cls(run_id, event_id, event, data, datetime.fromtimestamp(ms / 1000, UTC))


def timestamp(moment: datetime | None) -> str:
    """ISO 8601 in UTC, to the millisecond: ``2026-11-27T10:00:00.123Z``."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def local_time(moment: datetime | None) -> str:
    """Local time to the second, for tables read by people."""
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def human_duration(span: timedelta) -> str:
    """``950ms``, ``42s``, ``3m 05s``, ``2h 03m``, ``3d 04h``."""
    seconds = span.total_seconds()
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f}ms"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


def data_text(data: JSONValue) -> str:
    return json.dumps(data, ensure_ascii=False)


# -- events --------------------------------------------------------------------------


def event_line(line: EventLine) -> str:
    """``<time>  <id>  <event>  <data as JSON>``: one line, the same with or without colour."""
    return f"{timestamp(line.created_at)}  {line.event_id}  {line.event}  {data_text(line.data)}"


def event_text(line: EventLine) -> Text:
    """:func:`event_line` with colour: terminal events stand out, data is highlighted."""
    text = Text()
    text.append(timestamp(line.created_at), style="dim")
    text.append("  ")
    text.append(line.event_id, style="cyan")
    text.append("  ")
    text.append(line.event, style=_event_style(line))
    text.append("  ")
    text.append_text(JSONHighlighter()(Text(data_text(line.data))))
    return text


def _event_style(line: EventLine) -> str:
    if not line.terminal:
        return "bold"
    return {"end": "bold green", "cancel": "bold magenta"}.get(line.event, "bold red")


def event_json(line: EventLine) -> str:
    """One JSON object with the columns of pgbridge_events, but ``terminal`` (not known
    while following a run: ``tail`` ends after the terminal event)."""
    ms, seq = (int(part) for part in line.event_id.split("-", 1))
    out: dict[str, Any] = {
        "run_id": line.run_id,
        "seq": seq,
        "event_id": line.event_id,
        "event": line.event,
        "data": line.data,
        "created_ms": ms,
        "created_at": line.created_at.isoformat() if line.created_at else None,
    }
    return json.dumps(out)


def gap_line(data: JSONValue) -> str:
    """The ``__gap__`` marker of a subscription, as a line."""
    info = data if isinstance(data, dict) else {}
    after = f" after {info['requested_event_id']}" if info.get("requested_event_id") else ""
    earliest = info.get("earliest_available_event_id")
    going_on = f"going on from {earliest}" if earliest else "none is left"
    return f"-- gap: {info.get('gap_count')} event(s) deleted by retention{after}; {going_on} --"


def gap_json(run_id: str, data: JSONValue) -> str:
    return json.dumps({"run_id": run_id, "event_id": "", "event": "__gap__", "data": data})


# -- runs ------------------------------------------------------------------------------


def status_key(run: RunSummary) -> str:
    """What a run is, as every surface says it: a Durable Stream deleted while forks read
    it (410) is ``deleted``, one past its TTL or Expires-At (404) ``expired``."""
    if run.deleted:
        return "deleted"
    if run.expired:
        return "expired"
    return run.status


def status_label(run: RunSummary) -> str:
    if run.deleted:
        return "deleted (kept for forks)"
    if run.terminal_event == "dead_letter":
        return f"{run.status} (dead letter)"
    return status_key(run)


def events_label(run: RunSummary) -> str:
    """The events a read of the run gives, then where some come from and what retention took:
    ``12 (+3 deleted)``, ``2 (2 from <source>)`` for a fork."""
    notes = []
    if run.events_inherited:
        notes.append(f"{run.events_inherited} from {run.fork_of}")
    if run.events_deleted:
        notes.append(f"+{run.events_deleted} deleted")
    return f"{run.events_retained} ({', '.join(notes)})" if notes else str(run.events_retained)


#: The columns of ``pgbridge runs``: name, justification, and the order they are dropped in
#: to fit a narrow terminal (highest first; the run id is never dropped nor cut).
RUN_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("RUN", "left", 0),
    ("STATUS", "left", 1),
    ("EVENTS", "right", 2),
    ("FIRST ID", "left", 7),
    ("LAST ID", "left", 3),
    ("STARTED", "left", 5),
    ("ENDED", "left", 6),
    ("DURATION", "right", 4),
)
#: Spaces between two columns of a table.
COLUMN_GAP = 2
#: The columns of RUN_COLUMNS whose cells may wrap between words on a narrow terminal.
WRAPPING_COLUMNS = frozenset({1, 2})


def _narrowest(cell: str, *, wraps: bool) -> int:
    """The narrowest a cell can be: its longest word when it may wrap, else all of it."""
    return max(map(len, cell.split())) if wraps and cell.strip() else len(cell)


def run_cells(run: RunSummary) -> list[str]:
    """A run's row of ``pgbridge runs``, in the order of :data:`RUN_COLUMNS`."""
    return [
        run.run_id,
        status_label(run),
        events_label(run),
        run.first_event_id or "-",
        run.last_event_id or "-",
        local_time(run.started_at),
        local_time(run.ended_at),
        human_duration(run.duration),
    ]


def fitting_columns(rows: list[list[str]], width: int | None) -> dict[int, int | None]:
    """The :data:`RUN_COLUMNS` to show so that every line fits in *width* (all of them for
    None), by index, each with the width to give it (None: as wide as its cells). The least
    useful go first, the run id never; STATUS and EVENTS may wrap between words first."""
    shown = list(range(len(RUN_COLUMNS)))
    if width is None:
        return dict.fromkeys(shown)
    natural = [max([len(RUN_COLUMNS[i][0])] + [len(row[i]) for row in rows]) for i in shown]
    narrowest = [
        max([len(RUN_COLUMNS[i][0])] + [_narrowest(row[i], wraps=i in WRAPPING_COLUMNS) for row in rows])
        for i in shown
    ]

    def total(widths: list[int]) -> int:
        return sum(widths[i] for i in shown) + COLUMN_GAP * (len(shown) - 1)

    for index in sorted(shown, key=lambda i: -RUN_COLUMNS[i][2]):
        if total(narrowest) <= width or RUN_COLUMNS[index][2] == 0:
            break
        shown.remove(index)
    widths = list(natural)
    while total(widths) > width:  # narrow the widest wrapping column shown, a character at a time
        candidates = [i for i in shown if i in WRAPPING_COLUMNS and widths[i] > narrowest[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i] - narrowest[i])
        widths[widest] -= 1
    return {i: (widths[i] if i in WRAPPING_COLUMNS else None) for i in shown}


def runs_table(runs: Iterable[RunSummary], *, colour: bool, width: int | None = None) -> Table:
    """The table of ``pgbridge runs``: every column, or (given a terminal's *width*) those that
    fit it, the least useful dropped first. The run id is never cut: if it alone is wider
    than the terminal, it wraps."""
    listed = list(runs)
    rows = [run_cells(run) for run in listed]
    shown = fitting_columns(rows, width)
    table = Table(box=None, pad_edge=False, header_style="bold" if colour else "")
    for index, fixed in shown.items():
        name, justify, _ = RUN_COLUMNS[index]
        if index == 0:  # never cut: as wide as the longest id, or folded when wider than the terminal
            longest = max([len(name)] + [len(cells[0]) for cells in rows])
            table.add_column(name, justify="left", overflow="fold", min_width=min(longest, width or longest))
        elif fixed is not None:
            table.add_column(name, justify=justify, overflow="fold", width=fixed)  # type: ignore[arg-type]
        else:
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for run, cells in zip(listed, rows, strict=True):
        styled: list[RenderableType] = list(cells)
        styled[1] = Text(cells[1], style=STATUS_STYLES.get(status_key(run), "") if colour else "")
        table.add_row(*(styled[i] for i in shown))
    return table


def hidden_columns(runs: Iterable[RunSummary], width: int) -> list[str]:
    """The columns :func:`runs_table` leaves out at *width*."""
    shown = fitting_columns([run_cells(run) for run in runs], width)
    return [name for index, (name, _, _) in enumerate(RUN_COLUMNS) if index not in shown]


# -- stats -------------------------------------------------------------------------------


def stats_view(stats: Stats, *, colour: bool) -> RenderableType:
    heading = "bold" if colour else ""
    tables = Table(box=None, pad_edge=False, header_style=heading)
    for name in ("TABLE", "ROWS (EST.)", "TOTAL", "DATA", "INDEXES"):
        tables.add_column(name, justify="left" if name == "TABLE" else "right", no_wrap=True)
    for size in stats.tables:
        rows = "-" if size.rows_estimate is None else f"{size.rows_estimate:,}"
        tables.add_row(
            size.name, rows, decimal(size.total_bytes), decimal(size.table_bytes), decimal(size.index_bytes)
        )
    statuses = Table(box=None, pad_edge=False, header_style=heading)
    for name in ("STATUS", "RUNS", "EVENTS RETAINED", "EVENTS PUBLISHED"):
        statuses.add_column(name, justify="left" if name == "STATUS" else "right", no_wrap=True)
    for count in stats.by_status:
        statuses.add_row(
            Text(count.status, style=STATUS_STYLES.get(count.status, "") if colour else ""),
            f"{count.runs:,}",
            f"{count.events_retained:,}",
            f"{count.events_published:,}",
        )
    return Group(
        Text(f"schema {stats.schema!r}, as of {local_time(stats.checked_at)}", style=heading),
        Text(""),
        tables,
        Text(""),
        statuses,
        Text(""),
        Text(_oldest_line(stats)),
        Text(_retention_line(stats)),
    )


def _oldest_line(stats: Stats) -> str:
    oldest = stats.oldest_event
    if oldest is None:
        return "oldest retained event: none (no events are stored)"
    age = human_duration(stats.checked_at - oldest.created_at)
    return (
        f"oldest retained event: {oldest.event_id} of run {oldest.run_id!r}, "
        f"{local_time(oldest.created_at)} ({age} ago)"
    )


def _retention_line(stats: Stats) -> str:
    last = stats.last_retention_pass
    if last is None:
        return (
            "last retention pass: none recorded "
            "(run `pgbridge retention`, or give a bridge retention=RetentionPolicy(...))"
        )
    ago = human_duration(stats.checked_at - last.finished_at)
    took = human_duration(last.finished_at - last.started_at)
    policy = " ".join(
        f"--{name.replace('_', '-')} {_policy_value(name, value)}" for name, value in last.policy.items()
    )
    return (
        f"last retention pass: {local_time(last.finished_at)} ({ago} ago, took {took}, pass #{last.passes}): "
        f"events deleted {last.events_deleted:,}, runs deleted {last.runs_deleted:,}, "
        f"runs dead-lettered {last.runs_dead_lettered:,}\n  policy: {policy}"
    )


def _policy_value(name: str, value: Any) -> str:
    """A recorded policy's value as ``pgbridge retention`` takes it: ``7d``, ``none``, ``10000``."""
    from pgbridge.cli.retention import format_duration

    if value is None or name == "max_events_per_run" or not isinstance(value, int | float):
        return "none" if value is None else str(value)
    return format_duration(float(value))


def plain(renderable: RenderableType) -> str:
    """*renderable* as plain text (no colour, never wrapped), trailing spaces trimmed."""
    buffer = StringIO()
    Console(file=buffer, width=PLAIN_WIDTH, color_system=None, force_terminal=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())
