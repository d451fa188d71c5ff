"""pgbridge: a durable, resumable event log for agent runs, on PostgreSQL.

>>> async with PostgresStreamBridge("postgresql://postgres@localhost/app") as bridge:
...     event_id = await bridge.publish("run-1", "token", {"text": "Hello"})
...     async for event in bridge.subscribe("run-1", last_event_id=None):
...         ...
"""

from pgbridge.bridge import BridgeOptions, PostgresStreamBridge
from pgbridge.contract import (
    CANCELLED_SENTINEL,
    END_SENTINEL,
    GAP_EVENT,
    HEARTBEAT_SENTINEL,
    TERMINAL_STATES,
    JSONValue,
    ResumeResult,
    StreamBridge,
    StreamEvent,
    StreamStatus,
)
from pgbridge.durable_streams.streams import Producer
from pgbridge.exceptions import (
    BridgeClosedError,
    BridgeNotStartedError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidEventError,
    ProducerFencedError,
    ProducerSequenceError,
    PublishOutcomeUnknownError,
    RunHistoryChangedError,
    SchemaNotMigratedError,
    StreamBridgeError,
    StreamCapacityExceededError,
    StreamContentTypeError,
    StreamGoneError,
    StreamNotFoundError,
    StreamTerminatedError,
    TransactionAbortedError,
    TransactionRequiredError,
)
from pgbridge.migrate import migrate
from pgbridge.retention.policy import RetentionPolicy, RetentionReport
from pgbridge.store.events import RunInfo
from pgbridge.tokens import TokenKeyring

__all__ = [
    "CANCELLED_SENTINEL",
    "END_SENTINEL",
    "GAP_EVENT",
    "HEARTBEAT_SENTINEL",
    "TERMINAL_STATES",
    "BridgeClosedError",
    "BridgeNotStartedError",
    "BridgeOptions",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "InvalidEventError",
    "JSONValue",
    "PostgresStreamBridge",
    "Producer",
    "ProducerFencedError",
    "ProducerSequenceError",
    "PublishOutcomeUnknownError",
    "ResumeResult",
    "RetentionPolicy",
    "RetentionReport",
    "RunHistoryChangedError",
    "RunInfo",
    "SchemaNotMigratedError",
    "StreamBridge",
    "StreamBridgeError",
    "StreamCapacityExceededError",
    "StreamContentTypeError",
    "StreamEvent",
    "StreamGoneError",
    "StreamNotFoundError",
    "StreamStatus",
    "StreamTerminatedError",
    "TokenKeyring",
    "TransactionAbortedError",
    "TransactionRequiredError",
    "migrate",
]
