"""Multi-host DSNs (``host1,host2`` with ``target_session_attrs``): what pgbridge makes of them
without a server (docs/reliability.md, failover)."""

from __future__ import annotations

import asyncpg

from pgbridge.connector import is_connection_error
from pgbridge.dsn import redact_dsn


def test_no_writable_host_yet_is_a_connection_error_so_starts_and_publishes_retry() -> None:
    # What asyncpg raises while a failover is under way: the old primary is gone and the standby
    # is not promoted yet. A connection-class failure: start() and publish retry through it.
    assert is_connection_error(
        asyncpg.exceptions.TargetServerAttributeNotMatched("None of the hosts match 'read-write'")
    )


def test_a_multi_host_dsn_keeps_every_host_and_its_options_when_its_password_is_hidden() -> None:
    dsn = "postgresql://app:s3cret@10.0.0.1:5432,10.0.0.2:5433/app?target_session_attrs=read-write&password=x"
    assert redact_dsn(dsn) == (
        "postgresql://app:***@10.0.0.1:5432,10.0.0.2:5433/app?target_session_attrs=read-write&password=***"
    )
