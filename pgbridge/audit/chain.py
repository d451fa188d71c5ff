"""The per-run hash chain (docs/audit.md): how a link is hashed, and how a chain is checked.

Pure: the same bytes are hashed here and by PostgreSQL in the append
statement (:mod:`pgbridge.sql.queries`), and a test holds the two to each other.
A link covers the previous link's hash and everything that identifies the
event, each field length-prefixed so no two different events hash alike::

    hash(n) = sha256( hash(n-1)
                      || u32 len(run_id) || run_id            (UTF-8)
                      || i64 seq || i64 created_ms            (big-endian)
                      || u32 len(event) || event              (UTF-8)
                      || u32 len(data) || data )              (the exact stored JSON text, UTF-8)

The first event of a run chains from :data:`GENESIS` (32 zero bytes); after
retention deleted a run's oldest events, the run row keeps the hash of the
last deleted one, and the chain is checked from there.

:class:`ChainChecker` takes a run's rows in seq order, one at a time with one
row of lookahead (so memory stays constant), and reports the first seq where
the chain breaks and how: ``edited``, ``missing``, ``inserted``,
``reordered``, or ``broken`` when no simpler story fits.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

#: The hash a run's first event chains from.
GENESIS = bytes(32)
#: Names a chain construction, for exports and future changes.
CHAIN_VERSION = "pgbridge-chain-v1"


def link_hash(prev: bytes, run_id: str, seq: int, created_ms: int, event: str, data: str) -> bytes:
    """The hash of one event, chained to *prev*."""
    digest = hashlib.sha256(prev)
    for part in (
        _sized(run_id),
        struct.pack(">qq", seq, created_ms),
        _sized(event),
        _sized(data),
    ):
        digest.update(part)
    return digest.digest()


def _sized(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored event as the checker sees it."""

    seq: int
    created_ms: int
    event: str
    data: str
    hash: bytes

    def rehash(self, prev: bytes, run_id: str, *, seq: int | None = None) -> bytes:
        """This row's link hash after *prev*, as if it sat at *seq* (default: its own)."""
        position = self.seq if seq is None else seq
        return link_hash(prev, run_id, position, self.created_ms, self.event, self.data)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """What the run row says about the chain: where it starts and how it ends."""

    first_seq: int
    last_seq: int
    #: Hash the first retained event chains from (GENESIS, or the last deleted one's).
    start_hash: bytes
    #: Hash of the newest event.
    last_hash: bytes | None


@dataclass(frozen=True, slots=True)
class RunDeletion:
    """The record of a run's deletion (``run_deletions``, revision 0009): when, by which path,
    and its chain as it stood then."""

    run_id: str
    deleted_at: datetime
    #: ``http`` (a Durable Streams DELETE), ``api`` (``bridge.streams.delete``), ``retention``
    #: (a tombstone), ``expiry`` (an expired stream), ``sql`` (a DELETE outside pgbridge).
    via: str
    #: The run's status, and its start (its ``created_at``), when it was deleted.
    status: str
    started_at: datetime
    #: Seqs 1..last_seq had been published; the chain's head hash (None: no event).
    last_seq: int
    last_hash: bytes | None
    #: The events still stored that went with the run (retention had deleted the others).
    events_deleted: int

    def describe(self) -> str:
        """One line for people: ``deleted at ... by http: last seq 12, head <hex>, ...``."""
        head = self.last_hash.hex() if self.last_hash is not None else "none (no event)"
        return (
            f"deleted at {self.deleted_at.isoformat(timespec='seconds')} by {self.via}: "
            f"last seq {self.last_seq}, head hash {head}, "
            f"{self.events_deleted} stored event(s) deleted with it"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "deleted_at": self.deleted_at.isoformat(),
            "via": self.via,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "last_seq": self.last_seq,
            "last_hash": self.last_hash.hex() if self.last_hash is not None else None,
            "events_deleted": self.events_deleted,
        }


