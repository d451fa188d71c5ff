"""Facts about a server rather than its tables: replication state and identity.

What pgbridge.engine.replica needs to route reads to a hot standby safely:
whether a server is a standby, whether two servers are one cluster, and how
far a standby has replayed the primary's WAL.
"""

from __future__ import annotations

from pgbridge.connector import Database
from pgbridge.lsn import parse_lsn


async def in_recovery(db: Database) -> bool:
    """Whether *db*'s server is a standby (``pg_is_in_recovery()``)."""
    (row,) = await db.fetch(db.queries.server_in_recovery)
    return bool(row[0])


async def system_identifier(db: Database) -> str:
    """The cluster's system identifier (a primary and its standbys share it).

    Raises :class:`~pgbridge.exceptions.StreamBridgeError` where the role may
    not run ``pg_control_system()``.
    """
    (row,) = await db.fetch(db.queries.server_system_identifier)
    return str(row[0])


async def replay_position(db: Database) -> int | None:
    """How far a standby has replayed the WAL (None on a server not in recovery)."""
    (row,) = await db.fetch(db.queries.replica_replay_position)
    return None if row[0] is None else parse_lsn(row[0])
