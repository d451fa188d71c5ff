"""Retention policies (docs/behaviour.md §8): what a pass deletes, and its report.

Every pass also sweeps expired Durable Streams (past their Expires-At, or
idle longer than their TTL): no request can see them any more, so no rule
switches that off. Pure values, checked when built, so a bad policy fails where it is written
and never half-way through a pass. The pass itself is in
:mod:`pgbridge.retention.sweep`, the periodic job in :mod:`pgbridge.retention.job`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pgbridge.exceptions import ConfigurationError

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What a retention pass deletes. Times are in seconds; None switches a rule off.

    The defaults keep every event of a run until a week after it ended, keep
    its run row (a tombstone: late resumers get ``evicted`` with an exact
    count) for 30 days more, and dead-letter a run that published nothing
    for 10 minutes (2 hours while it awaits input).
    """

    #: Keep the newest N events of each run (oldest go first, like a stream's max length).
    max_events_per_run: int | None = None
    #: Delete each run's oldest events up to the newest one older than this.
    max_event_age: float | None = None
    #: Delete a run's events this long after it ended.
    ended_run_ttl: float | None = 7 * _DAY
    #: Delete its run row at ended + ended_run_ttl + tombstone_ttl (never if either is None).
    tombstone_ttl: float | None = 30 * _DAY
    #: Dead-letter an active run with no publish or mark_awaiting_input for this long.
    active_timeout: float = 600
    #: The same while it awaits input.
    awaiting_input_timeout: float = 7200

    def __post_init__(self) -> None:
        count = self.max_events_per_run
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise ConfigurationError(f"max_events_per_run must be a whole number >= 0 or None, not {count!r}")
        for name in ("max_event_age", "ended_run_ttl", "tombstone_ttl"):
            value = getattr(self, name)
            if value is not None and not (_is_seconds(value) and value >= 0):
                raise ConfigurationError(f"{name} must be a number of seconds >= 0 or None, not {value!r}")
        for name in ("active_timeout", "awaiting_input_timeout"):
            value = getattr(self, name)
            if not (_is_seconds(value) and value > 0):
                raise ConfigurationError(f"{name} must be a number of seconds > 0, not {value!r}")


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass did; reports of passes add up to what was done."""

    events_deleted: int = 0
    #: Run rows removed: tombstones past their time, and expired Durable Streams
    #: (with the soft-deleted sources whose last fork one of them was).
    runs_deleted: int = 0
    #: Silent runs ended with a ``dead_letter`` terminal event.
    runs_dead_lettered: int = 0
    #: Tables the pass vacuumed itself because autovacuum is off for them.
    tables_vacuumed: int = 0
    #: Expired Durable Streams the pass removed as a DELETE would: deleted, or
    #: soft-deleted while forks read them (their events then stay for the forks).
    streams_expired: int = 0
