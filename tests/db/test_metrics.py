"""Prometheus metrics (the ``metrics`` extra), read back from a registry of each test's own.

Every test drives a real bridge on a real PostgreSQL and reads the values
with ``registry.get_sample_value``: what a scrape would see.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from pgbridge import ConfigurationError, PostgresStreamBridge, PublishOutcomeUnknownError, RetentionPolicy
from pgbridge.http.app import create_app
from pgbridge.metrics import NO_METRICS, bridge_metrics
from tests.conftest import BridgeFactory
from tests.support.helpers import collect, take, wait_until
from tests.support.http_server import ServerProcess
from tests.support.sql_helpers import backdate_run, connected, terminate_backends

DAY = 86400.0
#: Retention with every rule off; a test switches on the one it exercises.
NOTHING = RetentionPolicy(ended_run_ttl=None, tombstone_ttl=None)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value (0 when it was never recorded), for the bridge's default schema."""
    found = registry.get_sample_value(name, {"schema": "public", **labels})
    return 0.0 if found is None else found


@asynccontextmanager
async def run_row_locked(dsn: str, run_id: str) -> AsyncIterator[None]:
    """Hold *run_id*'s row lock in another transaction: its appends wait behind it."""
    async with connected(dsn) as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM run_streams WHERE run_id = $1 FOR UPDATE", run_id)
        yield


# -- publishing ---------------------------------------------------------------------------


async def test_published_events_are_counted_by_kind(make_bridge: BridgeFactory) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish("run", "token", 1)
    await bridge.publish_many("run", [("token", 2), ("token", 3)])
    await bridge.publish_end("run")
    assert value(registry, "pgbridge_events_published_total", kind="event") == 3
    assert value(registry, "pgbridge_events_published_total", kind="terminal") == 1


async def test_a_refused_publish_counts_no_event(make_bridge: BridgeFactory) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish_end("run")
    await bridge.publish_end("run")  # the first terminal won: nothing written
    assert value(registry, "pgbridge_events_published_total", kind="terminal") == 1


async def test_publish_latency_is_observed_once_per_publish_call(make_bridge: BridgeFactory) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish("run", "token", 1)
    await bridge.publish_many("run", [("token", 2), ("token", 3)])
    await bridge.publish_terminal("run", "ended")  # type: ignore[arg-type]
    assert value(registry, "pgbridge_publish_duration_seconds_count") == 3
    assert value(registry, "pgbridge_publish_duration_seconds_sum") > 0


async def test_a_publish_whose_outcome_is_unknown_is_counted_as_a_failure(
    make_bridge: BridgeFactory, dsn: str
) -> None:
    registry = CollectorRegistry()
    # publish_lock_wait=0: the batch waits behind the row lock until command_timeout.
    bridge = await make_bridge(metrics=registry, command_timeout=1.0, publish_lock_wait=0)
    await bridge.publish("run", "token", 1)
    async with run_row_locked(dsn, "run"):
        with pytest.raises(PublishOutcomeUnknownError):
            await bridge.publish("run", "token", 2)  # times out waiting for the lock
    assert value(registry, "pgbridge_publish_failures_total", reason="outcome_unknown") == 1
    assert value(registry, "pgbridge_events_published_total", kind="event") == 1


# -- subscribing --------------------------------------------------------------------------


async def test_active_subscribers_counts_open_subscriptions(make_bridge: BridgeFactory) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish("run", "token", 1)
    streams = [bridge.subscribe("run", heartbeat_interval=60) for _ in range(3)]
    for stream in streams:
        await take(stream, 1)
    assert value(registry, "pgbridge_active_subscribers") == 3


async def test_active_subscribers_falls_when_subscriptions_end(make_bridge: BridgeFactory) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish("run", "token", 1)
    left = bridge.subscribe("run", heartbeat_interval=60)
    await take(left, 1)
    ended = bridge.subscribe("run", heartbeat_interval=60)
    await take(ended, 1)
    await left.aclose()  # type: ignore[attr-defined]
    await bridge.publish_end("run")
    await collect(ended)
    assert value(registry, "pgbridge_active_subscribers") == 0


