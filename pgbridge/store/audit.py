"""Reading runs' hash chains: the head of a chain, its rows, the run ids, a deletion's record.

Each function runs on a connection the caller holds inside a read-only
REPEATABLE READ transaction (pgbridge.audit.verify), so the head and the
rows are one snapshot; rows and run ids come through server-side cursors,
so a run (or a database) of any size is read in constant memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from pgbridge.audit.chain import GENESIS, ChainHead, ChainRow, RunDeletion
from pgbridge.sql.queries import Queries

#: Rows fetched from the server per round trip while reading a chain.
CURSOR_PREFETCH = 2000


@dataclass(frozen=True, slots=True)
class StoredChain:
    """A run's status and where its chain starts and ends."""

    status: str
    head: ChainHead


async def chain_head(conn: asyncpg.Connection, queries: Queries, run_id: str) -> StoredChain | None:
    """The chain of *run_id* as its row records it; None if there is no such run.

    A run retention trimmed starts from the last deleted event's hash, any
    other from :data:`~pgbridge.audit.chain.GENESIS`.
    """
    record = await conn.fetchrow(queries.chain_head, run_id)
    if record is None:
        return None
    head = ChainHead(
        first_seq=record["first_seq"],
        last_seq=record["last_seq"],
        start_hash=record["trimmed_hash"] or GENESIS,
        last_hash=record["last_hash"],
    )
    return StoredChain(record["status"], head)


async def last_deletion(conn: asyncpg.Connection, queries: Queries, run_id: str) -> RunDeletion | None:
    """The newest record of *run_id*'s deletion (``run_deletions``); None if it was never deleted."""
    record = await conn.fetchrow(queries.last_deletion, run_id)
    if record is None:
        return None
    last_hash = record["last_hash"]
    return RunDeletion(
        run_id=record["run_id"],
        deleted_at=record["deleted_at"],
        via=record["via"],
        status=record["status"],
        started_at=record["started_at"],
        last_seq=record["last_seq"],
        last_hash=None if last_hash is None else bytes(last_hash),
        events_deleted=record["events_deleted"],
    )


async def chain_rows(conn: asyncpg.Connection, queries: Queries, run_id: str) -> AsyncIterator[ChainRow]:
    """Every stored event of *run_id* with its hash, in seq order (needs a transaction)."""
    async for record in conn.cursor(queries.chain_rows, run_id, prefetch=CURSOR_PREFETCH):
        yield ChainRow(
            seq=record["seq"],
            created_ms=record["created_ms"],
            event=record["event"],
            data=record["data"],
            hash=bytes(record["hash"]),
        )


async def run_ids(conn: asyncpg.Connection, queries: Queries) -> AsyncIterator[str]:
    """Every run id, in order (needs a transaction)."""
    async for record in conn.cursor(queries.run_ids, prefetch=CURSOR_PREFETCH):
        yield record["run_id"]
