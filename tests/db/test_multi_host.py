"""A bridge on a multi-host DSN (``host1,host2``, ``target_session_attrs=read-write``): every
connection it opens (the pool, the LISTEN connection, migrate's) tries the hosts in order and
keeps the first that fits, so a host that is down is stepped over (docs/reliability.md)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from pgbridge import PostgresStreamBridge, migrate
from tests.support.helpers import take
from tests.support.topology import free_port


def with_a_dead_host_first(dsn: str) -> str:
    """*dsn* naming first a loopback port nobody listens on, then its own host, asking for a
    writable server."""
    parts = urlsplit(dsn)
    if parts.hostname is None or "host=" in parts.query:
        pytest.skip("the test server is reached through a socket, not a host and port")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    netloc = (
        f"{userinfo}@127.0.0.1:{free_port()},{hostport}"
        if userinfo
        else f"127.0.0.1:{free_port()},{hostport}"
    )
    query = "&".join(q for q in (parts.query, "target_session_attrs=read-write") if q)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def test_a_bridge_on_a_multi_host_dsn_steps_over_a_host_that_is_down(dsn: str) -> None:
    both = with_a_dead_host_first(dsn)
    await migrate(both)  # up to date: finds the server all the same
    async with PostgresStreamBridge(both) as writer, PostgresStreamBridge(both) as reader:
        stream = reader.subscribe("run")
        first = await writer.publish("run", "token", 1)  # the pool
        assert [e.id for e in await take(stream, 1)] == [first]  # the other bridge's LISTEN connection
        assert (await reader.resolve("run", first)).status == "resumed"
