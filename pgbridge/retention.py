"""Retention policies (SPEC section 8): what to delete, and the report of a pass."""

from __future__ import annotations

from dataclasses import dataclass

from pgbridge.errors import InvalidEventError


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What a retention pass deletes. Times are in seconds; None disables a rule."""

    max_events_per_run: int | None = None
    max_event_age: float | None = None
    ended_run_ttl: float | None = 7 * 86400
    tombstone_ttl: float | None = 30 * 86400
    active_timeout: float = 600
    awaiting_input_timeout: float = 7200

    def __post_init__(self) -> None:
        if self.max_events_per_run is not None and self.max_events_per_run < 0:
            raise InvalidEventError("max_events_per_run must not be negative")
        for name in ("max_event_age", "ended_run_ttl", "tombstone_ttl"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidEventError(f"{name} must not be negative")
        for name in ("active_timeout", "awaiting_input_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidEventError(f"{name} must be positive")


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass did."""

    events_deleted: int = 0
    runs_deleted: int = 0
    runs_dead_lettered: int = 0
