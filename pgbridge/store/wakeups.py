"""Sending wake-ups: the NOTIFYs that tell other processes a run moved.

The payload is written by the SQL alone (``notify_runs`` in
``pgbridge/sql/events.sql``); :func:`pgbridge.engine.listen.decode_wake`
reads it. Nothing here decides when to send: pgbridge.engine.notify
coalesces, and the bridge's start() probes its listener.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from pgbridge.connector import Database
from pgbridge.sql.queries import Queries


async def notify_runs(
    db: Database,
    channel: str,
    heads: Mapping[str, int | None],
    carried: Mapping[str, str] | None = None,
) -> None:
    """One NOTIFY on *channel* per run of *heads* (run id -> newest seq, None: re-read
    regardless), in one statement; each payload carries the primary's WAL position, and the
    run's events when *carried* has them (run id -> pgbridge.engine.listen.encode_carried's
    text) and they fit."""
    events = [carried.get(run_id) for run_id in heads] if carried else [None] * len(heads)
    await db.fetch(db.queries.notify_runs, channel, list(heads.values()), list(heads), events)


async def notify_runs_on(
    conn: asyncpg.Connection, queries: Queries, channel: str, heads: Mapping[str, int | None]
) -> None:
    """:func:`notify_runs` on *conn*, carrying no events: inside a caller's transaction
    (publish_in), PostgreSQL delivers the NOTIFYs when that transaction commits, and drops
    them if it rolls back. The driver's exception comes as it is (the caller's transaction
    decides what it means)."""
    await conn.fetch(queries.notify_runs, channel, list(heads.values()), list(heads), [None] * len(heads))


async def notify_listener_check(db: Database, channel: str) -> None:
    """The start check's NOTIFY on the fresh *channel*, from a pooled session."""
    await db.fetch(db.queries.notify_listener_check, channel)
