"""Verifying runs' hash chains in the database, and exporting them for auditors.

Each run is read inside one read-only REPEATABLE READ transaction, so a
publish or a retention pass running meanwhile cannot make a sound chain
look broken; rows come through a server-side cursor, so a run of millions
of events is checked in constant memory. The hashing and the verdicts are
in :mod:`pgbridge.audit.chain` (pure), the export format in
:mod:`pgbridge.audit.export`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TextIO

import asyncpg

from pgbridge.audit.chain import GENESIS, ChainChecker, ChainHead, ChainReport, ChainRow
from pgbridge.audit.export import event_line, header_line
from pgbridge.connector import Database
from pgbridge.exceptions import StreamNotFoundError

#: Rows fetched from the server per round trip while reading a chain.
CURSOR_PREFETCH = 2000

Progress = Callable[[int], None]


async def verify_run(db: Database, run_id: str, *, progress: Progress | None = None) -> ChainReport:
    """Recompute *run_id*'s chain; *progress* is told how many events were checked, now and then."""
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await _head(conn, db, run_id)
        if found is None:
            return ChainReport(run_id, False, 0, None, "unknown run", f"no run {run_id!r} in the database")
        _, head = found
        checker = ChainChecker(run_id, head)
        count = 0
        async for row in _rows(conn, db, run_id):
            failed = checker.push(row)
            if failed is not None:
                return failed
            count += 1
            if progress is not None and count % 10_000 == 0:
                progress(count)
        return checker.finish()


async def verify_all(db: Database, *, progress: Progress | None = None) -> AsyncIterator[ChainReport]:
    """Every run's verdict, in run_id order (run ids are streamed, not loaded at once)."""
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        async for record in conn.cursor(db.queries.run_ids, prefetch=CURSOR_PREFETCH):
            yield await verify_run(db, record["run_id"], progress=progress)


async def export_run(db: Database, run_id: str, out: TextIO) -> int:
    """Write *run_id*'s export (header, then one line per event) to *out*; returns the events written."""
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await _head(conn, db, run_id)
        if found is None:
            raise StreamNotFoundError(f"no run {run_id!r} in the database")
        status, head = found
        out.write(header_line(run_id, status, head))
        written = 0
        async for row in _rows(conn, db, run_id):
            out.write(event_line(row))
            written += 1
        return written


async def _head(conn: asyncpg.Connection, db: Database, run_id: str) -> tuple[str, ChainHead] | None:
    record = await conn.fetchrow(db.queries.chain_head, run_id)
    if record is None:
        return None
    head = ChainHead(
        first_seq=record["first_seq"],
        last_seq=record["last_seq"],
        start_hash=record["trimmed_hash"] or GENESIS,
        last_hash=record["last_hash"],
    )
    return record["status"], head


async def _rows(conn: asyncpg.Connection, db: Database, run_id: str) -> AsyncIterator[ChainRow]:
    async for record in conn.cursor(db.queries.chain_rows, run_id, prefetch=CURSOR_PREFETCH):
        yield ChainRow(
            seq=record["seq"],
            created_ms=record["created_ms"],
            event=record["event"],
            data=record["data"],
            hash=bytes(record["hash"]),
        )
