"""``pgbridge retention``: its options, ``--dry-run``, and the question before a one-off pass.

Durations are read and shown the way a user writes them (``90s``, ``10m``,
``12h``, ``7d``); values that make no sense (keeping 0 events, deleting
events older than 0 s, a pass every 0 s, negative durations) are refused
with one line and exit status 2, as argparse refuses a bad option.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgbridge.retention.policy import RetentionPolicy

if TYPE_CHECKING:
    from pgbridge.inspection import RetentionPreview

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*([smhd]?)", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: The shortest ``--every``: a pass reads every candidate index, so more often is a busy loop.
MIN_EVERY_SECONDS = 1.0


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"15m"``, ``"12h"`` or ``"7d"``."""
    cleaned = text.strip().lower()
    if cleaned.startswith("-"):
        raise argparse.ArgumentTypeError(f"a duration cannot be negative: {text!r}")
    match = _DURATION.fullmatch(cleaned)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 600, 10m, 12h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float | None) -> str:
    """A duration as :func:`parse_duration` reads it, in its largest whole unit: ``7d``, ``10m``,
    ``90s``, ``1.5s``; ``none`` for None."""
    if seconds is None:
        return "none"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def positive_duration(text: str) -> float:
    """A duration of more than 0 s."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0s, not {text!r}")
    return seconds


def every(text: str) -> float:
    seconds = parse_duration(text)
    if seconds < MIN_EVERY_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be at least {format_duration(MIN_EVERY_SECONDS)} between passes, not {text!r}"
        )
    return seconds


def _optional(parse: Callable[[str], float]) -> Callable[[str], float | None]:
    def optional(text: str) -> float | None:
        """A duration, or ``none`` to switch the rule off."""
        return None if text.strip().lower() == "none" else parse(text)

    return optional


def _keep_count(text: str) -> int | None:
    """How many events to keep per run: 1 or more, or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be 1 or more, not {value} (0 would delete every event of every run; "
            "'none' switches the rule off)"
        )
    return value


#: The retention policy's rules as ``pgbridge retention`` options: the field, how its
#: value is read, the metavar and the help (the default, the policy's, is added to it).
POLICY_OPTIONS: tuple[tuple[str, Callable[[str], object], str, str], ...] = (
    ("max_events_per_run", _keep_count, "N", "keep the newest N events of each run"),
    ("max_event_age", _optional(positive_duration), "AGE", "delete each run's events older than AGE"),
    ("ended_run_ttl", _optional(parse_duration), "TTL", "delete a run's events TTL after it ended"),
    ("tombstone_ttl", _optional(parse_duration), "TTL", "then delete its run row TTL later"),
    ("active_timeout", positive_duration, "T", "dead-letter an active run silent for T"),
    ("awaiting_input_timeout", positive_duration, "T", "the same for a run awaiting input"),
)


def add_options(parser: argparse.ArgumentParser) -> None:
    defaults = RetentionPolicy()
    parser.add_argument(
        "--every",
        type=every,
        metavar="DURATION",
        help=f"keep going: one pass every DURATION (at least {format_duration(MIN_EVERY_SECONDS)})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count what a pass would delete now, rule by rule, and delete nothing",
    )
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask before a one-off pass on a terminal (without a terminal nothing is asked)",
    )
    rules = parser.add_argument_group(
        "policy", "durations in seconds or with a unit (90s, 10m, 12h, 7d); 'none' switches a rule off"
    )
    for name, parse, metavar, help_text in POLICY_OPTIONS:
        default = getattr(defaults, name)
        shown = default if name == "max_events_per_run" and default is not None else format_duration(default)
        rules.add_argument(
            option_name(name),
            type=parse,
            default=default,
            metavar=metavar,
            help=f"{help_text} (default: {shown})",
        )


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def policy_from_args(args: argparse.Namespace) -> RetentionPolicy:
    return RetentionPolicy(**{name: getattr(args, name) for name, *_ in POLICY_OPTIONS})


def describe_policy(policy: RetentionPolicy) -> str:
    """The policy as the options that give it: ``--ended-run-ttl 7d --tombstone-ttl 30d ...``."""
    parts = []
    for name, *_ in POLICY_OPTIONS:
        value = getattr(policy, name)
        shown = str(value) if name == "max_events_per_run" and value is not None else format_duration(value)
        parts.append(f"{option_name(name)} {shown}")
    return " ".join(parts)


#: What each rule of a preview is called on screen.
_RULE_LINES = {
    "max_events_per_run": "by --max-events-per-run",
    "max_event_age": "by --max-event-age",
    "ended_run_ttl": "by --ended-run-ttl",
    "expired_streams": "of expired Durable Streams",
    "deleted_sources": "of deleted Durable Streams that go with their last fork",
}


def preview_lines(preview: RetentionPreview) -> list[str]:
    """What ``--dry-run`` prints of a preview: one line per rule, then the totals."""
    lines = [
        f"  dead-letter {preview.runs_dead_lettered:,} silent run(s) "
        "(--active-timeout, --awaiting-input-timeout)"
    ]
    for rule, count in preview.events_by_rule.items():
        lines.append(f"  delete {count:,} event(s) {_RULE_LINES.get(rule, rule)}")
    lines.append(f"  remove {preview.streams_expired:,} expired Durable Stream(s)")
    lines.append(
        f"  delete {preview.runs_deleted:,} run row(s) (tombstones past --ended-run-ttl + --tombstone-ttl, "
        "expired or deleted streams)"
    )
    lines.append(
        f"  in all: {preview.events_deleted:,} events deleted, {preview.runs_deleted:,} runs deleted, "
        f"{preview.runs_dead_lettered:,} dead-lettered, {preview.streams_expired:,} expired streams removed"
    )
    return lines


def wants_confirmation(args: argparse.Namespace) -> bool:
    """Ask before a one-off pass when a person is at the terminal and did not say --yes.

    No terminal on standard input (cron, systemd, a pipe): nothing is asked, the pass runs.
    """
    return not args.yes and args.every is None and sys.stdin.isatty()


def confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