#: What :attr:`ChainReport.verdict` says.
Verdict = Literal["ok", "broken", "deleted", "no such run"]
#: The :attr:`ChainReport.problem` of a run that has no row, deleted or never there.
DELETED: Verdict = "deleted"
NO_SUCH_RUN: Verdict = "no such run"


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The verdict on one run.

    ``ok`` is True only for a chain that was checked and holds. A run that is
    gone is not ``ok`` either, but not broken: ``problem`` is ``"deleted"``
    (with :attr:`deletion`, the record its deletion left) or ``"no such run"``
    (no row and no record: the id never existed here). :attr:`verdict` names
    the four cases.
    """

    run_id: str
    ok: bool
    events_checked: int
    #: First seq where the chain breaks, and how; None when ok.
    broken_at: int | None = None
    problem: str | None = None
    detail: str | None = None
    #: The record of the run's deletion, when the run was deleted.
    deletion: RunDeletion | None = None

    @classmethod
    def deleted(cls, deletion: RunDeletion) -> ChainReport:
        return cls(deletion.run_id, False, 0, None, DELETED, deletion.describe(), deletion)

    @classmethod
    def no_such_run(cls, run_id: str) -> ChainReport:
        detail = f"no run {run_id!r} in the database, and no record of its deletion"
        return cls(run_id, False, 0, None, NO_SUCH_RUN, detail)

    @property
    def verdict(self) -> Verdict:
        if self.ok:
            return "ok"
        if self.problem == DELETED:
            return DELETED
        if self.problem == NO_SUCH_RUN:
            return NO_SUCH_RUN
        return "broken"

    @property
    def broken(self) -> bool:
        """Whether the chain was checked and found broken (not a deleted or unknown run)."""
        return self.verdict == "broken"

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "verdict": self.verdict,
            "events_checked": self.events_checked,
            "broken_at": self.broken_at,
            "problem": self.problem,
            "detail": self.detail,
            "deletion": None if self.deletion is None else self.deletion.to_json(),
        }


class ChainChecker:
    """Checks one run's chain from its rows, pushed in seq order; constant memory.

    Each row is judged when the next one arrives (one row of lookahead tells
    an edit from an insertion or a swap). :meth:`push` returns the failed
    report as soon as the chain breaks; :meth:`finish` returns the verdict.
    """

    def __init__(self, run_id: str, head: ChainHead) -> None:
        self.run_id = run_id
        self.head = head
        self._prev_hash = head.start_hash
        self._expected_seq = head.first_seq
        self._checked = 0
        self._pending: ChainRow | None = None
        self._failed: ChainReport | None = None

    def check(self, rows: Iterable[ChainRow]) -> ChainReport:
        """The verdict on *rows* (a run's rows in seq order)."""
        for row in rows:
            failed = self.push(row)
            if failed is not None:
                return failed
        return self.finish()

    def push(self, row: ChainRow) -> ChainReport | None:
        if self._failed is not None:
            return self._failed
        pending, self._pending = self._pending, row
        return None if pending is None else self._judge(pending, row)

    def finish(self) -> ChainReport:
        if self._failed is None and self._pending is not None:
            self._judge(self._pending, None)
        if self._failed is not None:
            return self._failed
        if self._expected_seq <= self.head.last_seq:
            return self._fail(
                self._expected_seq,
                "missing",
                f"events {self._expected_seq}..{self.head.last_seq} are gone but the run says it holds them",
            )
        if self._checked and self.head.last_hash is not None and self._prev_hash != self.head.last_hash:
            return self._fail(
                self.head.last_seq, "broken", "the newest event's hash is not the one the run row recorded"
            )
        return ChainReport(self.run_id, True, self._checked)

    def _judge(self, row: ChainRow, following: ChainRow | None) -> ChainReport | None:
        problem = self._problem(row, following)
        if problem is not None:
            return self._fail(*problem)
        self._prev_hash, self._expected_seq = row.hash, row.seq + 1
        self._checked += 1
        return None

    def _fail(self, seq: int, kind: str, detail: str) -> ChainReport:
        self._failed = ChainReport(self.run_id, False, self._checked, seq, kind, detail)
        return self._failed

    def _problem(self, row: ChainRow, following: ChainRow | None) -> tuple[int, str, str] | None:
        run_id, prev_hash, expected = self.run_id, self._prev_hash, self._expected_seq
        if row.seq > self.head.last_seq or row.seq < expected:
            span = f"{expected}..{self.head.last_seq}"
            return row.seq, "inserted", f"seq {row.seq} is outside the run's retained range {span}"
        if row.seq != expected:
            return expected, "missing", f"seq {expected}..{row.seq - 1} absent"
        if row.rehash(prev_hash, run_id) == row.hash:
            return None
        if following is not None and following.seq == row.seq + 1:
            follows_here = following.hash == following.rehash(prev_hash, run_id, seq=row.seq)
            if follows_here and row.rehash(following.hash, run_id, seq=following.seq) == row.hash:
                return row.seq, "reordered", f"events {row.seq} and {following.seq} changed places"
            if follows_here:
                return row.seq, "inserted", f"an event was inserted at {row.seq}; later ones moved up"
            if following.hash == following.rehash(row.hash, run_id):
                return row.seq, "edited", f"event {row.seq} no longer matches its hash"
        elif following is None and row.hash == self.head.last_hash:
            return row.seq, "edited", f"event {row.seq} no longer matches its hash"
        return row.seq, "broken", f"event {row.seq} does not chain from the event before it"