async def test_listener_reconnects_are_counted(make_bridge: BridgeFactory, dsn: str) -> None:
    registry = CollectorRegistry()
    await make_bridge(metrics=registry, listener_ping_interval=0.2)
    assert await terminate_backends(dsn) >= 1
    await wait_until(lambda: value(registry, "pgbridge_listener_reconnects_total") >= 1, timeout=30)


# -- retention ----------------------------------------------------------------------------


async def test_events_deleted_by_retention_are_counted(make_bridge: BridgeFactory) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish_many("run", [("token", i) for i in range(5)])
    await bridge.run_retention(RetentionPolicy(max_events_per_run=2, ended_run_ttl=None))
    assert value(registry, "pgbridge_retention_deleted_events_total") == 3


async def test_dead_lettered_runs_are_counted(make_bridge: BridgeFactory, dsn: str) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish("run", "token", 1)
    await backdate_run(dsn, "run", 601)
    await bridge.run_retention(NOTHING)
    assert value(registry, "pgbridge_retention_dead_lettered_runs_total") == 1


async def test_deleted_run_rows_are_counted(make_bridge: BridgeFactory, dsn: str) -> None:
    registry = CollectorRegistry()
    bridge = await make_bridge(metrics=registry)
    await bridge.publish_end("run")
    await backdate_run(dsn, "run", 40 * DAY)
    await bridge.run_retention(RetentionPolicy(ended_run_ttl=7 * DAY, tombstone_ttl=30 * DAY))
    assert value(registry, "pgbridge_retention_deleted_runs_total") == 1


# -- options and registries ---------------------------------------------------------------


async def test_bridges_sharing_a_registry_add_up(make_bridge: BridgeFactory) -> None:
    registry = CollectorRegistry()
    first = await make_bridge(metrics=registry)
    second = await make_bridge(metrics=registry)
    await first.publish("run-1", "token", 1)
    await second.publish("run-2", "token", 1)
    assert value(registry, "pgbridge_events_published_total", kind="event") == 2


async def test_metrics_true_reports_into_the_default_registry(make_bridge: BridgeFactory) -> None:
    def published() -> float:
        return value(prometheus_client.REGISTRY, "pgbridge_events_published_total", kind="event")

    before = published()
    bridge = await make_bridge(metrics=True)
    await bridge.publish("run", "token", 1)
    assert published() == before + 1


def test_metrics_are_off_by_default() -> None:
    assert PostgresStreamBridge("postgresql://localhost/x")._metrics is NO_METRICS


def test_a_bad_metrics_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="CollectorRegistry"):
        PostgresStreamBridge("postgresql://localhost/x", metrics="yes")


def test_metrics_without_prometheus_client_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if not installed
    with pytest.raises(ConfigurationError, match=r"pgbridge\[metrics\]"):
        bridge_metrics(True, "public")


def test_metrics_off_need_no_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert bridge_metrics(False, "public") is NO_METRICS


# -- HTTP -----------------------------------------------------------------------------------


async def test_serve_with_metrics_exposes_them_at_slash_metrics(dsn: str) -> None:
    server = ServerProcess(dsn, extra_args=("--metrics",))
    await server.start()
    try:
        async with server.client() as client:
            await client.get("/runs")
            response = await client.get("/metrics")
    finally:
        await server.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "pgbridge_events_published_total" in response.text


async def test_an_app_without_metrics_has_no_metrics_endpoint(dsn: str) -> None:
    app = create_app(PostgresStreamBridge(dsn), manage_bridge=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/metrics")).status_code == 404


def test_exposing_metrics_of_a_bridge_without_them_is_refused(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="metrics=True"):
        create_app(PostgresStreamBridge(dsn), expose_metrics=True)
