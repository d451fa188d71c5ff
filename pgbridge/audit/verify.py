"""Verifying runs' hash chains in the database, and exporting them for auditors.

Each run is read inside one read-only REPEATABLE READ transaction, so a
publish or a retention pass running meanwhile cannot make a sound chain
look broken; rows come through a server-side cursor
(:mod:`pgbridge.store.audit`), so a run of millions of events is checked in
constant memory. The hashing and the verdicts are in
:mod:`pgbridge.audit.chain` (pure), the export format in
:mod:`pgbridge.audit.export`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TextIO

from pgbridge.audit.chain import ChainChecker, ChainReport
from pgbridge.audit.export import event_line, header_line
from pgbridge.connector import Database
from pgbridge.exceptions import StreamNotFoundError
from pgbridge.store import audit as chains

Progress = Callable[[int], None]


async def verify_run(db: Database, run_id: str, *, progress: Progress | None = None) -> ChainReport:
    """Recompute *run_id*'s chain; *progress* is told how many events were checked, now and then.

    A run with no row is reported from the record of its deletion (``problem == "deleted"``,
    :attr:`ChainReport.deletion`), or as ``"no such run"`` when none was ever recorded.
    """
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await chains.chain_head(conn, db.queries, run_id)
        if found is None:
            deletion = await chains.last_deletion(conn, db.queries, run_id)
            if deletion is not None:
                return ChainReport.deleted(deletion)
            return ChainReport.no_such_run(run_id)
        checker = ChainChecker(run_id, found.head)
        count = 0
        async for row in chains.chain_rows(conn, db.queries, run_id):
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
        async for run_id in chains.run_ids(conn, db.queries):
            yield await verify_run(db, run_id, progress=progress)


async def export_run(db: Database, run_id: str, out: TextIO) -> int:
    """Write *run_id*'s export (header, then one line per event) to *out*; returns the events written."""
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await chains.chain_head(conn, db.queries, run_id)
        if found is None:
            deletion = await chains.last_deletion(conn, db.queries, run_id)
            if deletion is not None:
                raise StreamNotFoundError(f"run {run_id!r} was {deletion.describe()}")
            raise StreamNotFoundError(f"no run {run_id!r} in the database")
        out.write(header_line(run_id, found.status, found.head))
        written = 0
        async for row in chains.chain_rows(conn, db.queries, run_id):
            out.write(event_line(row))
            written += 1
        return written
