"""The StreamBridge contract: the types, sentinels and abstract bridge.

These names, fields and values match the agent runtime's stream-bridge
contract exactly, so code written against that contract runs unchanged on
:class:`pgbridge.PostgresStreamBridge`. Only the standard library is used
here: this module is the bottom layer every other module may import.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Literal, TypeAlias

JSONScalar: TypeAlias = None | bool | int | float | str
JSONValue: TypeAlias = JSONScalar | list["JSONValue"] | dict[str, "JSONValue"]

ResumeStatus: TypeAlias = Literal["fresh", "resumed", "evicted", "invalid", "unknown"]


class StreamStatus(str, Enum):
    """Where a stream is in its life.

    ``ENDED``, ``CANCELLED`` and ``ERRORED`` are the terminal states a run
    reaches through a terminal event. ``CLOSED`` is kept for compatibility
    with the contract; pgbridge never stores it (closing a bridge does not
    change any run).
    """

    ACTIVE = "active"
    ENDED = "ended"
    CANCELLED = "cancelled"
    ERRORED = "errored"
    CLOSED = "closed"


TERMINAL_STATES: frozenset[StreamStatus] = frozenset(
    {StreamStatus.ENDED, StreamStatus.CANCELLED, StreamStatus.ERRORED}
)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of a run, as subscribers receive it.

    ``id`` is the event ID ``"<ms>-<seq>"`` (empty for sentinels and gap
    markers, which are not part of the run's history).
    """

    id: str
    event: str
    data: JSONValue


@dataclass(frozen=True, slots=True)
class ResumeResult:
    """How a ``Last-Event-ID`` cursor resolves against a run's retained events.

    ``next_offset`` is the seq of the next event a subscription yields;
    ``gap_count`` is how many events the client will never see (non-zero only
    when ``status == "evicted"``).
    """

    next_offset: int
    status: ResumeStatus
    gap_count: int = 0


HEARTBEAT_SENTINEL = StreamEvent(id="", event="__heartbeat__", data=None)
END_SENTINEL = StreamEvent(id="", event="__end__", data=None)
CANCELLED_SENTINEL = StreamEvent(id="", event="__cancelled__", data=None)

#: Event name of the marker a subscription yields before events it skips.
GAP_EVENT = "__gap__"


class StreamBridge(abc.ABC):
    """What every stream bridge offers to an agent runtime.

    A bridge carries run semantics, not storage semantics:

    * the terminal events ``end``, ``cancel`` and ``error`` are real events,
      replayable like any other, and end a run;
    * :meth:`close` shuts the bridge down; it is never a run cancellation.
    """

    @abc.abstractmethod
    async def publish(self, run_id: str, event: str, data: JSONValue) -> str:
        """Append one event to *run_id* and return its event ID."""

    @abc.abstractmethod
    async def publish_end(self, run_id: str) -> str:
        """Declare that *run_id* produces no more events."""

    async def publish_terminal(
        self,
        run_id: str,
        kind: StreamStatus,
        data: JSONValue = None,
    ) -> str:
        """Append a terminal event (end, cancel or error) to *run_id*."""
        await self.publish_end(run_id)
        return ""

    @abc.abstractmethod
    def subscribe(
        self,
        run_id: str,
        *,
        last_event_id: str | None = None,
        heartbeat_interval: float = 15.0,
    ) -> AsyncIterator[StreamEvent]:
        """Yield the replayable events of *run_id*, resuming after *last_event_id*."""

    @abc.abstractmethod
    async def cleanup(self, run_id: str, *, delay: float = 0) -> None:
        """Release what this bridge holds for *run_id*."""

    async def cancel(self, run_id: str) -> None:
        """Cancel *run_id*; its subscribers receive the cancel event."""
        await self.publish_terminal(run_id, StreamStatus.CANCELLED)

    async def mark_awaiting_input(self, run_id: str) -> None:
        """Record that *run_id* waits for human input."""

    async def start(self) -> None:
        """Start background work, if the bridge has any."""

    async def close(self) -> None:
        """Release the bridge's own resources."""
