"""Optional Prometheus metrics: off by default, free when off.

``PostgresStreamBridge(dsn, metrics=True)`` reports into prometheus-client's
default registry, ``metrics=registry`` into a ``CollectorRegistry`` of your
own; the default (``False``) reports nothing and never imports
prometheus-client (the ``metrics`` extra). The engine calls one
:class:`BridgeMetrics` object per bridge, whose methods do nothing unless
metrics are on.

Metric objects are created once per registry and shared by every bridge
that reports into it, so any number of bridges in one process add up
instead of failing on duplicate registration. Labels stay low-cardinality:
the PostgreSQL ``schema`` of the bridge, and a small fixed ``kind`` or
``reason`` where named; never a run id. Each bridge binds its labelled
children once, so a hot-path call costs an increment, not a label lookup.

| metric | type | labels |
|---|---|---|
| ``pgbridge_events_published_total`` | counter: events committed | schema, kind (``event``, ``terminal``) |
| ``pgbridge_publish_duration_seconds`` | histogram: one publish call, from call to commit | schema |
| ``pgbridge_publish_failures_total`` | counter: events whose publish raised | schema, reason |
| ``pgbridge_active_subscribers`` | gauge: open subscriptions | schema |
| ``pgbridge_listener_reconnects_total`` | counter: LISTEN connection re-established | schema |
| ``pgbridge_retention_deleted_events_total`` | counter: events deleted by retention | schema |
| ``pgbridge_retention_deleted_runs_total`` | counter: tombstones and expired streams deleted | schema |
| ``pgbridge_retention_dead_lettered_runs_total`` | counter: stale runs ended by the reaper | schema |

``reason`` of a publish failure: ``unavailable`` (no connection; nothing was
written), ``outcome_unknown`` (the connection vanished mid-append) or
``error`` (anything else).
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from pgbridge.exceptions import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: Publish latency buckets, in seconds: a commit takes about a millisecond on
#: a healthy server; the tail shows retries while the database is away.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PUBLISH_FAILURE_REASONS = ("unavailable", "outcome_unknown", "error")


class BridgeMetrics:
    """What the engine reports. This base class records nothing (metrics off)."""

    __slots__ = ()

    def events_published(self, events: int, terminals: int) -> None:
        """*events* committed in one batch, *terminals* of them terminal events."""

    def publish_latency(self, seconds: float) -> None:
        """One publish call (publish, publish_terminal, publish_many) took *seconds* to commit."""

    def publish_failed(self, reason: str, events: int) -> None:
        """*events* could not be published, for *reason* (one of PUBLISH_FAILURE_REASONS)."""

    def subscriber_started(self) -> None:
        """A subscription began reading."""

    def subscriber_ended(self) -> None:
        """A subscription ended (terminal, close, or the reader left)."""

    def listener_reconnected(self) -> None:
        """The LISTEN connection was re-established."""

    def retention_deleted(self, *, events: int = 0, runs: int = 0, dead_lettered: int = 0) -> None:
        """A retention batch committed: events and run rows deleted, runs dead-lettered."""


#: The bridge's metrics when they are off.
NO_METRICS = BridgeMetrics()


class _Families:
    """The metric objects of one registry, registered once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            """A counter of *registry*, labelled by schema (and *labels*) like every family here."""
            return Counter(name, documentation, ["schema", *labels], registry=registry)

        self.events_published = counter(
            "pgbridge_events_published", "Events committed to run_events (terminal events included).", "kind"
        )
        self.publish_duration = Histogram(
            "pgbridge_publish_duration_seconds",
            "Time from a publish call to its commit (group commit included).",
            ["schema"],
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.publish_failures = counter(
            "pgbridge_publish_failures", "Events whose publish raised a database error.", "reason"
        )
        self.active_subscribers = Gauge(
            "pgbridge_active_subscribers",
            "Subscriptions open in this process.",
            ["schema"],
            registry=registry,
        )
        self.listener_reconnects = counter(
            "pgbridge_listener_reconnects", "Times a bridge's LISTEN connection was re-established."
        )
        self.retention_deleted_events = counter(
            "pgbridge_retention_deleted_events", "Events deleted by retention passes run in this process."
        )
        self.retention_deleted_runs = counter(
            "pgbridge_retention_deleted_runs",
            "Run rows (tombstones, expired Durable Streams) deleted by retention passes run in this process.",
        )
        self.retention_dead_lettered = counter(
            "pgbridge_retention_dead_lettered_runs",
            "Silent runs ended with a dead_letter event by passes run in this process.",
        )


_families: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()


def _families_of(registry: CollectorRegistry) -> _Families:
    with _families_lock:
        families = _families.get(registry)
        if families is None:
            families = _families[registry] = _Families(registry)
        return families


class PrometheusMetrics(BridgeMetrics):
    """One bridge's metrics, bound to its schema's labelled children."""

    __slots__ = (
        "_active",
        "_dead_lettered",
        "_deleted_events",
        "_deleted_runs",
        "_duration",
        "_events",
        "_failures",
        "_reconnects",
        "_terminals",
    )

    def __init__(self, registry: CollectorRegistry, schema: str) -> None:
        families = _families_of(registry)
        self._events = families.events_published.labels(schema=schema, kind="event")
        self._terminals = families.events_published.labels(schema=schema, kind="terminal")
        self._duration = families.publish_duration.labels(schema=schema)
        self._failures = {
            reason: families.publish_failures.labels(schema=schema, reason=reason)
            for reason in PUBLISH_FAILURE_REASONS
        }
        self._active = families.active_subscribers.labels(schema=schema)
        self._reconnects = families.listener_reconnects.labels(schema=schema)
        self._deleted_events = families.retention_deleted_events.labels(schema=schema)
        self._deleted_runs = families.retention_deleted_runs.labels(schema=schema)
        self._dead_lettered = families.retention_dead_lettered.labels(schema=schema)

    def events_published(self, events: int, terminals: int) -> None:
        if events > terminals:
            self._events.inc(events - terminals)
        if terminals:
            self._terminals.inc(terminals)

    def publish_latency(self, seconds: float) -> None:
        self._duration.observe(seconds)

    def publish_failed(self, reason: str, events: int) -> None:
        self._failures.get(reason, self._failures["error"]).inc(events)

    def subscriber_started(self) -> None:
        self._active.inc()

    def subscriber_ended(self) -> None:
        self._active.dec()

    def listener_reconnected(self) -> None:
        self._reconnects.inc()

    def retention_deleted(self, *, events: int = 0, runs: int = 0, dead_lettered: int = 0) -> None:
        if events:
            self._deleted_events.inc(events)
        if runs:
            self._deleted_runs.inc(runs)
        if dead_lettered:
            self._dead_lettered.inc(dead_lettered)


def registry_for(option: object) -> CollectorRegistry | None:
    """The registry the ``metrics`` option names, or None when metrics are off.

    ``False``/``None``: off. ``True``: prometheus-client's default registry.
    A ``CollectorRegistry``: that one. Anything else is refused.
    """
    if option is None or option is False:
        return None
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError(
            "metrics need prometheus-client: pip install 'pgbridge[metrics]' (or leave metrics off)"
        ) from exc
    if option is True:
        return prometheus_client.REGISTRY
    if isinstance(option, prometheus_client.CollectorRegistry):
        return option
    raise ConfigurationError(
        f"metrics must be True, False or a prometheus_client.CollectorRegistry, not {option!r}"
    )


def bridge_metrics(option: object, schema: str) -> BridgeMetrics:
    """The metrics object of a bridge on *schema*, as its ``metrics`` option says."""
    registry = registry_for(option)
    return NO_METRICS if registry is None else PrometheusMetrics(registry, schema)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry's samples in Prometheus's text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
